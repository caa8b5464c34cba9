#!/usr/bin/env bash
# Runs each libFuzzer target of server/fuzz/ (frame and payload decoding on both
# sides, and the writer's handling of requests: statement splitting, transaction
# control, the SQL authorizer) for SECONDS each (default 60).
#
#   scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz from crates.io when missing. cargo fuzz needs nightly-only
# compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. No
# sanitizer: the code under test has no unsafe of its own, and what is hunted
# here is panics, hangs and runaway memory, which libFuzzer reports by itself.
# A crash stops the script with a non-zero exit; the input is written to
# server/fuzz/artifacts/<target>/. After fixing one, keep it as a test: a
# decoder's crasher, small, in protocol/tests/fuzz-regressions/ (replayed by
# protocol/tests/props.rs, and given to every target here as a seed), a writer's
# as a case in the server's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
regressions=$PWD/protocol/tests/fuzz-regressions

if ! command -v cargo-fuzz >/dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd server/fuzz
for target in $(cargo fuzz list); do
  echo "== fuzzing $target for $secs s"
  mkdir -p "corpus/$target"
  # The corpus folder keeps what was learnt between local runs (not committed);
  # the regression inputs are replayed first.
  cargo fuzz run -O --debug-assertions --sanitizer none "$target" "corpus/$target" "$regressions" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$target.log" 2>&1 || { tail -60 "$target.log"; echo "fuzz target $target failed: see server/fuzz/artifacts/$target/"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$target.log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$target.log" | tail -1 || true)
  echo "   $target: $runs executions in $secs s, $cov, no crash"
done
