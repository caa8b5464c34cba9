#!/usr/bin/env bash
# Launches N instances of the inventory demo app at the same instant against one
# database, waits for them, then checks the outcome:
#   - every instance exited 0 and reported zero errors, all through one broker;
#   - what the instances report adds up to what the database holds (units sold per
#     (date, sku), stock movements, stock, SKUs), counted from before the run;
#   - `litebroker verify` (integrity_check and foreign_key_check) is OK.
# Exit 0 when all holds, 1 on any mismatch or failure, 2 on usage errors.
#
#   scripts/launch-instances.sh [N] [--db PATH] [--ops M] [--autostart] [--keep-broker] [--release]
#
#   N               instances (default 8)
#   --db PATH       database (default data/app.db, env LITEBROKER_DB)
#   --ops M         operations per instance (default 40)
#   --autostart     start no broker here: the instances start one on demand
#                   (all of them try; exactly one survives)
#   --keep-broker   leave a broker this script (or --autostart) started running
#   --release       build and use release binaries
#
# Binaries come from target/debug (or target/release), built first with cargo;
# set LITEBROKER_BIN_DIR to use binaries from another folder without building.
# Extra demo flags for every instance can be given in LAUNCH_DEMO_ARGS.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "launch-instances: $*" >&2; exit 2; }

n=8
db=${LITEBROKER_DB:-data/app.db}
ops=40
autostart=0
keep=0
profile=debug
while [[ $# -gt 0 ]]; do
  case $1 in
    --db) [[ $# -ge 2 ]] || die "--db needs a path"; db=$2; shift 2 ;;
    --ops) [[ $# -ge 2 ]] || die "--ops needs a number"; ops=$2; shift 2 ;;
    --autostart) autostart=1; shift ;;
    --keep-broker) keep=1; shift ;;
    --release) profile=release; shift ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) n=$1; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, got $n"
[[ $ops =~ ^[0-9]+$ ]] || die "--ops must be a number, got $ops"
command -v python3 >/dev/null || die "python3 is needed to add up the instances' reports"

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${LITEBROKER_BIN_DIR:-} ]]; then
  bindir=$LITEBROKER_BIN_DIR
else
  flags=()
  [[ $profile == release ]] && flags+=(--release)
  echo "building (cargo build --workspace ${flags[*]-})…"
  (cd "$root" && cargo build --quiet --workspace "${flags[@]+"${flags[@]}"}")
  bindir=$root/target/$profile
fi
demo=$bindir/inventory-demo
cli=$bindir/litebroker
brokerd=$bindir/litebrokerd
for b in "$demo" "$cli" "$brokerd"; do
  [[ -x $b ]] || die "$b is missing: build the workspace (cargo build --workspace)"
done

mkdir -p "$(dirname "$db")"
db="$(cd "$(dirname "$db")" && pwd -P)/$(basename "$db")"
work=$(mktemp -d "${TMPDIR:-/tmp}/launch-instances.XXXXXX")
pids=()
started_pid=""

# Broker pid from `litebroker --json status`, or nothing when none answers.
broker_pid() {
  "$cli" --db "$db" --json --timeout 5 status 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null || true
}

cleanup() {
  local rc=$?
  for p in "${pids[@]+"${pids[@]}"}"; do
    kill "$p" 2>/dev/null || true
  done
  if [[ -n $started_pid && $keep -eq 0 ]]; then
    "$cli" --db "$db" --timeout 10 shutdown >/dev/null 2>&1 || true
    # Poll (with a deadline) until the broker has gone, so no stray process remains.
    for _ in $(seq 1 200); do
      kill -0 "$started_pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$started_pid" 2>/dev/null; then
      echo "launch-instances: broker $started_pid did not stop; its log: $db-broker.log" >&2
      rc=1
    else
      echo "broker $started_pid stopped"
    fi
  fi
  if [[ $rc -eq 0 ]]; then
    rm -rf "$work"
  else
    echo "launch-instances: instance outputs kept in $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Figures of the database before the run, so a database that already holds data
# (a second run on data/app.db) is compared by difference.
python3 - "$cli" "$db" "$work/before.json" <<'PY'
import json, subprocess, sys
cli, db, out = sys.argv[1:]
def q(sql):
    r = subprocess.run([cli, "--db", db, "--json", "query", sql], capture_output=True, text=True)
    return json.loads(r.stdout)["rows"] if r.returncode == 0 else None
sold = q("SELECT date || '|' || sku, qty FROM sales") or []
fig = {
    "sold": {k: v for k, v in sold},
    "movements": (q("SELECT count(*) FROM transactions") or [[0]])[0][0],
    "stock": (q("SELECT coalesce(sum(qty), 0) FROM skus") or [[0]])[0][0],
    "skus": (q("SELECT count(*) FROM skus") or [[0]])[0][0],
}
json.dump(fig, open(out, "w"))
PY

running=$(broker_pid)
if [[ -n $running ]]; then
  echo "a broker (pid $running) already serves $db"
  before_broker=$running
elif [[ $autostart -eq 1 ]]; then
  echo "no broker serves $db: the instances start one on demand (--autostart)"
  before_broker=""
else
  echo "no broker serves $db: starting litebrokerd"
  # Its own session (where setsid exists): a Ctrl-C meant for this script does not
  # reach it; the script stops it itself at the end.
  launcher=()
  command -v setsid >/dev/null && launcher=(setsid)
  "${launcher[@]+"${launcher[@]}"}" "$brokerd" --db "$db" </dev/null >/dev/null 2>>"$db-broker.log" &
  started_pid=$!
  for _ in $(seq 1 600); do
    [[ -n $(broker_pid) ]] && break
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.05
  done
  running=$(broker_pid)
  if [[ -z $running ]]; then
    started_pid=""
    echo "launch-instances: the broker did not start; the end of $db-broker.log:" >&2
    tail -n 20 "$db-broker.log" >&2 || true
    exit 1
  fi
  echo "broker pid $running listening"
  before_broker=$running
fi

demo_args=()
[[ $autostart -eq 1 ]] && demo_args+=(--autostart --broker "$brokerd")
# shellcheck disable=SC2206 # word splitting of the extra flags is intended
[[ -n ${LAUNCH_DEMO_ARGS:-} ]] && demo_args+=($LAUNCH_DEMO_ARGS)

go=$work/go
for i in $(seq 1 "$n"); do
  "$demo" --db "$db" --instance "$i" --ops "$ops" --wait-for "$go" "${demo_args[@]+"${demo_args[@]}"}" \
    >"$work/instance-$i.json" 2>"$work/instance-$i.log" &
  pids+=($!)
done
# Release them together once every instance is waiting at the barrier.
for _ in $(seq 1 1200); do
  waiting=$(cat "$work"/instance-*.json 2>/dev/null | grep -c '"waiting":true' || true)
  [[ $waiting -ge $n ]] && break
  sleep 0.025
done
[[ $waiting -ge $n ]] || { echo "launch-instances: only $waiting of $n instances came up" >&2; exit 1; }
touch "$go"
echo "launched $n instances × $ops operations at once"

failed=0
for i in $(seq 1 "$n"); do
  if wait "${pids[$((i - 1))]}"; then
    echo 0 >"$work/instance-$i.rc"
  else
    echo $? >"$work/instance-$i.rc"
    failed=1
  fi
done
pids=()

# With --autostart, the broker one of the instances started is this run's to stop.
if [[ -z $before_broker ]]; then
  running=$(broker_pid)
  [[ -n $running ]] && started_pid=$running
fi

set +e
"$cli" --db "$db" --json verify >"$work/verify.json" 2>"$work/verify.err"
verify_rc=$?
set -e

set +e
python3 - "$cli" "$db" "$work" "$n" "$verify_rc" "$autostart" "${before_broker:-}" <<'PY'
import json, subprocess, sys
cli, db, work, n, verify_rc, autostart, before_broker = sys.argv[1:]
n, verify_rc = int(n), int(verify_rc)
problems = []

def q(sql):
    r = subprocess.run([cli, "--db", db, "--json", "query", sql], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"query failed: {sql}: {r.stderr.strip()}")
        return [[0]]
    return json.loads(r.stdout)["rows"]

before = json.load(open(f"{work}/before.json"))
reports = []
for i in range(1, n + 1):
    rc = int(open(f"{work}/instance-{i}.rc").read())
    lines = [l for l in open(f"{work}/instance-{i}.json").read().splitlines() if l.strip()]
    try:
        r = json.loads(lines[-1])
    except (IndexError, ValueError):
        problems.append(f"instance {i}: no JSON summary (exit {rc}); stderr in {work}/instance-{i}.log")
        continue
    reports.append(r)
    if rc != 0 or r.get("errors", 1) != 0:
        problems.append(f"instance {i}: exit {rc}, {r.get('errors')} errors, first: {r.get('first_error')}")
    if r.get("ops"):
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r["ops"].items()))
        print(f"  instance {r['instance']:>2} (pid {r['pid']}): {sum(r['ops'].values())} ops ({ops}); "
              f"{r['units_sold']} units sold; {r['retries']} retries; {r['errors']} errors; "
              f"broker {r['broker_pid']} ({r['broker']}); {r['elapsed_ms']} ms")

brokers = {r.get("broker_pid") for r in reports}
if len(brokers) != 1:
    problems.append(f"instances talked to {len(brokers)} brokers: {sorted(map(str, brokers))}")
if int(autostart) and not before_broker and reports:
    starters = [r["instance"] for r in reports if r.get("broker") == "started_here"]
    if len(starters) != 1:
        problems.append(f"expected exactly one instance to start the surviving broker, got {starters}")

def check(what, reported, stored):
    ok = reported == stored
    print(f"  {what}: instances {reported}, database {stored}{'' if ok else '  <-- MISMATCH'}")
    if not ok:
        problems.append(f"{what}: the instances report {reported}, the database holds {stored}")

sold_db = {k: v for k, v in q("SELECT date || '|' || sku, qty FROM sales")}
sold_rep = dict(before["sold"])
for r in reports:
    for k, v in r.get("sold", {}).items():
        sold_rep[k] = sold_rep.get(k, 0) + v
print("totals (this run, counted from before it):")
check("units sold", sum(r.get("units_sold", 0) for r in reports),
      sum(sold_db.values()) - sum(before["sold"].values()))
diff = sorted(k for k in set(sold_db) | set(sold_rep) if sold_db.get(k, 0) != sold_rep.get(k, 0))
print(f"  sales rows per (date, sku): {len(sold_db)} rows, {len(diff)} differ{'' if not diff else '  <-- MISMATCH'}")
if diff:
    problems.append("units sold per (date, sku) differ for " + ", ".join(
        f"{k} (instances {sold_rep.get(k, 0)}, database {sold_db.get(k, 0)})" for k in diff[:5]))
check("stock movements", sum(r.get("movements", 0) for r in reports),
      q("SELECT count(*) FROM transactions")[0][0] - before["movements"])
check("stock change", sum(r.get("stock_delta", 0) for r in reports),
      q("SELECT coalesce(sum(qty), 0) FROM skus")[0][0] - before["stock"])
check("SKUs added", sum(r.get("skus_added", 0) for r in reports),
      q("SELECT count(*) FROM skus")[0][0] - before["skus"])
ledger = q("SELECT count(*) FROM skus s WHERE qty <> "
           "(SELECT coalesce(sum(delta), 0) FROM transactions t WHERE t.sku = s.sku)")[0][0]
print(f"  SKUs whose stock differs from their ledger: {ledger}{'' if ledger == 0 else '  <-- TORN MOVEMENTS'}")
if ledger:
    problems.append(f"{ledger} SKUs have a quantity that differs from the sum of their ledger rows")

try:
    v = json.load(open(f"{work}/verify.json"))
except ValueError:
    v = {}
print(f"  verify: exit {verify_rc} {json.dumps(v)}")
if verify_rc != 0:
    problems.append(f"litebroker verify failed (exit {verify_rc}): {open(f'{work}/verify.err').read().strip()}")

if problems:
    print("FAILED:")
    for p in problems:
        print(f"  - {p}")
    sys.exit(1)
print(f"OK: {len(reports)} instances, one broker (pid {brokers.pop()}), 0 errors, totals match, verify OK")
PY
check_rc=$?
set -e
if [[ $failed -ne 0 || $check_rc -ne 0 ]]; then
  exit 1
fi
