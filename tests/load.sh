#!/usr/bin/env bash
# Measures detcd under load on loopback: puts/s and latency for 1 and 3 members at 1 and
# 64 concurrent clients, and fsyncs per committed entry on the first member (fdatasync
# calls counted by strace while the load runs). Starts release builds, stops everything.
# Usage: tests/load.sh [puts per run, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-20000}
cargo build --release -q -p detcd-node --bin detcd -p detcd-tests --bin detcd-load
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)"; exit 2; }
ROOT=$(mktemp -d /tmp/detcd-load.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$ROOT"; }
trap cleanup EXIT

start_cluster() { # $1 = members, $2 = base port
  local n=$1 base=$2 cluster="" i
  for i in $(seq 0 $((n-1))); do cluster+="m$i=http://127.0.0.1:$((base+10*i+1)),"; done
  cluster=${cluster%,}
  for i in $(seq 0 $((n-1))); do
    ./target/release/detcd --name "m$i" --data-dir "$ROOT/$base-m$i" \
      --listen-client-urls "http://127.0.0.1:$((base+10*i))" --advertise-client-urls "http://127.0.0.1:$((base+10*i))" \
      --listen-peer-urls "http://127.0.0.1:$((base+10*i+1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base+10*i+1))" \
      --initial-cluster "$cluster" --initial-cluster-token "load-$base" 2>"$ROOT/$base-m$i.log" &
    PIDS+=($!)
  done
  sleep 3
}

for members in 1 3; do
  base=$((30000 + members * 1000))
  start_cluster "$members" "$base"
  first_pid=${PIDS[$((${#PIDS[@]} - members))]}
  for clients in 1 64; do
    strace -f -q -c -e trace=fdatasync,fsync -p "$first_pid" -o "$ROOT/strace-$members-$clients.txt" 2>/dev/null &
    STRACE=$!
    sleep 0.5
    result=$(./target/release/detcd-load --endpoints "127.0.0.1:$base" --clients "$clients" --total "$TOTAL" --max-seconds 120)
    kill -INT "$STRACE"; wait "$STRACE" 2>/dev/null || true
    syncs=$(awk '$NF=="fdatasync" || $NF=="fsync" {s+=$4} END {print s+0}' "$ROOT/strace-$members-$clients.txt")
    puts=$(echo "$result" | sed -E 's/.* puts=([0-9]+).*/\1/')
    echo "members=$members $result fsyncs_on_m0=$syncs fsyncs_per_entry=$(awk -v s="$syncs" -v p="$puts" 'BEGIN{printf "%.3f", (p>0? s/p : 0)}')"
  done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=()
  sleep 1
done
