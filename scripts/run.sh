#!/usr/bin/env bash
# Build and run the exporter on this host (root). Installs build dependencies
# first (idempotent). Arguments go to the exporter, e.g.
#   ./scripts/run.sh --check
#   ./scripts/run.sh --web.listen-address=127.0.0.1:9863
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >&2
cargo build --release --locked --bin bpfmap-exporter >&2
exec ./target/release/bpfmap-exporter "$@"
