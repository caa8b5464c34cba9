#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and the multi-process integration
# tests in tests/ that spawn the real litebrokerd and litebroker binaries (built
# first, so the tests find them next to themselves in target/debug); then the
# Python package's pytest suite (client/python/tests) against that litebrokerd,
# with the package built into a venv under target/ (scripts/python-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace "$@"
venv=$(scripts/python-venv.sh)
LITEBROKERD="$PWD/target/debug/litebrokerd" "$venv/bin/python" -m pytest client/python/tests -q
