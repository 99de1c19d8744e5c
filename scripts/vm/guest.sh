#!/usr/bin/env bash
# Runs inside a matrix guest (or directly on the host): the privileged test
# binaries listed in <results>/tests.list, then `bpfmap-exporter --check`.
# Writes into <results>/: release, <test>.log and <test>.rc per test binary,
# check.txt/check.rc, dmesg.txt, and finally `done` (a guest that never
# writes it has failed).
#   guest.sh <results-dir> <exporter-binary>
set -uo pipefail
out=$1
bin=$2
mkdir -p "$out"
uname -r > "$out/release"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
# Tests that scale with the kernel's speed read these (software-emulated
# guests are ~10x slower than the host).
[[ -n ${BPFMAP_CHURN:-} ]] && export BPFMAP_CHURN
export RUST_BACKTRACE=1
cd "$(dirname "$0")/../.."   # tests find tests/golden etc. from the checkout
while read -r name path; do
    [[ -z $name ]] && continue
    start=$(date +%s)
    timeout 900 "$path" --test-threads=1 > "$out/$name.log" 2>&1
    echo $? > "$out/$name.rc"
    echo $(( $(date +%s) - start )) > "$out/$name.seconds"
done < "$out/tests.list"
# The matrix check can inject a failure to prove that a failing test fails
# the run (see docs in README, "Kernel matrix").
if [[ -n ${BPFMAP_MATRIX_INJECT_FAILURE:-} ]]; then
    echo "test injected_failure ... FAILED (BPFMAP_MATRIX_INJECT_FAILURE)" > "$out/injected_failure.log"
    echo 101 > "$out/injected_failure.rc"
fi
"$bin" --check --log.level=warn > "$out/check.txt" 2> "$out/check.stderr"
echo $? > "$out/check.rc"
dmesg > "$out/dmesg.txt" 2>/dev/null || true
sync
touch "$out/done"
