"""Storage engine selection: ``"rust"`` (the compiled ``tidelog._core``), ``"python"`` (the
pure-Python twin in ``tidelog.storage``) or ``"auto"`` (Rust when it imports).

The ``TIDELOG_ENGINE`` environment variable sets the default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidelog._core import Log as _RustLog
    from tidelog.storage.core import CoreLog

ENGINES = ("rust", "python")

_rust_core: ModuleType | None
try:
    from tidelog import _core as _rust_core
except ImportError as _e:  # the package runs without the compiled core
    _rust_core = None
    _import_error: ImportError | None = _e
else:
    _import_error = None


def rust_available() -> bool:
    """True when the compiled core imports."""
    return _rust_core is not None


def resolve(engine: str | None = None) -> str:
    """The concrete engine for ``engine`` (None: ``TIDELOG_ENGINE``, else ``"auto"``)."""
    choice = (engine or os.environ.get("TIDELOG_ENGINE") or "auto").lower()
    if choice == "auto":
        return "rust" if _rust_core is not None else "python"
    if choice not in ENGINES:
        raise ValueError(f"engine must be 'auto', 'rust' or 'python', not {choice!r}")
    if choice == "rust" and _rust_core is None:
        raise ImportError(f"the Rust engine is not available: {_import_error}")
    return choice


def engine() -> str:
    """The engine a log opened now without an explicit ``engine=`` would use."""
    return resolve(None)


def core_log_class(name: str) -> Callable[[str, dict[str, Any], int], CoreLog]:
    """The partition-log class of a resolved engine (mypy checks that both engines'
    classes implement ``CoreLog``)."""
    if name == "rust":
        assert _rust_core is not None
        rust: type[_RustLog] = _rust_core.Log
        return rust
    from tidelog.storage.log import Log

    return Log
