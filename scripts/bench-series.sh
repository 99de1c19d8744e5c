#!/usr/bin/env bash
# Cardinality benchmark (root): series and bytes per scrape with default
# flags at N live maps, this build against a baseline binary in the same run
# (examples/bench_census.rs --series).
#   ./scripts/bench-series.sh BASELINE_BINARY [N ...]     default N: 100 2000 10000
# A baseline from another commit:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release --bin bpfmap-exporter)
# Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! -x $1 ]]; then
    echo "usage: scripts/bench-series.sh BASELINE_BINARY [N ...] (the baseline must be an executable exporter build)" >&2
    exit 2
fi
baseline=$1
shift
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --bin bpfmap-exporter
cargo build --release --quiet --features testing --example bench_census
echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)  maps on the node before: $(bpftool map list -j | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
sizes=("$@")
((${#sizes[@]})) || sizes=(100 2000 10000)
exec target/release/examples/bench_census --series target/release/bpfmap-exporter "$baseline" "${sizes[@]}"
