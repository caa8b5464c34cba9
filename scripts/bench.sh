#!/usr/bin/env bash
# Builds litebroker in release mode and runs the benchmark: every scenario back to
# back, a table and one JSON line on stdout, both saved under target/bench/.
#   scripts/bench.sh            full run (about 6 minutes once built)
#   scripts/bench.sh --quick    shorter run, same scenarios and output shape (under 3 minutes once built)
# Extra arguments go to `lbbench run` (see `target/release/lbbench run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p litebroker-server --bin litebrokerd -p litebroker-cli --bin litebroker -p litebroker-tests --bin lbbench
exec target/release/lbbench run "$@"
