#!/usr/bin/env python3
"""Generates ``python/tidelog/protocol/_messages.py`` from Kafka's message schemas.

    python tools/gen_protocol.py            # (re)write the module
    python tools/gen_protocol.py --check    # exit 1 if the committed module is not current

The schemas are read from ``../shared/kafka-protocol/message`` (override with --schemas),
with the ``__consumer_offsets`` record schemas from ``group-coordinator/`` beside it;
they are never copied into this repository. The output is one class per message and per
nested struct, each with a ``FIELDS`` table that ``tidelog.protocol.codec`` interprets for
every version (flexible versions, tagged fields, nullable fields, field-level flexibility).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCHEMAS = ROOT.parent / "shared" / "kafka-protocol" / "message"
OUTPUT = ROOT / "python" / "tidelog" / "protocol" / "_messages.py"
MAX_VERSION = 32767
PRIMITIVES = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint16": "int",
    "uint32": "int",
    "float64": "float",
    "bool": "bool",
    "string": "str",
    "bytes": "bytes",
    "uuid": "uuid.UUID",
    "records": "Any",
}


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def versions(spec: str | None) -> tuple[int, int] | None:
    if spec is None or spec == "none":
        return None
    if spec.endswith("+"):
        return int(spec[:-1]), MAX_VERSION
    if "-" in spec:
        lo, hi = spec.split("-")
        return int(lo), int(hi)
    return int(spec), int(spec)


def load(path: Path) -> dict:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.strip().startswith("//"))
    return json.loads(text)


class Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.tables: list[str] = []

    def default_literal(self, f: dict, ftype: str, nullable: tuple[int, int] | None) -> str:
        d = f.get("default")
        if isinstance(d, bool):
            d = "true" if d else "false"
        elif isinstance(d, int):
            d = str(d)
        if ftype.startswith("[]"):
            return "None" if d == "null" else "LIST"
        if ftype not in PRIMITIVES:
            return "None" if d == "null" else "STRUCT"
        if d == "null":
            return "None"
        if ftype in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
            return str(int(d, 0)) if d not in (None, "") else "0"
        if ftype == "float64":
            return repr(float(d)) if d else "0.0"
        if ftype == "bool":
            return "True" if d == "true" else "False"
        if ftype == "string":
            return repr(d or "")
        if ftype == "uuid":
            return "ZERO_UUID"
        return "None" if nullable else 'b""'

    def struct(
        self,
        qual: str,
        name: str,
        fields: list[dict],
        common: dict[str, dict],
        indent: str,
        base: str,
        extra: list[str],
    ) -> None:
        self.lines.append(f"{indent}class {name}({base}):")
        inner = indent + "    "
        for e in extra:
            self.lines.append(inner + e)
        slots = [snake(f["name"]) for f in fields]
        self.lines.append(f"{inner}__slots__ = {tuple(slots)!r}")
        table = []
        nested_done = set()
        for f in fields:
            ftype = f["type"]
            elem = ftype[2:] if ftype.startswith("[]") else ftype
            nullable = versions(f.get("nullableVersions"))
            if elem not in PRIMITIVES:
                sub = f.get("fields") or common.get(elem, {}).get("fields")
                if sub is None:
                    raise SystemExit(f"{qual}: unknown struct type {elem}")
                if elem not in nested_done:
                    self.struct(f"{qual}.{elem}", elem, sub, common, inner, "Struct", [])
                    nested_done.add(elem)
                py = f"{qual}.{elem}"
                ann = f"list[{py}]" if ftype.startswith("[]") else py
                kind, arg = ("array", py) if ftype.startswith("[]") else ("struct", py)
            else:
                ann = f"list[{PRIMITIVES[elem]}]" if ftype.startswith("[]") else PRIMITIVES[elem]
                kind, arg = ("array", repr(elem)) if ftype.startswith("[]") else (elem, "None")
            if nullable and ann != "Any":
                ann += " | None"
            self.lines.append(f"{inner}{snake(f['name'])}: {ann}")
            v = versions(f["versions"]) or (MAX_VERSION, -1)
            tagged = versions(f.get("taggedVersions"))
            tag = None if f.get("tag") is None else int(f["tag"])
            flex = f.get("flexibleVersions")
            flex_override = "None" if flex is None else repr(versions(flex) or (MAX_VERSION, -1))
            table.append(
                f"    Field({snake(f['name'])!r}, {kind!r}, {arg}, {v!r}, {nullable!r}, {tag!r}, "
                f"{tagged!r}, {self.default_literal(f, ftype, nullable)}, {flex_override}),"
            )
        self.tables.append(f"{qual}.FIELDS = (\n" + "\n".join(table) + "\n)")
        self.lines.append("")


#: Records of ``__consumer_offsets`` (from ``group-coordinator/``) that the broker writes.
GROUP_RECORDS = ("OffsetCommitKey", "OffsetCommitValue", "GroupMetadataKey", "GroupMetadataValue")


def generate(schemas: Path) -> str:
    readme = (schemas.parent / "README.md").read_text()
    commit = re.search(r"commit ([0-9a-f]{40})", readme)
    files = sorted(schemas.glob("*.json"))
    files += [schemas.parent / "group-coordinator" / f"{name}.json" for name in GROUP_RECORDS]
    g = Gen()
    registry: list[tuple[int, str, str]] = []
    for path in files:
        d = load(path)
        kind = d["type"]
        if kind not in ("request", "response", "header", "data"):
            continue
        name = d["name"]
        valid = versions(d["validVersions"])
        flexible = versions(d["flexibleVersions"])
        common = {c["name"]: c for c in d.get("commonStructs", [])}
        extra = [
            f"API_KEY = {d.get('apiKey', -1)}",
            f"KIND = {kind!r}",
            f"VALID_VERSIONS = {valid!r}",
            f"FLEXIBLE_FROM = {flexible[0] if flexible else None!r}",
        ]
        g.struct(name, name, d["fields"], common, "", "Message", extra)
        g.lines.append("")
        if "apiKey" in d:
            registry.append((d["apiKey"], kind, name))
    out = [
        "# Generated by tools/gen_protocol.py from Kafka's message schemas",
        f"# (apache/kafka commit {commit.group(1) if commit else 'unknown'}). Do not edit.",
        "# ruff: noqa",
        "from __future__ import annotations",
        "",
        "import uuid",
        "from typing import Any",
        "",
        "from tidelog.protocol.codec import LIST, STRUCT, ZERO_UUID, Field, Message, Struct",
        "",
        "",
        *g.lines,
        "",
        *g.tables,
        "",
        "REQUESTS: dict[int, type[Message]] = {",
        *[f"    {k}: {n}," for k, kind, n in sorted(registry) if kind == "request"],
        "}",
        "RESPONSES: dict[int, type[Message]] = {",
        *[f"    {k}: {n}," for k, kind, n in sorted(registry) if kind == "response"],
        "}",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS)
    ap.add_argument("--check", action="store_true", help="fail if the committed output is stale")
    args = ap.parse_args()
    text = generate(args.schemas)
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is not current: run tools/gen_protocol.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is current")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
