#!/usr/bin/env bash
# Prints the path of the venv the Python package is built and tested in
# (target/py-venv), creating it with maturin and pytest from PyPI when missing,
# then builds the package into it (maturin develop; pass --release for an
# optimised build, as the benchmark does).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-venv
if ! { [ -x "$venv/bin/maturin" ] && "$venv/bin/python" -c 'import pytest' 2>/dev/null; }; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "pytest>=7" >&2
fi
(cd client/python && VIRTUAL_ENV="$PWD/../../$venv" PATH="$PWD/../../$venv/bin:$PATH" \
  "../../$venv/bin/maturin" develop --quiet "$@" >&2)
echo "$venv"
