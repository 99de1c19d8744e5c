#!/usr/bin/env bash
# Runs inside a matrix guest (or directly on the host): `bpfmap-exporter
# --check`, a memory-semantics probe, then the privileged test binaries listed
# in <results>/tests.list (one at a time: they share the kernel's map table).
#   guest.sh <results-dir> <exporter-binary> vm|host
# Writes into <results>/: release, env.txt, check.txt/check.stderr/check.rc,
# memory.txt, <test>.log/.rc/.seconds per test binary, dmesg.txt, and last
# `done`. A guest that never writes `done` has failed.
set -uo pipefail
out=$1
bin=$2
where=${3:-vm}
mkdir -p "$out"
uname -r > "$out/release"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
if [[ $where == vm ]]; then
    # virtme-ng mounts proc, sys and devtmpfs; bpffs and tracefs are ours to
    # mount (tracepoint attach reads tracefs event ids).
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
    mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
fi
# RLIMIT_MEMLOCK is left at the kernel default on purpose: 5.10 charges maps
# to it (64 KiB there), and libbpf must raise it itself.
{
    echo "memlock_rlimit_kib=$(ulimit -l)"
    echo "bpffs=$(mountpoint -q /sys/fs/bpf && echo mounted || echo missing)"
    echo "promtool=$(command -v promtool || echo missing)"
    echo "bpftool=$(command -v bpftool || echo missing)"
    echo "nproc=$(nproc)"
} > "$out/env.txt"
export RUST_BACKTRACE=1
cd "$(dirname "$0")/../.." # tests find tests/golden etc. from the checkout
[[ -n ${BPFMAP_CHURN:-} ]] && export BPFMAP_CHURN
test_timeout=${BPFMAP_VM_TEST_TIMEOUT:-600}

# 1. The exporter's own smoke test: attach mode per probe, features, what
#    each program cost the verifier; run in a fresh memory cgroup, whose peak
#    (user plus kernel memory) is the start-up cost (check.memcg).
rm -f "$out/check.memcg"
timeout "$test_timeout" scripts/memcg-run.sh --out "$out/check.memcg" -- \
    "$bin" --check --log.level=warn > "$out/check.txt" 2> "$out/check.stderr"
echo $? > "$out/check.rc"

# 2. What fdinfo memlock means here: a BPF_F_NO_PREALLOC hash reads the same
#    before and after 64 inserts unless the kernel reports real usage (6.4+).
memlock_of() { bpftool map show pinned "$1" 2>/dev/null | sed -n 's/.*memlock \([0-9]*\)B.*/\1/p'; }
if command -v bpftool > /dev/null; then
    p=/sys/fs/bpf/bpfmap_matrix_memprobe_$$
    if bpftool map create "$p" type hash key 4 value 8 entries 1024 name memprobe flags 1 2> "$out/memory.err"; then
        before=$(memlock_of "$p")
        for i in $(seq 0 63); do
            bpftool map update pinned "$p" key $i 0 0 0 value 1 0 0 0 0 0 0 0 2>> "$out/memory.err"
        done
        after=$(memlock_of "$p")
        rm -f "$p"
        echo "memlock_empty=$before memlock_64_elems=$after real_memory=$([[ -n $before && $before != "$after" ]] && echo 1 || echo 0)" > "$out/memory.txt"
    fi
fi

# 3. The privileged test binaries (tests/root_*.rs, built on the host).
while read -r name path; do
    [[ -z $name ]] && continue
    start=$(date +%s)
    timeout "$test_timeout" "$path" --test-threads=1 > "$out/$name.log" 2>&1
    echo $? > "$out/$name.rc"
    echo $(($(date +%s) - start)) > "$out/$name.seconds"
done < "$out/tests.list"
# Proves that a failing test fails the matrix (scripts/vm/matrix.sh docs).
if [[ -n ${BPFMAP_MATRIX_INJECT_FAILURE:-} ]]; then
    echo "test injected_failure ... FAILED (BPFMAP_MATRIX_INJECT_FAILURE)" > "$out/injected_failure.log"
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out" >> "$out/injected_failure.log"
    echo 101 > "$out/injected_failure.rc"
fi
if [[ $where == vm ]]; then
    dmesg > "$out/dmesg.txt" 2> /dev/null || true
fi
sync
touch "$out/done"
