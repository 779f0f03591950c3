#!/usr/bin/env bash
# Microbenchmarks (criterion): AEAD seal/open for every library behind the TransportAead seam,
# batch transfer between two threads through the rings, the replay window, and handshakes per
# second through the responder. Prints one markdown table of the medians at the end.
#
# Usage: perf/bench.sh [--quick] [FILTER]
#   --quick   1 s warm-up and 3 s of measurement per benchmark instead of criterion's 3 s + 5 s
#   FILTER    only benchmarks whose name contains it (criterion's filter), e.g. aead_seal
#
# The same as running, from the repository root:
#   cargo bench -p veil-dataplane --bench aead
#   cargo bench -p veil-dataplane --bench ring_transfer
#   cargo bench -p veil-dataplane --bench replay
#   cargo bench -p veil-control --bench handshake
# Criterion keeps its reports under $CARGO_TARGET_DIR/criterion (default target/criterion).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
args=()
filter=()
for a in "$@"; do
    case "$a" in
        --quick) args+=(--warm-up-time 1 --measurement-time 3) ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        -*) echo "bench.sh: unknown flag '$a'" >&2; exit 2 ;;
        *) filter=("$a") ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
started="$(date +%s)"
run() {
    echo "== cargo bench $*" >&2
    cargo bench --quiet "$@" -- "${args[@]}" "${filter[@]}" >&2
}
run -p veil-dataplane --bench aead
run -p veil-dataplane --bench ring_transfer
run -p veil-dataplane --bench replay
run -p veil-control --bench handshake

# Summarize the estimates written by this run.
python3 - "$target_dir/criterion" "$started" <<'EOF'
import json, os, sys

root, started = sys.argv[1], float(sys.argv[2])
rows = []
for dirpath, _, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    if os.path.getmtime(os.path.join(dirpath, "estimates.json")) < started:
        continue
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    ns = est["median"]["point_estimate"]
    thr = bench.get("throughput") or {}
    if "Bytes" in thr:
        rate = f"{thr['Bytes'] / ns:.3f} GB/s"
    elif "Elements" in thr:
        per_s = thr["Elements"] / ns * 1e9
        rate = f"{per_s / 1e6:.2f} M/s" if per_s >= 1e6 else f"{per_s / 1e3:.1f} k/s"
    else:
        rate = ""
    if ns >= 1e6:
        t = f"{ns / 1e6:.2f} ms"
    elif ns >= 1e3:
        t = f"{ns / 1e3:.2f} µs"
    else:
        t = f"{ns:.1f} ns"
    rows.append((bench["full_id"], t, rate))
print("| benchmark | median time | rate |")
print("|---|---:|---:|")
def key(r):
    return [int(p) if p.isdigit() else p for p in r[0].split("/")]
for r in sorted(rows, key=key):
    print("| " + " | ".join(r) + " |")
EOF
