#!/usr/bin/env bash
# Watch benchmark, side by side: detcd and etcd 3.4 (Debian's etcd-server, installed when
# missing), one member each, the same flags, on loopback. For each watcher count, rounds
# alternate detcd / etcd; each round: N watchers on one prefix, one writer putting
# PUTS values under it. Reports events delivered per second, delivery latency
# (put issued -> event received) and server memory per idle watcher, and the ratio
# detcd/etcd of the medians over rounds. Stops everything it starts.
# Usage: tests/bench-watch.sh [puts per round, default 1000] [rounds, default 3] [watcher counts, default "1 100 10000"]
set -euo pipefail
cd "$(dirname "$0")/.."
PUTS=${1:-1000}
ROUNDS=${2:-3}
COUNTS=${3:-"1 100 10000"}
source tests/bench-common.sh
ensure_etcd
ROOT=$(mktemp -d /tmp/detcd-bench-watch.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT

start_server() { # $1 = detcd|etcd, $2 = port base, $3 = data dir
  local binary=./target/release/detcd
  [ "$1" = etcd ] && binary=etcd
  ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} "$binary" --name m0 --data-dir "$3" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$(($2+1))" --initial-advertise-peer-urls "http://127.0.0.1:$(($2+1))" \
    --initial-cluster "m0=http://127.0.0.1:$(($2+1))" --initial-cluster-token bench >"$3.log" 2>&1 &
  PID=$!
  wait_ready "$2" "$1" "$3.log"
}


echo "# $(date -u +%F) $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); puts per round $PUTS, rounds $ROUNDS"
printf "%-8s %-6s %12s %10s %10s %14s\n" watchers server events/s p50_ms p99_ms bytes/watcher
declare -A RESULTS
round_id=0
for watchers in $COUNTS; do
  for round in $(seq 1 "$ROUNDS"); do
    for server in detcd etcd; do
      round_id=$((round_id+1))
      port=$((24000 + (round_id % 50) * 10))   # below the ephemeral port range
      start_server "$server" "$port" "$ROOT/$server-$round_id"
      out=$(./target/release/detcd-load --mode watch --endpoints "127.0.0.1:$port" --watchers "$watchers" \
        --total "$PUTS" --max-seconds 120 --server-pids "$PID")
      kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
      eps=$(field "$out" events_per_s); p50=$(field "$out" p50_ms); p99=$(field "$out" p99_ms); bpw=$(field "$out" bytes_per_watcher)
      events=$(field "$out" events); expected=$(field "$out" expected_events)
      [ "$events" = "$expected" ] || echo "warning: $server delivered $events of $expected events"
      printf "%-8s %-6s %12s %10s %10s %14s\n" "$watchers" "$server" "$eps" "$p50" "$p99" "$bpw"
      RESULTS[$watchers-$server-eps]+="$eps "; RESULTS[$watchers-$server-p99]+="$p99 "; RESULTS[$watchers-$server-bpw]+="$bpw "
    done
  done
done
echo
echo "# medians over rounds, and detcd/etcd"
printf "%-8s %14s %14s %8s %12s %12s %8s %14s %14s\n" watchers detcd_events/s etcd_events/s ratio detcd_p99 etcd_p99 ratio detcd_B/watch etcd_B/watch
for watchers in $COUNTS; do
  de=$(echo ${RESULTS[$watchers-detcd-eps]} | tr ' ' '\n' | median); ee=$(echo ${RESULTS[$watchers-etcd-eps]} | tr ' ' '\n' | median)
  dp=$(echo ${RESULTS[$watchers-detcd-p99]} | tr ' ' '\n' | median); ep=$(echo ${RESULTS[$watchers-etcd-p99]} | tr ' ' '\n' | median)
  db=$(echo ${RESULTS[$watchers-detcd-bpw]} | tr ' ' '\n' | median); eb=$(echo ${RESULTS[$watchers-etcd-bpw]} | tr ' ' '\n' | median)
  printf "%-8s %14s %14s %8s %12s %12s %8s %14s %14s\n" "$watchers" "$de" "$ee" "$(ratio "$de" "$ee")" \
    "$dp" "$ep" "$(ratio "$dp" "$ep")" "$db" "$eb"
done
