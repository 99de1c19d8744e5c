#!/usr/bin/env bash
# Lifecycle benchmark (root), in one run: the floor (an empty program at each
# attach point, the named baseline), per-event cost of each lifecycle program
# from the kernel's BPF stats next to it, and a tight map create/close loop
# (and a lookup loop) with nothing, the empty twin, and our programs
# attached, in rotated alternating rounds.
#   ./scripts/bench-lifecycle.sh [CYCLES [ROUNDS]]     default: 20000 7
# Burst mode: N map creations between two scrapes (held across a scrape, and
# created and closed between two), counted as created/destroyed or lost:
#   ./scripts/bench-lifecycle.sh burst [N]              default: 40000
# Prints markdown for BENCHMARKS.md. The classic tracepoint needs tracefs
# (mounted here if missing); the tp_btf/raw_tp rows need nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
if [ "${1:-}" = burst ]; then
	shift
	cargo build --release --quiet --features testing --example bench_lifecycle_burst
	echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)"
	exec target/release/examples/bench_lifecycle_burst "$@"
fi
cargo build --release --quiet --features testing --example bench_lifecycle
echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)"
exec target/release/examples/bench_lifecycle "$@"
