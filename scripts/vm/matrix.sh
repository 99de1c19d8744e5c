#!/usr/bin/env bash
# The kernel matrix: the same privileged test suite on this machine's kernel
# and on the pinned Debian kernels (scripts/vm/kernels.lock) under qemu
# (virtme-ng, software emulation: KVM does not work on this machine).
#   scripts/vm/matrix.sh [kernel-name ...]     default: host + every pinned kernel
# Env: BPFMAP_VM_TIMEOUT (s per guest, default 900), BPFMAP_VM_CHURN (churn
# cycles inside guests, default 5000), BPFMAP_MATRIX_INJECT_FAILURE=1 (makes
# every guest report a failing test: proves the run then fails).
# Prints a table per kernel and writes results/matrix.md; exits non-zero when
# any kernel failed a test, logged BUG:/WARNING:, had a verifier rejection, or
# never reported.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
results=$root/results/matrix
rm -rf "$results"
mkdir -p "$results"
timeout_s=${BPFMAP_VM_TIMEOUT:-900}
churn=${BPFMAP_VM_CHURN:-5000}
t0=$SECONDS

# 1. Build once on the host; the guests run these binaries from the host's
#    file system.
cargo build --release --locked --bin bpfmap-exporter >&2 || exit 1
cargo test --release --locked --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"].startswith("root_"):
        print(m["target"]["name"], m["executable"])
' | sort -u > "$results/tests.list"
if [[ ! -s $results/tests.list ]]; then
    echo "matrix: no root test binaries were built" >&2
    exit 1
fi
bin=$root/target/release/bpfmap-exporter

kernels=$("$root/scripts/vm/fetch-kernels.sh") || exit 1
want=("$@")
selected() { ((${#want[@]} == 0)) && return 0; local k; for k in "${want[@]}"; do [[ $k == "$1" ]] && return 0; done; return 1; }

# 2. Host kernel, directly.
if selected host; then
    mkdir -p "$results/host"
    cp "$results/tests.list" "$results/host/"
    echo "matrix: host $(uname -r)" >&2
    before=$(dmesg 2>/dev/null | wc -l)
    start=$SECONDS
    "$root/scripts/vm/guest.sh" "$results/host" "$bin"
    echo "$((SECONDS - start))" > "$results/host/vm.seconds"
    # The host's console for this run: kernel messages logged since it began.
    dmesg 2>/dev/null | tail -n +"$((before + 1))" > "$results/host/console.log"
fi

# 3. Each pinned kernel under qemu, one after the other (2 cores).
while read -r name vmlinuz; do
    selected "$name" || continue
    dir=$results/$name
    mkdir -p "$dir"
    cp "$results/tests.list" "$dir/"
    echo "matrix: booting $name ($vmlinuz)" >&2
    start=$SECONDS
    timeout --kill-after=30 "$timeout_s" vng --run "$vmlinuz" --disable-kvm --cpus 2 --memory 2G \
        --rwdir "$dir" --verbose \
        --exec "BPFMAP_CHURN=$churn BPFMAP_MATRIX_INJECT_FAILURE=${BPFMAP_MATRIX_INJECT_FAILURE:-} $root/scripts/vm/guest.sh $dir $bin" \
        > "$dir/console.log" 2>&1 < /dev/null
    echo "$((SECONDS - start))" > "$dir/vm.seconds"
done <<< "$kernels"

# 4. Verdicts and the table.
python3 "$root/scripts/vm/report.py" "$results" "$root/results/matrix.md"
rc=$?
echo "matrix: $((SECONDS - t0)) s in all" >&2
exit $rc
