#!/usr/bin/env bash
# Element-count benchmark (root): the census of N maps without counting (the
# baseline), with the default method and with walks forced, in one run; then
# one M-element hash map counted by each method. Prints markdown tables for
# BENCHMARKS.md.
#   ./scripts/bench-entries.sh [host|5.10|6.1|6.12] [N] [M]    default: host 10000 1000000
# A kernel name runs it in that kernel of the matrix under qemu (virtme-ng,
# software emulation; take /tmp/bpfmap-vm.lock around it on shared machines).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/lib/guest.sh"
where=${1:-host}
n=${2:-10000}
m=${3:-1000000}
cargo build --release --quiet --features testing --example bench_entries
bin=$root/target/release/examples/bench_entries
out=$root/results/bench-entries/$where
mkdir -p "$out"
rm -f "$out/bench.md"
echo "date: $(date -u +%F)  where: $where  host load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ $where == host ]]; then
    "$bin" maps "$n" big "$m" out "$out/bench.md"
    exit 0
fi
bench_in_guest bench-entries "$where" "$out" 3G \
    "$bin maps $n big $m out $out/bench.md > $out/stdout.log 2> $out/stderr.log"
