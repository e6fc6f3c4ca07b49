#!/usr/bin/env bash
# The linearizability checker side by side with Porcupine (github.com/anishathalye/
# porcupine, the reference Go checker), on the same Jepsen single-register logs, in
# alternating rounds in one invocation.
#
#   tests/checker-vs-porcupine.sh [logs=20] [rounds=3] [FILE...]  (REPEAT=5 per round)
#     Generates `logs` linearizable register logs (`detcd-sim jepsen-log`: 5 processes,
#     200 ops, values 0-4 as in Jepsen's etcd test, a fifth of the writes and cas crashed
#     with unknown outcome) and as many with a planted stale read, adds FILEs (e.g.
#     Porcupine's own test_data/jepsen/etcd_*.log), and times each checker on each file
#     (`detcd-sim bench-check`; tests/porcupine-bench for Porcupine), parsing excluded,
#     best of `rounds` x REPEAT runs (a verdict unknown is not repeated). Prints per file both verdicts, both times and the ratio
#     Porcupine/detcd, then the geometric mean and the smallest ratio over the files both
#     decided. Exit 1 when the verdicts disagree on a file both decided.
#
# Porcupine: PORCUPINE_DIR=<a checkout> (no network needed), else `go get` fetches the
# latest release (needs the Go module proxy). Go is Debian's golang-go, installed when
# missing. PORCUPINE_TIMEOUT (default 10s) bounds Porcupine per file (verdict unknown);
# detcd's checker is bounded by its own step budget. Results also go to
# reports/checker-vs-porcupine-<date>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-20}
ROUNDS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
TIMEOUT=${PORCUPINE_TIMEOUT:-10s}
REPEAT=${REPEAT:-5}
if ! command -v go >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq golang-go >/dev/null
fi
ROOT=$(mktemp -d /tmp/detcd-checker-bench.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
cargo build --release -q -p detcd-sim --bin detcd-sim
SIM=./target/release/detcd-sim

cp -r tests/porcupine-bench "$ROOT/harness"
if [ -n "${PORCUPINE_DIR:-}" ]; then
  source_dir=$(cd "$PORCUPINE_DIR" && pwd)
  (cd "$ROOT/harness" \
    && go mod edit -require=github.com/anishathalye/porcupine@v0.0.0 -replace=github.com/anishathalye/porcupine="$source_dir" \
    && GOFLAGS=-mod=mod GOPROXY=off go build -o "$ROOT/porcupine-bench" .)
else
  (cd "$ROOT/harness" && go get github.com/anishathalye/porcupine@latest && go build -o "$ROOT/porcupine-bench" .) || {
    echo "checker-vs-porcupine: cannot fetch Porcupine (no Go module proxy?); set PORCUPINE_DIR to a checkout" >&2
    exit 2
  }
fi

mkdir -p "$ROOT/logs" reports
FILES=("$@")
for seed in $(seq 1 "$LOGS"); do
  "$SIM" jepsen-log --seed "$seed" >"$ROOT/logs/register-$seed.log"
  "$SIM" jepsen-log --seed "$seed" --plant-stale-read >"$ROOT/logs/stale-read-$seed.log"
  FILES+=("$ROOT/logs/register-$seed.log" "$ROOT/logs/stale-read-$seed.log")
done

echo "# $(date -u +%F) $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | awk '{print $3}'), ${#FILES[@]} logs, $ROUNDS rounds alternating, best of $REPEAT per round"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which checker runs first, so neither always gets the warmer machine.
  if [ $((round % 2)) = 1 ]; then order="detcd porcupine"; else order="porcupine detcd"; fi
  for checker in $order; do
    if [ "$checker" = detcd ]; then
      "$SIM" bench-check --repeat "$REPEAT" "${FILES[@]}" >"$ROOT/detcd.$round"
    else
      "$ROOT/porcupine-bench" -repeat "$REPEAT" -timeout "$TIMEOUT" "${FILES[@]}" >"$ROOT/porcupine.$round"
    fi
  done
done

# Per file: the best time of each checker over the rounds, both verdicts, the ratio.
awk -F'\t' -v json="reports/checker-vs-porcupine-$(date -u +%F).json" -v root="$ROOT/logs/" '
  FNR == 1 { checker = (FILENAME ~ /\/detcd\.[0-9]+$/) ? "detcd" : "porcupine" }
  {
    file = $1; if (!(file in seen)) { seen[file] = 1; order[++files] = file }
    ops[file] = $2; verdict[checker, file] = $3
    if (!((checker, file) in best) || $4 < best[checker, file]) best[checker, file] = $4
  }
  END {
    printf "%-44s %5s %-10s %-10s %12s %12s %8s\n", "log", "ops", "detcd", "porcupine", "detcd_us", "porcupine_us", "ratio"
    printf "{\"date\": \"%s\", \"logs\": [", strftime("%Y-%m-%dT%H:%M:%SZ", systime(), 1) >json
    decided = 0; log_sum = 0; smallest = 0; disagree = 0; only_detcd = 0; only_porcupine = 0
    for (i = 1; i <= files; i++) {
      f = order[i]; d = verdict["detcd", f]; p = verdict["porcupine", f]
      dt = best["detcd", f]; pt = best["porcupine", f]; r = pt / (dt > 0 ? dt : 1)
      name = f; sub(root, "", name)
      mark = ""
      if (d != "unknown" && p != "unknown") {
        decided++; log_sum += log(r); if (smallest == 0 || r < smallest) smallest = r
        if (d != p) { disagree++; mark = "  DISAGREE" }
      } else if (d != "unknown") { only_detcd++ } else if (p != "unknown") { only_porcupine++ }
      printf "%-44s %5d %-10s %-10s %12d %12d %7.1fx%s\n", name, ops[f], d, p, dt, pt, r, mark
      printf "%s{\"log\": \"%s\", \"ops\": %d, \"detcd\": \"%s\", \"porcupine\": \"%s\", \"detcd_us\": %d, \"porcupine_us\": %d}", (i > 1 ? ", " : ""), name, ops[f], d, p, dt, pt >json
    }
    geomean = decided ? exp(log_sum / decided) : 0
    printf "], \"decided_by_both\": %d, \"geomean_ratio\": %.2f, \"smallest_ratio\": %.2f, \"only_detcd_decided\": %d, \"only_porcupine_decided\": %d, \"disagreements\": %d}\n", decided, geomean, smallest, only_detcd, only_porcupine, disagree >json
    printf "decided by both: %d logs, Porcupine/detcd geometric mean %.1fx, smallest %.1fx; decided by detcd only: %d, by Porcupine only: %d; disagreements: %d\n", decided, geomean, smallest, only_detcd, only_porcupine, disagree
    exit disagree > 0
  }' "$ROOT"/detcd.* "$ROOT"/porcupine.*
