#!/usr/bin/env bash
# One-row write latency from Python (litebroker's factory.execute) against the
# Rust Db handle (Db::execute, client/examples/write_p50.rs), in the same run, on
# one release broker (synchronous=NORMAL) and a fresh database. The two sides take
# turns (Rust, Python, Rust, Python…) so a disturbance hits both; the report gives
# each round's p50 and the ratio of the medians. Goal: Python p50 <= 1.3 x Rust.
#
#   scripts/bench-python.sh [writes per round, default 2000] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
rounds=${2:-3}
cargo build --quiet --release -p litebroker-server --bin litebrokerd
cargo build --quiet --release -p litebroker-client --example write_p50
venv=$(scripts/python-venv.sh --release)
py="$PWD/$venv/bin/python"
work=$(mktemp -d)
trap 'kill "$broker" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
db="$work/app.db"
target/release/litebrokerd --db "$db" --log-level warn >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
  "$py" -c "import litebroker,sys; litebroker.ConnectionFactory(sys.argv[1], timeout=1).status()" "$db" 2>/dev/null && break
  sleep 0.1
done
"$py" -c "import litebroker,sys; litebroker.ConnectionFactory(sys.argv[1]).execute('CREATE TABLE bench (id INTEGER PRIMARY KEY, v INTEGER)')" "$db"

python_side='
import json, sys, time, litebroker
f = litebroker.ConnectionFactory(sys.argv[1], client_name="bench-python")
n = int(sys.argv[2])
for i in range(100):
    f.execute("INSERT INTO bench (v) VALUES (?)", (i,))
us = []
for i in range(n):
    t = time.perf_counter()
    f.execute("INSERT INTO bench (v) VALUES (?)", (i,))
    us.append((time.perf_counter() - t) * 1e6)
us.sort()
print(json.dumps({"p50_us": round(us[n // 2], 1), "p90_us": round(us[n * 9 // 10], 1), "n": n}))
'
rust=()
python=()
echo "one-row write, $n per round, $rounds rounds ($(nproc) cores, $(uname -sr))"
for r in $(seq "$rounds"); do
  a=$(target/release/examples/write_p50 "$db" "$n")
  b=$("$py" -c "$python_side" "$db" "$n")
  echo "round $r: rust $a  python $b"
  rust+=("$(echo "$a" | sed 's/.*"p50_us":\([0-9.]*\).*/\1/')")
  python+=("$(echo "$b" | sed 's/.*"p50_us": *\([0-9.]*\).*/\1/')")
done
"$py" - "${rust[*]}" "${python[*]}" <<'PY'
import statistics, sys
r = [float(x) for x in sys.argv[1].split()]
p = [float(x) for x in sys.argv[2].split()]
mr, mp = statistics.median(r), statistics.median(p)
ratio = mp / mr
print(f"median p50: rust Db {mr:.1f} us, python {mp:.1f} us, ratio {ratio:.2f} (goal <= 1.30): {'OK' if ratio <= 1.3 else 'ABOVE GOAL'}")
PY
