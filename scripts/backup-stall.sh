#!/usr/bin/env bash
# Measures how long the writer is stalled while `litebroker backup` copies a large
# database: one client writes single rows in a closed loop and records each write's
# latency, first without a backup (baseline), then while a backup runs.
#
#   scripts/backup-stall.sh [SIZE_MB]      (default 220)
#
# Prints a small table and one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-220}
cargo build --release --workspace --bins -q
bin=target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/lb-stall.XXXXXX")
trap 'kill $broker 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
db="$work/data/app.db"

"$bin/litebrokerd" --db "$db" 2>"$work/broker.log" &
broker=$!
for _ in $(seq 200); do grep -q "listening on" "$work/broker.log" 2>/dev/null && break; sleep 0.05; done
grep -q "listening on" "$work/broker.log" || { cat "$work/broker.log"; exit 1; }

lb() { "$bin/litebroker" --db "$db" --timeout 600 "$@"; }
lb exec "CREATE TABLE filler (id INTEGER PRIMARY KEY, blob BLOB)" >/dev/null
chunks=$(( (size_mb + 39) / 40 ))
for _ in $(seq "$chunks"); do
  lb exec "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) INSERT INTO filler (blob) SELECT randomblob(4000) FROM n" >/dev/null
done
lb checkpoint truncate >/dev/null
db_mb=$(( $(stat -c %s "$db") / 1000000 ))

probe() { # $1 = seconds of load, $2 = "backup" to run a backup meanwhile
  rm -f "$work/stop"
  "$bin/lbtool" --db "$db" latency --until "$work/stop" >"$work/probe.json" &
  local p=$!
  sleep 1
  local backup_ms=0
  if [ "$2" = backup ]; then
    local t0; t0=$(date +%s%N)
    lb --json backup stall-test >"$work/backup.json"
    backup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  else
    sleep "$1"
  fi
  sleep 1
  touch "$work/stop"
  wait "$p"
  python3 - "$work/probe.json" "$backup_ms" <<'PY'
import json, sys
p = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(json.dumps({"writes": p["writes"], "errors": p["errors"], "p50_us": p["p50_us"], "p99_us": p["p99_us"], "max_us": p["max_us"], "backup_ms": int(sys.argv[2])}))
PY
}

base=$(probe 3 none)
during=$(probe 0 backup)
python3 - "$db_mb" "$base" "$during" <<'PY'
import json, sys
db_mb, base, during = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"database: {db_mb} MB; backup took {during['backup_ms']} ms")
print(f"{'':18}{'writes':>8}{'errors':>8}{'p50 us':>9}{'p99 us':>9}{'max us':>10}")
for name, r in (("no backup", base), ("during backup", during)):
    print(f"{name:18}{r['writes']:>8}{r['errors']:>8}{r['p50_us']:>9}{r['p99_us']:>9}{r['max_us']:>10}")
print(json.dumps({"db_mb": db_mb, "baseline": base, "during_backup": during, "longest_write_stall_us": during["max_us"]}))
PY
