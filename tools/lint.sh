#!/usr/bin/env bash
# Every static check: Rust format and lints, Python lint, format, types, stub honesty, and the
# generated protocol and error-code modules. Run before committing; .ci/run runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --quiet --all-targets --features python -- -D warnings
ruff check python tests benches tools
ruff format --check python tests benches tools
mypy
python -m mypy.stubtest tidelog._core
if [ -d ../shared/kafka-protocol/message ]; then
  python tools/gen_protocol.py --check
fi
if [ -d tools/kafka-jars/target/dependency ] && command -v java >/dev/null; then
  python tools/gen_error_codes.py --check
fi
