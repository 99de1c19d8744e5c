#!/usr/bin/env bash
# Origins benchmark (root), printed as markdown for BENCHMARKS.md:
#   ./scripts/bench-origins.sh [KERNEL] [cost [N [DEPTH [ROUNDS]]]]   default: 20000 20 5
#     map create+close from a C program with frame pointers, DEPTH frames
#     down, with the lifecycle programs attached and origins off (the
#     baseline), on with build ids, on with raw addresses only, in rotated
#     alternating rounds;
#   ./scripts/bench-origins.sh memory [RECORDS]               default: the
#     --collector.origins.max-stacks default; the store filled with distinct
#     48-frame stacks (nothing shared), its bytes and the RSS growth.
# KERNEL (5.10, 6.1, 6.12) runs it in that kernel of the matrix under qemu
# (virtme-ng, software emulation: every figure is many times the host's;
# take /tmp/bpfmap-vm.lock around it on shared machines).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/lib/guest.sh"
where=host
case ${1:-} in
5.10 | 6.1 | 6.12) where=$1; shift ;;
esac
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --features testing --example bench_origins
bin=$root/target/release/examples/bench_origins
if [[ $where == host ]]; then
    echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)"
    exec "$bin" "$@"
fi
out=$root/results/bench-origins/$where
echo "date: $(date -u +%F)  kernel: $where under qemu (software emulation)  host load: $(cut -d' ' -f1-3 /proc/loadavg)"
bench_in_guest bench-origins "$where" "$out" 2G \
    "cd $root && $bin $* > $out/bench.md 2> $out/stderr.log"
