#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and the multi-process integration
# tests in tests/ that spawn the real litebrokerd and litebroker binaries (built
# first, so the tests find them next to themselves in target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo test --workspace "$@"
