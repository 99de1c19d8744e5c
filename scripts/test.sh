#!/usr/bin/env bash
# The whole test suite, as root on Debian 12. Installs what it needs first.
#   ./scripts/test.sh            everything (unit, root, a 3-minute soak, kernel
#                                matrix, deploy, the image run as deployed, e2e)
#   ./scripts/test.sh --quick    unit + root tests on this kernel only
# Each stage prints its duration; the first failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: the suite loads BPF programs and must run as root (sudo ./scripts/test.sh)" >&2
    exit 2
fi

stage() {
    local name=$1; shift
    local t0=$SECONDS
    echo "=== $name"
    "$@"
    echo "=== $name: ok ($((SECONDS - t0)) s)"
}

stage "install dependencies" ./scripts/install-deps.sh
export CARGO_TERM_COLOR=never
stage "format" cargo fmt --check
stage "dead code" ./scripts/check-dead-code.sh
stage "build" cargo build --release --all-targets --locked --features testing
# Unit tests and root integration tests. Root tests share the kernel's map
# table, so they run one at a time.
stage "cargo test" cargo test --release --locked --features testing -- --test-threads=1
if ((quick)); then
    echo "test.sh: quick run done"
    exit 0
fi
# RSS drift and fd count under churn, scraped every second (the documented
# soak is an hour: scripts/dev soak --duration 1h).
# The binary of the build stage (no rebuild without the testing feature).
stage "soak (3 min)" ./scripts/soak.sh --duration 3m --binary target/release/bpfmap-exporter --out .cache/soak-suite
for s in scripts/vm/matrix.sh scripts/check-deploy.sh tests/container/run.sh tests/e2e/run.sh; do
    if [[ -x $s ]]; then
        stage "$s" "$s"
    else
        echo "test.sh: $s is missing" >&2
        exit 1
    fi
done
echo "test.sh: all stages passed"
