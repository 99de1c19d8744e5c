#!/usr/bin/env bash
# Programs, links and roots at scale (root): N maps, P raw-tracepoint
# programs (each referencing 3 of the maps) and L links (BPF_RAW_TRACEPOINT_OPEN
# on xdp_exception / xdp_bulk_tx, which do not fire without XDP programs),
# all held by one child process and freed with it. In one run
# (examples/bench_census.rs --programs):
#   - the baseline build's default scrape of /metrics with the maps alone,
#   - this build's default scrape with the maps alone, then with the
#     programs and links (and, for reference, the baseline on that node and
#     this build with --no-collector.links),
#   - `bpftool map show --json` + `bpftool prog show --json` over the same
#     objects,
#   - the series in this build's default exposition.
# R rounds (each: maps alone, then programs and links added, then dropped) of
# one cold and S warm scrapes per exporter, each started afresh; median and
# p90 over all R*S warm scrapes, bpftool median of 3*R.
#   ./scripts/bench-programs.sh [--baseline REV] [N P L [S [R]]]
# Default: baseline c8f4395 (main before programs were census objects),
# 10000 2000 2000 21 6 (six rounds: one round's ratio varies widely on a
# shared host). The baseline is built once into
# .cache/bench-programs/baseline-REV/. Prints markdown for BENCHMARKS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/lib/baseline.sh"
baseline=c8f4395
if [[ ${1:-} == --baseline ]]; then
    baseline=$2
    shift 2
fi
# The benchmark and everything it starts (exporters, bpftool, curl) run at
# this niceness, the same for both builds (the host is shared with builds).
nice=${BENCH_NICE:--10}
n=${1:-10000} p=${2:-2000} l=${3:-2000} s=${4:-21} r=${5:-6}

./scripts/install-deps.sh > /dev/null
if ! mount | grep -q 'type bpf'; then mount -t bpf bpf /sys/fs/bpf; fi
cargo build --release --quiet --locked --bin bpfmap-exporter
cargo build --release --quiet --locked --features testing --example bench_census
base=$(baseline_exporter "$root" bench-programs "$baseline")

echo "date: $(date -u '+%F %T') UTC  kernel: $(uname -r)  cpus: $(nproc)  bpftool: $(bpftool version | head -1)  baseline: $baseline ($(git log -1 --format=%h "$baseline"))  this build: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty src')  load: $(cut -d' ' -f1-3 /proc/loadavg)  nice: $nice"
nice -n "$nice" target/release/examples/bench_census --programs target/release/bpfmap-exporter \
    "$base" "$n" "$p" "$l" "$s" "$r"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
