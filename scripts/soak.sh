#!/usr/bin/env bash
# Soak (root): the exporter scraped every second under the simulator's churn,
# RSS and fd count sampled after each scrape (scripts/py/soak.py).
#   ./scripts/soak.sh --duration 1h                          the documented soak
#   ./scripts/soak.sh --duration 3m                          the test-suite stage
#   ./scripts/soak.sh --duration 1h --binary /tmp/bpfmap-exporter
# Samples go to .cache/soak/samples.csv (--out DIR); the last lines print the
# figures and PASS or FAIL (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
# Without --binary, the exporter is built first (a release build).
given=0
for a in "$@"; do
    [[ $a == --binary || $a == --binary=* ]] && given=1
done
if ((!given)); then
    cargo build --release --quiet --bin bpfmap-exporter
fi
exec python3 scripts/py/soak.py "$@"
