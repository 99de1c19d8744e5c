#!/usr/bin/env bash
# Census benchmark (root): N live maps, a full exporter scrape vs the baseline
# `bpftool map show --json` over the same maps, and the exporter's peak RSS.
#   ./scripts/bench-census.sh [N ...]     default: 10000 100000
# Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --bin bpfmap-exporter
cargo build --release --quiet --features testing --example bench_census
echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)  bpftool: $(bpftool version | head -1)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
sizes=("$@")
((${#sizes[@]})) || sizes=(10000 100000)
exec target/release/examples/bench_census target/release/bpfmap-exporter "${sizes[@]}"
