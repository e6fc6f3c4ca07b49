#!/usr/bin/env bash
# The side-by-side benchmark: detcd and etcd 3.4 (Debian's etcd-server, installed when
# missing), the same flags, on loopback, driven by the same load tool (tests/src/bin/
# detcd-load/, see LOAD_CLIENT below), in alternating rounds in one invocation.
#
#   tests/bench.sh matrix [rounds=3] [members="1 3"] [clients="1 16 64 256"] [workloads]
#     Per round and server: a fresh cluster, a 10k-key space written once, then each
#     workload (put, get, get-serializable, txn, delete; 16 B keys, 256 B values) at each
#     client count (one connection per client). Reports ops/s, p50/p99/p99.9/max latency
#     and server CPU per operation (all members, from /proc), the median over rounds and
#     its spread (min-max), and the ratio detcd/etcd per cell. A run in which other
#     processes used more than a tenth of a core is marked noisy (*).
#
#   tests/bench.sh scale [keys=1000000] [members=1] [value_bytes=256]
#     Loads `keys` distinct keys (`value_bytes` values, 64 clients) into a fresh cluster of each
#     server, and reports the longest request during the load, requests failed, peak
#     and steady resident memory (all members), data-dir size, the time one 100k-key
#     range (keys only) takes, the longest put of 16 clients while the whole store is
#     compacted, and the restart time of the first member after kill -9
#     (until it answers a put), with its peak memory while starting.
#
#   tests/bench.sh dbsize [keys=100000]
#     DB SIZE and in-use (etcdctl endpoint status) of one member after writing `keys`
#     keys twice (256 B values, so half the records are history), after compacting to
#     the current revision, and after defragmenting.
#
#   tests/bench.sh join [bytes=1073741824] [value_bytes=65536]
#     Membership: loads `bytes` of values (distinct keys, 16 clients) into a one-member
#     cluster of each server, then `etcdctl member add` + a new member started with
#     --initial-cluster-state existing on an empty data dir, and reports the time from
#     the add until the new member holds the leader's revision (it is caught up from a
#     snapshot of the whole store), the peak memory of each member meanwhile, and the
#     new member's data-dir size. Both servers get --quota-backend-bytes 8 GiB.
#
# LOAD_CLIENT picks the load tool's client for put/get/txn/delete: `raw` (default since
# 2026-11-28: one h2 connection per client polled by the task sending its requests,
# ~14-17 us of the tool's CPU per operation at 64 clients) or `etcd-client` (the crate
# client programs use, ~29-32 us: at 64 clients the tool then took a third of the two
# cores the servers share with it; figures before that date were taken with it).
#
# SERVERS="detcd" runs one side only (for iterating; a comparison needs both).
# Results go to standard output and to reports/bench-<mode>-<date>.json. Stops
# everything it starts; ports stay below the ephemeral range.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-matrix}
source tests/bench-common.sh
ensure_etcd
ROOT=$(mktemp -d /tmp/detcd-bench.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$ROOT"; }
trap cleanup EXIT
LOAD=./target/release/detcd-load
LOAD_CLIENT=${LOAD_CLIENT:-raw}
mkdir -p reports

# start_member SERVER INDEX MEMBERS BASE DIR: starts one member of a cluster (appends PIDS).
start_member() {
  local binary=${DETCD_BINARY:-./target/release/detcd} cluster="" i
  [ "$1" = etcd ] && binary=etcd
  for i in $(seq 0 $(($3-1))); do cluster+="m$i=http://127.0.0.1:$(($4+10*i+1)),"; done
  cluster=${cluster%,}
  local port=$(($4+10*$2))
  # shellcheck disable=SC2086 # EXTRA_FLAGS holds several flags
  "$binary" --name "m$2" --data-dir "$5-m$2" ${EXTRA_FLAGS:-} \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port+1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port+1))" \
    --initial-cluster "$cluster" --initial-cluster-token "bench-$4" >>"$5-m$2.log" 2>&1 &
  PIDS+=($!)
}
start_cluster() { # SERVER MEMBERS BASE DIR
  local i
  for i in $(seq 0 $(($2-1))); do start_member "$1" "$i" "$2" "$3" "$4"; done
  wait_ready "$3" "$1" "$4-m0.log"
}
stop_cluster() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; PIDS=(); }
endpoints_of() { local e="" i; for i in $(seq 0 $(($1-1))); do e+="127.0.0.1:$(($2+10*i)),"; done; echo "${e%,}"; }
# follower_first ENDPOINTS: the same endpoints, turned to start at a follower (a cluster
# of one: unchanged). The load tool gives client n the endpoint n mod count, so one client
# talks to the first: on whichever member the election left there it measured the
# leader's path (a put answered at commit) in some rounds and a follower's (forwarded,
# answered once the follower learns the commit) in others — detcd's three-member x1
# rounds of 2026-11-28 read 1,595 once and 1,280-1,330 four times. A client given all
# endpoints lands on a follower two times in three, so every round measures that path.
follower_first() {
  local list i member leader status
  IFS=, read -r -a list <<<"$1"
  for i in "${!list[@]}"; do
    [ "${#list[@]}" -gt 1 ] || break
    status=$(ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=5s --endpoints="${list[$i]}" endpoint status -w json 2>/dev/null)
    member=$(echo "$status" | sed -nE 's/.*"member_id":([0-9]+).*/\1/p'); leader=$(echo "$status" | sed -nE 's/.*"leader":([0-9]+).*/\1/p')
    if [ -n "$member" ] && [ -n "$leader" ] && [ "$member" != "$leader" ]; then
      local turned=("${list[@]:$i}" "${list[@]:0:$i}")
      (IFS=,; echo "${turned[*]}")
      return
    fi
  done
  echo "$1"
}
pids_csv() { local IFS=,; echo "${PIDS[*]}"; }
status_kib() { awk -v f="$2:" '$1==f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sum_status_kib() { local f=$1 total=0 pid; shift; for pid in "$@"; do total=$((total + $(status_kib "$pid" "$f"))); done; echo "$total"; }
spread() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else printf "%s-%s", a[1], a[NR]}'; }
# fsync_us: a 512-byte overwrite made durable (O_DSYNC) of a file already written, as a
# WAL's preallocated segment, in the directory the servers' data dirs live in; in
# microseconds, the mean of 500: the disk of the moment, which moves every figure that
# waits for the WAL (on this machine anywhere from ~90 to ~145 us, within one day).
fsync_us() {
  dd if=/dev/zero of="$ROOT/fsync-probe" bs=512 count=500 status=none && sync
  dd if=/dev/zero of="$ROOT/fsync-probe" bs=512 count=500 oflag=dsync conv=notrunc 2>&1 |
    sed -n 's/.* copied, \([0-9.e-]*\) s.*/\1/p' | awk '{printf "%.0f", $1 / 500 * 1000000}'
  rm -f "$ROOT/fsync-probe"
}
machine() { echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'), fsync $(fsync_us) us, load client $LOAD_CLIENT"; }

run_matrix() {
  local rounds=${1:-3} members_list=${2:-"1 3"} clients_list=${3:-"1 16 64 256"} workloads=${4:-"put get get-serializable txn delete"}
  local json="reports/bench-matrix-$(date -u +%F).json" round_id=0 out server members clients workload round ops
  declare -A OPS P50 P99 P999 MAX CPU NOISY
  echo "# $(date -u +%F) $(machine); $rounds rounds, servers alternating"
  printf "%-7s %-17s %-7s %-6s %9s %8s %8s %8s %9s %8s\n" members workload clients server ops/s p50_ms p99_ms p999_ms max_ms cpu_us/op
  for members in $members_list; do
    for round in $(seq 1 "$rounds"); do
      # Alternate which server goes first, so neither always runs on a warmer machine.
      local order="detcd etcd"; [ $((round % 2)) -eq 0 ] && order="etcd detcd"
      for server in $order; do
        round_id=$((round_id+1))
        local base=$((20000 + (round_id % 50) * 200))
        start_cluster "$server" "$members" "$base" "$ROOT/$server-$round_id"
        local endpoints; endpoints=$(follower_first "$(endpoints_of "$members" "$base")")
        "$LOAD" --client "$LOAD_CLIENT" --mode put --endpoints "$endpoints" --clients 64 --total 10000 --key-space 10000 >/dev/null
        for workload in $workloads; do
          for clients in $clients_list; do
            ops=$(( clients == 1 ? 2000 : 20000 ))
            out=$("$LOAD" --client "$LOAD_CLIENT" --mode "$workload" --endpoints "$endpoints" --clients "$clients" --total "$ops" --key-space 10000 \
              --max-seconds 60 --server-pids "$(pids_csv)")
            local cell="$members|$workload|$clients|$server"
            OPS[$cell]+="$(field "$out" puts_per_s) "; P50[$cell]+="$(field "$out" p50_ms) "; P99[$cell]+="$(field "$out" p99_ms) "
            P999[$cell]+="$(field "$out" p999_ms) "; MAX[$cell]+="$(field "$out" max_ms) "; CPU[$cell]+="$(field "$out" server_cpu_us_per_op) "
            [ "$(field "$out" noisy)" = 1 ] && NOISY[$cell]=1
            [ "$(field "$out" errors)" = 0 ] || echo "warning: $server $workload x$clients had $(field "$out" errors) errors"
            printf "%-7s %-17s %-7s %-6s %9s %8s %8s %8s %9s %8s%s\n" "$members" "$workload" "$clients" "$server" \
              "$(field "$out" puts_per_s)" "$(field "$out" p50_ms)" "$(field "$out" p99_ms)" "$(field "$out" p999_ms)" \
              "$(field "$out" max_ms)" "$(field "$out" server_cpu_us_per_op)" "$([ "$(field "$out" noisy)" = 1 ] && echo ' *')"
          done
        done
        stop_cluster
      done
    done
  done
  echo
  echo "# medians over $rounds rounds (spread min-max); ratio = detcd/etcd (ops/s: higher is better; p99, cpu: lower is better)"
  printf "%-7s %-17s %-7s %19s %19s %6s %8s %8s %6s %7s %7s %6s\n" members workload clients "detcd ops/s" "etcd ops/s" ratio \
    d_p99 e_p99 ratio d_cpu e_cpu ratio
  local first=1
  echo "{\"date\": \"$(date -u +%FT%TZ)\", \"machine\": \"$(machine)\", \"rounds\": $rounds, \"cells\": [" >"$json"
  for members in $members_list; do for workload in $workloads; do for clients in $clients_list; do
    local d="$members|$workload|$clients|detcd" e="$members|$workload|$clients|etcd"
    local dops eops dp99 ep99 dcpu ecpu
    dops=$(echo ${OPS[$d]} | tr ' ' '\n' | median); eops=$(echo ${OPS[$e]} | tr ' ' '\n' | median)
    dp99=$(echo ${P99[$d]} | tr ' ' '\n' | median); ep99=$(echo ${P99[$e]} | tr ' ' '\n' | median)
    dcpu=$(echo ${CPU[$d]} | tr ' ' '\n' | median); ecpu=$(echo ${CPU[$e]} | tr ' ' '\n' | median)
    printf "%-7s %-17s %-7s %19s %19s %6s %8s %8s %6s %7s %7s %6s%s\n" "$members" "$workload" "$clients" \
      "$dops ($(echo ${OPS[$d]} | tr ' ' '\n' | spread))" "$eops ($(echo ${OPS[$e]} | tr ' ' '\n' | spread))" "$(ratio "$dops" "$eops")" \
      "$dp99" "$ep99" "$(ratio "$dp99" "$ep99")" "$dcpu" "$ecpu" "$(ratio "$dcpu" "$ecpu")" \
      "$([ -n "${NOISY[$d]:-}${NOISY[$e]:-}" ] && echo ' *noisy')"
    [ $first = 1 ] || echo "," >>"$json"; first=0
    printf '{"members": %s, "workload": "%s", "clients": %s, "detcd": {"ops_per_s": [%s], "p50_ms": [%s], "p99_ms": [%s], "p999_ms": [%s], "max_ms": [%s], "cpu_us_per_op": [%s]}, "etcd": {"ops_per_s": [%s], "p50_ms": [%s], "p99_ms": [%s], "p999_ms": [%s], "max_ms": [%s], "cpu_us_per_op": [%s]}, "noisy": %s}' \
      "$members" "$workload" "$clients" \
      "$(echo ${OPS[$d]} | tr ' ' ',')" "$(echo ${P50[$d]} | tr ' ' ',')" "$(echo ${P99[$d]} | tr ' ' ',')" "$(echo ${P999[$d]} | tr ' ' ',')" "$(echo ${MAX[$d]} | tr ' ' ',')" "$(echo ${CPU[$d]} | tr ' ' ',')" \
      "$(echo ${OPS[$e]} | tr ' ' ',')" "$(echo ${P50[$e]} | tr ' ' ',')" "$(echo ${P99[$e]} | tr ' ' ',')" "$(echo ${P999[$e]} | tr ' ' ',')" "$(echo ${MAX[$e]} | tr ' ' ',')" "$(echo ${CPU[$e]} | tr ' ' ',')" \
      "$([ -n "${NOISY[$d]:-}${NOISY[$e]:-}" ] && echo true || echo false)" >>"$json"
  done; done; done
  echo "]}" >>"$json"
  echo "results: $json"
}

run_scale() {
  local keys=${1:-1000000} members=${2:-1} value_bytes=${3:-256} json="reports/bench-scale-$(date -u +%F).json" server first=1 round_id=0
  echo "# $(date -u +%F) $(machine); $keys keys of $value_bytes B into $members member(s), 64 clients; --quota-backend-bytes 8 GiB"
  printf "%-6s %9s %8s %8s %8s %10s %10s %9s %9s %11s %10s %10s %9s\n" server puts/s p99_ms max_ms failed \
    peak_MiB steady_MiB data_MiB range_ms compact_max restart_s restart_MiB loop_max
  echo "{\"date\": \"$(date -u +%FT%TZ)\", \"machine\": \"$(machine)\", \"keys\": $keys, \"members\": $members, \"servers\": [" >"$json"
  for server in ${SERVERS:-detcd etcd}; do
    round_id=$((round_id+1))
    local base=$((24000 + round_id * 200)) dir="$ROOT/scale-$server"
    EXTRA_FLAGS="--quota-backend-bytes 8589934592" start_cluster "$server" "$members" "$base" "$dir"
    local endpoints out; endpoints=$(endpoints_of "$members" "$base")
    out=$("$LOAD" --client "$LOAD_CLIENT" --mode put --endpoints "$endpoints" --clients 64 --total "$keys" --key-space "$keys" --value-bytes "$value_bytes" --max-seconds 1800 \
      --server-pids "$(pids_csv)")
    local peak steady data range
    peak=$(sum_status_kib VmHWM "${PIDS[@]}")
    sleep 5
    steady=$(sum_status_kib VmRSS "${PIDS[@]}")
    data=$(du -sk "$dir"-m* 2>/dev/null | awk '{s+=$1} END {print s}')
    range=$("$LOAD" --client "$LOAD_CLIENT" --mode range --endpoints "${endpoints%%,*}" --clients 1 --total 5 --range-keys 100000 | tr ' ' '\n' | sed -n 's/^p50_ms=//p')
    # Compaction of the whole store while 16 clients put: the longest put meanwhile.
    local compact_out revision
    revision=$(ETCDCTL_API=3 etcdctl --endpoints="${endpoints%%,*}" endpoint status -w json | sed -E 's/.*"revision":([0-9]+).*/\1/')
    "$LOAD" --client "$LOAD_CLIENT" --mode put --endpoints "$endpoints" --clients 16 --total 40000 --key-space 10000 >"$dir-compact-load.txt" &
    local load_pid=$!
    sleep 0.5
    ETCDCTL_API=3 etcdctl --endpoints="${endpoints%%,*}" compact "$revision" >/dev/null
    wait "$load_pid"
    compact_out=$(cat "$dir-compact-load.txt")
    # detcd reports the longest turn of its loop (load, snapshots, the compaction above):
    # how long it answered no peer and no client at most, as total/without the WAL fsync.
    # etcd has no such figure.
    local loop_max="-"
    if [ "$server" = detcd ]; then
      loop_max=$(curl -s "http://${endpoints%%,*}/metrics" | awk '$1 == "detcd_server_loop_turn_longest_seconds" {t = $2 * 1000} $1 == "detcd_server_loop_turn_longest_without_fsync_seconds" {n = $2 * 1000} END {printf "%.0f/%.0f", t, n}')
    fi
    # Restart the first member after kill -9: time until it answers a put again.
    local first_pid=${PIDS[0]}
    kill -9 "$first_pid"; wait "$first_pid" 2>/dev/null || true
    local started restart restart_peak
    started=$(date +%s.%N)
    EXTRA_FLAGS="--quota-backend-bytes 8589934592" start_member "$server" 0 "$members" "$base" "$dir"
    wait_ready "$base" "$server" "$dir-m0.log"
    restart=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}')
    restart_peak=$(status_kib "${PIDS[-1]}" VmHWM)
    stop_cluster
    printf "%-6s %9s %8s %8s %8s %10s %10s %9s %9s %11s %10s %10s %9s\n" "$server" "$(field "$out" puts_per_s)" "$(field "$out" p99_ms)" \
      "$(field "$out" max_ms)" "$(field "$out" errors)" "$((peak/1024))" "$((steady/1024))" "$((data/1024))" "$range" \
      "$(field "$compact_out" max_ms)" "$restart" "$((restart_peak/1024))" "$loop_max"
    [ $first = 1 ] || echo "," >>"$json"; first=0
    printf '{"server": "%s", "puts_per_s": %s, "p99_ms": %s, "max_ms": %s, "failed": %s, "peak_rss_kib": %s, "steady_rss_kib": %s, "data_dir_kib": %s, "range_100k_ms": %s, "restart_s": %s, "restart_peak_rss_kib": %s, "server_cpu_us_per_op": %s, "max_ms_while_compacting": %s, "loop_turn_longest_ms": "%s"}' \
      "$server" "$(field "$out" puts_per_s)" "$(field "$out" p99_ms)" "$(field "$out" max_ms)" "$(field "$out" errors)" "$peak" "$steady" "$data" \
      "${range:-0}" "$restart" "$restart_peak" "$(field "$out" server_cpu_us_per_op)" "$(field "$compact_out" max_ms)" "$loop_max" >>"$json"
  done
  echo "]}" >>"$json"
  echo "results: $json"
}

# revision_of ENDPOINT: the store revision a member reports (etcdctl's JSON status).
revision_of() {
  ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=5s --endpoints="$1" endpoint status -w json 2>/dev/null \
    | sed -nE 's/.*"revision":([0-9]+).*/\1/p'
}

# db_sizes ENDPOINT: "DB SIZE in-use" in bytes (etcdctl's JSON status).
db_sizes() {
  ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint status -w json | sed -nE 's/.*"dbSize":([0-9]+).*"dbSizeInUse":([0-9]+).*/\1 \2/p'
}

run_dbsize() {
  local keys=${1:-100000} server round_id=0
  echo "# $(date -u +%F) $(machine); $keys keys of 256 B written twice into one member"
  printf "%-6s %14s %14s %14s %14s %14s %14s\n" server written_MB in_use_MB compacted_MB in_use_MB defragged_MB in_use_MB
  for server in ${SERVERS:-detcd etcd}; do
    round_id=$((round_id+1))
    local base=$((26000 + round_id * 200)) dir="$ROOT/dbsize-$server"
    start_cluster "$server" 1 "$base" "$dir"
    local e="127.0.0.1:$base"
    "$LOAD" --client "$LOAD_CLIENT" --mode put --endpoints "$e" --clients 16 --total $((2 * keys)) --key-space "$keys" --max-seconds 1800 >/dev/null
    local written compacted defragged revision
    written=$(db_sizes "$e")
    revision=$(revision_of "$e")
    ETCDCTL_API=3 etcdctl --endpoints="$e" compact "$revision" >/dev/null
    sleep 2
    compacted=$(db_sizes "$e")
    ETCDCTL_API=3 etcdctl --endpoints="$e" defrag >/dev/null
    defragged=$(db_sizes "$e")
    stop_cluster
    # shellcheck disable=SC2086 # each holds two numbers
    printf "%-6s %14s %14s %14s %14s %14s %14s\n" "$server" $(echo $written $compacted $defragged | awk '{for (i=1;i<=NF;i++) printf "%.1f ", $i/1e6}')
  done
}

run_join() {
  local bytes=${1:-1073741824} value_bytes=${2:-65536} json="reports/bench-join-$(date -u +%F).json" server first=1 round_id=0
  local keys=$((bytes / value_bytes))
  echo "# $(date -u +%F) $(machine); $keys keys of $value_bytes B into one member, then a second member joins"
  printf "%-6s %9s %9s %12s %12s %12s\n" server load_s join_s leader_MiB joiner_MiB joiner_data_MiB
  echo "{\"date\": \"$(date -u +%FT%TZ)\", \"machine\": \"$(machine)\", \"bytes\": $bytes, \"value_bytes\": $value_bytes, \"servers\": [" >"$json"
  for server in ${SERVERS:-detcd etcd}; do
    round_id=$((round_id+1))
    local base=$((25000 + round_id * 200)) dir="$ROOT/join-$server"
    EXTRA_FLAGS="--quota-backend-bytes 8589934592" start_cluster "$server" 1 "$base" "$dir"
    local loaded_at load_start; load_start=$(date +%s.%N)
    "$LOAD" --client "$LOAD_CLIENT" --mode put --endpoints "127.0.0.1:$base" --clients 16 --total "$keys" --key-space "$keys" \
      --value-bytes "$value_bytes" --max-seconds 1800 >"$dir-load.txt"
    loaded_at=$(date +%s.%N)
    local target; target=$(revision_of "127.0.0.1:$base")
    local added_at; added_at=$(date +%s.%N)
    ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$base" member add m1 --peer-urls="http://127.0.0.1:$((base+11))" >"$dir-add.txt"
    EXTRA_FLAGS="--quota-backend-bytes 8589934592 --initial-cluster-state existing" start_member "$server" 1 2 "$base" "$dir"
    local joined="" i
    for i in $(seq 1 3000); do
      [ "$(revision_of "127.0.0.1:$((base+10))")" = "$target" ] && { joined=$(date +%s.%N); break; }
      sleep 0.1
    done
    [ -n "$joined" ] || { echo "$server: the new member did not catch up; logs:"; tail -5 "$dir-m0.log" "$dir-m1.log"; exit 1; }
    local leader_peak joiner_peak joiner_data
    leader_peak=$(status_kib "${PIDS[0]}" VmHWM); joiner_peak=$(status_kib "${PIDS[1]}" VmHWM)
    joiner_data=$(du -sk "$dir-m1" | awk '{print $1}')
    stop_cluster
    local load_s join_s
    load_s=$(awk -v a="$load_start" -v b="$loaded_at" 'BEGIN {printf "%.1f", b-a}')
    join_s=$(awk -v a="$added_at" -v b="$joined" 'BEGIN {printf "%.2f", b-a}')
    printf "%-6s %9s %9s %12s %12s %12s\n" "$server" "$load_s" "$join_s" "$((leader_peak/1024))" "$((joiner_peak/1024))" "$((joiner_data/1024))"
    [ $first = 1 ] || echo "," >>"$json"; first=0
    printf '{"server": "%s", "load_s": %s, "join_s": %s, "leader_peak_rss_kib": %s, "joiner_peak_rss_kib": %s, "joiner_data_dir_kib": %s}' \
      "$server" "$load_s" "$join_s" "$leader_peak" "$joiner_peak" "$joiner_data" >>"$json"
  done
  echo "]}" >>"$json"
  echo "results: $json"
}

case "$MODE" in
  matrix) shift || true; run_matrix "$@" ;;
  scale) shift || true; run_scale "$@" ;;
  join) shift || true; run_join "$@" ;;
  dbsize) shift || true; run_dbsize "$@" ;;
  *) echo "usage: tests/bench.sh matrix [rounds] [members] [clients] [workloads] | scale [keys] [members] | join [bytes] [value_bytes] | dbsize [keys]"; exit 2 ;;
esac
