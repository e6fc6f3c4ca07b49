# Shared by the side-by-side benchmark scripts (sourced, not run): installs Debian's
# etcd-server when missing, builds detcd and the load tool, and gives small helpers.
# Server ports must stay below Linux's ephemeral range (32768+), where a client socket
# may already hold them.

ensure_etcd() {
  if ! command -v etcd >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
  fi
  cargo build --release -q -p detcd-node --bin detcd -p detcd-tests --bin detcd-load
}

# wait_ready PORT NAME LOG: waits until a put on 127.0.0.1:PORT succeeds. The port is
# polled first (every 10 ms, up to 20 s): an etcdctl started before the server listens
# backs off for up to a second after the refused dial, which made restart times of both
# servers up to a second longer, at random.
wait_ready() {
  for _ in $(seq 1 2000); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break
    sleep 0.01
  done
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=2s --endpoints="127.0.0.1:$1" put __ready 1 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$2 did not start; log:"; cat "$3"; exit 1
}

# field LINE NAME: the value of NAME=value in a load-tool result line.
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# median: the median of numbers on standard input.
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else print a[int((NR+1)/2)]}'; }
# ratio A B: A/B with two decimals (0 when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b>0?a/b:0)}'; }
