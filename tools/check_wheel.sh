#!/usr/bin/env bash
# Builds a manylinux release wheel (maturin + zig), checks it with auditwheel, installs it
# into a fresh virtual environment with no Rust toolchain on PATH, and runs the test suite
# against it. CI runs this; it needs python3 and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/build"
"$work/build/bin/python" -m pip install -q 'maturin>=1.7,<2' ziglang auditwheel
# maturin runs zig as `python3 -m ziglang`: the build venv must come first on PATH.
PATH="$work/build/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 --out "$work/dist" \
  --interpreter "$work/build/bin/python"
wheel=$(ls "$work"/dist/tidelog-*.whl)
echo "built $wheel"
"$work/build/bin/auditwheel" show "$wheel"

python3 -m venv "$work/test"
"$work/test/bin/python" -m pip install -q "${wheel}[test]"
# Without cargo/rustc on PATH, and from outside the source tree's python/ directory.
clean_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -e '\.cargo' -e rustup | paste -sd: -)
if PATH="$clean_path" command -v cargo >/dev/null; then
  echo "cargo is still on PATH" >&2
  exit 1
fi
PATH="$clean_path" "$work/test/bin/python" - <<'PY'
import tidelog, tidelog._core
assert tidelog.engine() == "rust", tidelog.engine()
assert "site-packages" in tidelog.__file__, tidelog.__file__
print("installed wheel:", tidelog.__file__)
PY
# The fault campaigns and the cluster tests (etcd, replication) test the broker, not the
# packaging: the README's test command runs them.
PATH="$clean_path" "$work/test/bin/python" -m pytest -o addopts="" -q -p no:cacheprovider -m "not campaign and not cluster" tests
