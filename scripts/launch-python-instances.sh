#!/usr/bin/env bash
# Launches N instances of the Python inventory demo (client/python/examples/
# inventory_demo.py) at once against one fresh database and one broker, then
# checks: every instance exited 0 with zero errors; units sold, stock moved and
# movement rows add up to what the database holds; integrity_check is ok.
# Exit 0 when all holds, 1 otherwise.
#
#   scripts/launch-python-instances.sh [N] [--ops M]     (defaults: 8 instances, 40 ops)
#
# Builds litebrokerd (debug) and the package into target/py-venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
n=8
ops=40
while [[ $# -gt 0 ]]; do
  case $1 in
    --ops) ops=$2; shift 2 ;;
    *) n=$1; shift ;;
  esac
done
cargo build --quiet -p litebroker-server --bin litebrokerd
venv=$(scripts/python-venv.sh)
py="$PWD/$venv/bin/python"
work=$(mktemp -d)
trap 'kill "$broker" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
db="$work/data/app.db"
mkdir -p "$work/data"
target/debug/litebrokerd --db "$db" --log-level warn >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
  "$py" -c "import litebroker,sys; litebroker.ConnectionFactory(sys.argv[1], timeout=1).status()" "$db" 2>/dev/null && break
  sleep 0.1
done

pids=()
for i in $(seq 1 "$n"); do
  "$py" client/python/examples/inventory_demo.py --db "$db" --instance "$i" --ops "$ops" >"$work/out.$i" 2>"$work/err.$i" &
  pids+=($!)
done
fail=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "instance $((i + 1)) failed:"; cat "$work/err.$((i + 1))"; fail=1
  fi
done

"$py" - "$db" "$work" "$n" <<'PY' || fail=1
import json, sqlite3, sys
db, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reports = [json.loads(open(f"{work}/out.{i}").read()) for i in range(1, n + 1)]
c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
want = {k: sum(r[k] for r in reports) for k in ("sold", "moved", "moves", "errors")}
got = {
    "sold": c.execute("SELECT coalesce(sum(qty), 0) FROM sales").fetchone()[0],
    "moved": c.execute("SELECT coalesce(sum(qty), 0) FROM skus").fetchone()[0],
    "moves": c.execute("SELECT count(*) FROM moves").fetchone()[0],
    "errors": 0,
}
ok = c.execute("PRAGMA integrity_check").fetchone()[0]
print(f"{n} instances: reported {want}, database holds {got}, integrity {ok}")
sys.exit(0 if want == got and ok == "ok" else 1)
PY
[[ $fail == 0 ]] && echo "launch-python-instances: OK" || echo "launch-python-instances: FAILED"
exit $fail
