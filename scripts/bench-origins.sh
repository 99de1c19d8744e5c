#!/usr/bin/env bash
# Origins benchmark (root), printed as markdown for BENCHMARKS.md:
#   ./scripts/bench-origins.sh [cost [N [DEPTH [ROUNDS]]]]   default: 20000 20 5
#     map create+close from a C program with frame pointers, DEPTH frames
#     down, with the lifecycle programs attached and origins off (the
#     baseline), on with build ids, on with raw addresses only, in rotated
#     alternating rounds;
#   ./scripts/bench-origins.sh memory [RECORDS]               default: the
#     --collector.origins.max-stacks default; the store filled with distinct
#     48-frame stacks (nothing shared), its bytes and the RSS growth.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --features testing --example bench_origins
echo "date: $(date -u +%F)  kernel: $(uname -r)  cpus: $(nproc)"
exec target/release/examples/bench_origins "$@"
