#!/usr/bin/env bash
# Load and abuse benchmark of the transport (root): at N live maps, for this
# build and a baseline build in the same run, the exporter's peak RSS while
# 50 clients list /api/v1/maps?limit=1000 and 50 scrape /metrics at once,
# and how long a fresh client waits while 520 connections pipeline
# GET /metrics and never read (examples/bench_abuse.rs).
#   ./scripts/bench-abuse.sh BASELINE_BINARY [N ...]     default N: 10000 100000
# (BASELINE_BINARY "-": this build alone)
# A baseline from another commit:
#   git worktree add /tmp/base <rev> && (cd /tmp/base && cargo build --release --bin bpfmap-exporter)
# Prints a markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ( $1 != - && ! -x $1 ) ]]; then
    echo "usage: scripts/bench-abuse.sh BASELINE_BINARY [N ...] (the baseline must be an executable exporter build)" >&2
    exit 2
fi
baseline=$1
shift
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --bin bpfmap-exporter
cargo build --release --quiet --features testing --example bench_census --example bench_abuse
echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)  commit: $(git rev-parse --short HEAD)"
sizes=("$@")
((${#sizes[@]})) || sizes=(10000 100000)
exec target/release/examples/bench_abuse target/release/bpfmap-exporter "$baseline" "${sizes[@]}"
