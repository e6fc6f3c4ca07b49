#!/usr/bin/env bash
# Lease benchmark, side by side: detcd and etcd 3.4 (Debian's etcd-server, installed when
# missing), 3 members each, the same flags, on loopback, rounds alternating. Measures
# leases granted per second and keep-alives per second (each client renews its own lease
# over one keep-alive stream, one renewal in flight) at the given client counts, and
# prints the medians over rounds with the ratio detcd/etcd. Stops everything it starts.
# Usage: tests/bench-lease.sh [operations per round, default 5000] [rounds, default 3] [client counts, default "1 16 64"]
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-5000}
ROUNDS=${2:-3}
COUNTS=${3:-"1 16 64"}
source tests/bench-common.sh
ensure_etcd
ROOT=$(mktemp -d /tmp/detcd-bench-lease.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$ROOT"; }
trap cleanup EXIT

start_cluster() { # $1 = detcd|etcd, $2 = port base, $3 = dir
  local binary=./target/release/detcd cluster="" i
  [ "$1" = etcd ] && binary=etcd
  for i in 0 1 2; do cluster+="m$i=http://127.0.0.1:$(($2+10*i+1)),"; done
  cluster=${cluster%,}
  for i in 0 1 2; do
    "$binary" --name "m$i" --data-dir "$3-m$i" \
      --listen-client-urls "http://127.0.0.1:$(($2+10*i))" --advertise-client-urls "http://127.0.0.1:$(($2+10*i))" \
      --listen-peer-urls "http://127.0.0.1:$(($2+10*i+1))" --initial-advertise-peer-urls "http://127.0.0.1:$(($2+10*i+1))" \
      --initial-cluster "$cluster" --initial-cluster-token "bench-$2" >"$3-m$i.log" 2>&1 &
    PIDS+=($!)
  done
  wait_ready "$2" "$1" "$3-m0.log"
}
stop_cluster() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }

echo "# $(date -u +%F) $(nproc) cores; 3 members each; $OPS operations per round, $ROUNDS rounds"
printf "%-11s %-8s %-6s %10s %10s %10s\n" mode clients server ops/s p50_ms p99_ms
declare -A RESULTS
round_id=0
for mode in lease-grant keep-alive; do
  for clients in $COUNTS; do
    for round in $(seq 1 "$ROUNDS"); do
      for server in detcd etcd; do
        round_id=$((round_id+1))
        base=$((20000 + (round_id % 60) * 100))   # below the ephemeral port range
        start_cluster "$server" "$base" "$ROOT/$server-$round_id"
        endpoints="127.0.0.1:$base,127.0.0.1:$((base+10)),127.0.0.1:$((base+20))"
        out=$(./target/release/detcd-load --mode "$mode" --endpoints "$endpoints" --clients "$clients" --total "$OPS" --max-seconds 60)
        stop_cluster
        ops=$(field "$out" puts_per_s); p50=$(field "$out" p50_ms); p99=$(field "$out" p99_ms); errors=$(field "$out" errors)
        [ "$errors" = 0 ] || echo "warning: $server had $errors errors"
        printf "%-11s %-8s %-6s %10s %10s %10s\n" "$mode" "$clients" "$server" "$ops" "$p50" "$p99"
        RESULTS[$mode-$clients-$server]+="$ops "
        RESULTS[$mode-$clients-$server-p99]+="$p99 "
      done
    done
  done
done
echo
echo "# medians over rounds, and detcd/etcd"
printf "%-11s %-8s %12s %12s %8s %10s %10s\n" mode clients detcd_ops/s etcd_ops/s ratio detcd_p99 etcd_p99
for mode in lease-grant keep-alive; do
  for clients in $COUNTS; do
    d=$(echo ${RESULTS[$mode-$clients-detcd]} | tr ' ' '\n' | median); e=$(echo ${RESULTS[$mode-$clients-etcd]} | tr ' ' '\n' | median)
    dp=$(echo ${RESULTS[$mode-$clients-detcd-p99]} | tr ' ' '\n' | median); ep=$(echo ${RESULTS[$mode-$clients-etcd-p99]} | tr ' ' '\n' | median)
    printf "%-11s %-8s %12s %12s %8s %10s %10s\n" "$mode" "$clients" "$d" "$e" "$(ratio "$d" "$e")" "$dp" "$ep"
  done
done
