#!/usr/bin/env bash
# The kernel matrix: the same privileged test suite (every tests/root_*.rs
# binary, plus `bpfmap-exporter --check`) on this machine's kernel and on the
# pinned Debian kernels of scripts/vm/kernels.lock, booted under qemu with
# virtme-ng (software emulation: KVM does not work on this machine). The
# guests see the host's root file system and run the binaries built here.
#   scripts/vm/matrix.sh [host|5.10|6.1|6.12 ...]   default: host + every pinned kernel
# Env:
#   BPFMAP_VM_TIMEOUT       seconds per guest, boot to power-off (default 2100)
#   BPFMAP_VM_TEST_TIMEOUT  seconds per test binary inside a guest (default 600)
#   BPFMAP_VM_CHURN         BPFMAP_CHURN inside guests (default 5000)
#   BPFMAP_VM_TCG_THREAD    qemu's TCG threading, single or multi (default single)
#   BPFMAP_VM_PARALLEL      guests booted at once (default: the host's cores;
#                           each guest runs in one host thread)
#   BPFMAP_MATRIX_INJECT_FAILURE=1  every kernel reports one failing test:
#                           proves that the run then exits non-zero
# Results: results/matrix/<kernel>/ (logs, console, check output) and
# results/matrix.md (the tables). Exit 1 when any kernel failed a test, failed
# --check, logged a kernel BUG:/WARNING:/Oops, had a verifier rejection, timed
# out or never reported; 2 when the build or the kernel fetch failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
vm_timeout=${BPFMAP_VM_TIMEOUT:-2100}
churn=${BPFMAP_VM_CHURN:-5000}
tcg_thread=${BPFMAP_VM_TCG_THREAD:-single}
parallel=${BPFMAP_VM_PARALLEL:-$(nproc)}
((parallel >= 1)) || parallel=1
inject=${BPFMAP_MATRIX_INJECT_FAILURE:-}
t0=$SECONDS

names=(host)
while read -r n _; do
    [[ -z $n || $n == \#* ]] || names+=("$n")
done < "$root/scripts/vm/kernels.lock"
want=("$@")
for k in "${want[@]}"; do
    [[ " ${names[*]} " == *" $k "* ]] || {
        echo "matrix: unknown kernel '$k' (known: ${names[*]})" >&2
        exit 2
    }
done
selected() {
    ((${#want[@]} == 0)) && return 0
    local k
    for k in "${want[@]}"; do [[ $k == "$1" ]] && return 0; done
    return 1
}

mkdir -p "$root/results"
exec 9> "$root/results/.matrix.lock"
flock -n 9 || {
    echo "matrix: another matrix run holds results/.matrix.lock; waiting" >&2
    flock 9
}
results=$root/results/matrix
rm -rf "$results"
mkdir -p "$results"

# 1. Build once on the host. Binary paths come from cargo (CARGO_TARGET_DIR
#    is honoured); every tests/root_* binary is picked up.
echo "matrix: building" >&2
cargo build --release --locked --features testing --bin bpfmap-exporter --message-format=json-render-diagnostics \
    > "$results/build.json" || {
    echo "matrix: cargo build failed" >&2
    exit 2
}
cargo test --release --locked --features testing --no-run --message-format=json-render-diagnostics \
    > "$results/tests.json" || {
    echo "matrix: building the tests failed" >&2
    exit 2
}
python3 - "$results" << 'PY'
import json, sys
res = sys.argv[1]
def arts(f):
    for line in open(f"{res}/{f}"):
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable"):
            yield m
HOST_ONLY = {"root_web"}
with open(f"{res}/tests.list", "w") as out:
    seen = set()
    for m in arts("tests.json"):
        n = m["target"]["name"]
        # root_web tests HTTP serving (TLS, timeouts, single flight), which
        # does not depend on the kernel: it runs on the host in test.sh's
        # cargo test stage, not under emulation, where its timing-bound
        # cases (200 simultaneous scrapes, timeouts) measure qemu instead.
        if n in HOST_ONLY:
            continue
        if n.startswith("root_") and "test" in m["target"]["kind"] and n not in seen:
            seen.add(n)
            out.write(f"{n} {m['executable']}\n")
with open(f"{res}/exporter.path", "w") as out:
    for m in arts("build.json"):
        if m["target"]["name"] == "bpfmap-exporter" and "bin" in m["target"]["kind"]:
            out.write(m["executable"] + "\n")
PY
sort -o "$results/tests.list" "$results/tests.list"
bin=$(head -1 "$results/exporter.path")
if [[ ! -s $results/tests.list || ! -x $bin ]]; then
    echo "matrix: no root test binaries or no exporter binary were built" >&2
    exit 2
fi
echo "matrix: test binaries: $(cut -d' ' -f1 "$results/tests.list" | tr '\n' ' ')" >&2

# 2. The pinned kernels (cached in .cache/kernels).
vms=()
for n in "${names[@]:1}"; do selected "$n" && vms+=("$n"); done
kernels=""
if ((${#vms[@]})); then
    for tool in vng qemu-system-x86_64; do
        command -v "$tool" > /dev/null || {
            echo "matrix: $tool is missing: run scripts/install-deps.sh" >&2
            exit 2
        }
    done
    kernels=$("$root/scripts/vm/fetch-kernels.sh" "${vms[@]}") || exit 2
fi

# 3. The host kernel, directly.
if selected host; then
    dir=$results/host
    mkdir -p "$dir"
    cp "$results/tests.list" "$dir/"
    echo "matrix: host $(uname -r)" >&2
    dmesg > "$dir/dmesg.before" 2> /dev/null || true
    start=$SECONDS
    BPFMAP_MATRIX_INJECT_FAILURE=$inject "$root/scripts/vm/guest.sh" "$dir" "$bin" host
    echo $? > "$dir/vm.rc"
    echo "$((SECONDS - start))" > "$dir/vm.seconds"
    # The host's console for this run: kernel messages logged since it began.
    dmesg 2> /dev/null | tail -n +"$(($(wc -l < "$dir/dmesg.before") + 1))" > "$dir/console.log"
    rm -f "$dir/dmesg.before"
    echo "matrix: host done in $(cat "$dir/vm.seconds") s" >&2
fi

# 4. The pinned kernels under qemu, $parallel at a time, in kernels.lock's
#    order (the slowest guest first). TCG runs each guest in one host thread,
#    so a guest per host core keeps each guest's speed while the matrix takes
#    about the longest guest's time instead of the sum.
run_guest() {
    local name=$1 vmlinuz=$2 dir=$results/$1 start=$SECONDS attempt vm_rc
    mkdir -p "$dir"
    cp "$results/tests.list" "$dir/"
    echo "matrix: booting $name ($vmlinuz)" >&2
    # TCG runs both vCPUs in one thread: with a thread per vCPU, guests
    # have died of `Oops: int3` at text the kernel had just patched (6.12,
    # at boot and during root_lifecycle) and of soft lockups (5.10).
    # A guest whose kernel dies while booting, before guest.sh has written
    # anything (no `release`), ran none of our code: such a boot is retried
    # once; its console is kept as console.boot1.log. A splat after
    # guest.sh started is never retried.
    for attempt in 1 2; do
        # timeout signals vng's whole process group (qemu included).
        timeout --kill-after=20 "$vm_timeout" vng --run "$vmlinuz" --disable-kvm --cpus 2 --memory 2G \
            --rwdir "$dir" --verbose \
            --exec "BPFMAP_CHURN=$churn BPFMAP_VM_TEST_TIMEOUT=${BPFMAP_VM_TEST_TIMEOUT:-600} BPFMAP_MATRIX_INJECT_FAILURE=$inject $root/scripts/vm/guest.sh $dir $bin vm" \
            --qemu-opts="-accel tcg,thread=$tcg_thread" \
            > "$dir/console.log" 2>&1 < /dev/null
        vm_rc=$?
        if ((attempt == 1)) && [[ ! -e $dir/release ]] && grep -qE 'Kernel panic|Oops:' "$dir/console.log"; then
            mv "$dir/console.log" "$dir/console.boot1.log"
            echo "matrix: $name died while booting, before any test (console.boot1.log: $(grep -m1 -oE 'Oops:.*|Kernel panic.*' "$dir/console.boot1.log")); booting it again" >&2
            continue
        fi
        break
    done
    echo $vm_rc > "$dir/vm.rc"
    echo "$((SECONDS - start))" > "$dir/vm.seconds"
    echo "matrix: $name done in $(cat "$dir/vm.seconds") s (vng exit $(cat "$dir/vm.rc"))" >&2
}
running=0
while read -r name vmlinuz; do
    [[ -z $name ]] && continue
    if ((running >= parallel)); then
        wait -n
        running=$((running - 1))
    fi
    run_guest "$name" "$vmlinuz" &
    running=$((running + 1))
done <<< "$kernels"
wait

# 5. Verdicts and the tables.
echo "$((SECONDS - t0))" > "$results/total.seconds"
python3 "$root/scripts/py/matrix_report.py" "$results" "$root/results/matrix.md"
rc=$?
echo "matrix: $((SECONDS - t0)) s in all; tables in results/matrix.md, logs in results/matrix/<kernel>/" >&2
exit $rc
