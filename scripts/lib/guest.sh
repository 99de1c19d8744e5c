# Sourced by the benchmark scripts that can run in a kernel of the matrix.

# bench_in_guest NAME KERNEL OUT MEMORY COMMAND: boot KERNEL (fetched by
# scripts/vm/fetch-kernels.sh) under qemu with software emulation (virtme-ng,
# the host's root shared read-only, OUT writable), mount bpffs and tracefs
# there as the matrix guest does (scripts/vm/guest.sh), run COMMAND, which
# writes its markdown to OUT/bench.md, and print that file. Fails, with the
# guest's last lines, when the guest left no result.
bench_in_guest() {
    local name=$1 kernel=$2 out=$3 memory=$4 command=$5
    local root vmlinuz
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    vmlinuz=$("$root/scripts/vm/fetch-kernels.sh" "$kernel" | awk '{print $2}')
    mkdir -p "$out"
    rm -f "$out/bench.md"
    timeout --kill-after=20 1800 vng --run "$vmlinuz" --disable-kvm --cpus 2 --memory "$memory" \
        --rwdir "$out" --verbose \
        --exec "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; $command" \
        > "$out/console.log" 2>&1 < /dev/null || true
    if [[ ! -s $out/bench.md ]]; then
        echo "$name: no result from the $kernel guest (see $out/)" >&2
        tail -20 "$out/console.log" "$out/stderr.log" >&2 || true
        return 1
    fi
    cat "$out/bench.md"
}
