#!/usr/bin/env bash
# Start-up memory benchmark (root): `bpfmap-exporter --check` (load every
# collector, take one census, exit) in a fresh memory cgroup, for this build
# and for a baseline build, on this kernel and on the matrix kernels. Reports
# the memory cgroup's peak (user plus kernel memory: on kernels that charge
# them, the verifier's states and the maps), its ratio to the baseline, and
# what the verifier did for each program of this build.
#   ./scripts/bench-startup.sh [--baseline REV] [--runs N] [host|5.10|6.1|6.12 ...]
# Default: baseline ffb858d (main before the in-flight walk was flattened),
# 3 runs per binary, host + every pinned kernel. Prints markdown for
# BENCHMARKS.md; raw results in results/bench-startup/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/lib/baseline.sh"

if [[ ${1:-} == --inner ]]; then
    # Inside a guest (or on the host): <out> <runs> <binary>...
    out=$2 runs=$3
    shift 3
    if [[ ! -d /sys/fs/bpf/ ]] || ! mountpoint -q /sys/fs/bpf; then mount -t bpf bpf /sys/fs/bpf; fi
    uname -r > "$out/release"
    i=0
    for bin in "$@"; do
        for r in $(seq "$runs"); do
            scripts/memcg-run.sh --out "$out/peak.$i.$r" -- "$bin" --check --log.level=error \
                > "$out/check.$i.$r" 2> /dev/null || true
        done
        i=$((i + 1))
    done
    touch "$out/done"
    exit 0
fi

baseline=ffb858d
runs=3
kernels=()
while (($#)); do
    case $1 in
        --baseline) baseline=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        *) kernels+=("$1"); shift ;;
    esac
done
((${#kernels[@]})) || kernels=(host 5.10 6.1 6.12)

./scripts/install-deps.sh > /dev/null
cargo build --release --quiet --locked --bin bpfmap-exporter
cur=$root/target/release/bpfmap-exporter
base=$(baseline_exporter "$root" bench-startup "$baseline")

res=$root/results/bench-startup
rm -rf "$res"
mkdir -p "$res"
vms=()
for k in "${kernels[@]}"; do
    mkdir -p "$res/$k"
    if [[ $k == host ]]; then
        "$0" --inner "$res/host" "$runs" "$base" "$cur"
    else
        vms+=("$k")
    fi
done
if ((${#vms[@]})); then
    while read -r name vmlinuz; do
        [[ -z $name ]] && continue
        timeout --kill-after=20 900 vng --run "$vmlinuz" --disable-kvm --cpus 2 --memory 2G \
            --rwdir "$res/$name" --verbose --qemu-opts="-accel tcg,thread=single" \
            --exec "$root/scripts/bench-startup.sh --inner $res/$name $runs $base $cur" \
            > "$res/$name/console.log" 2>&1 < /dev/null || true
    done <<< "$("$root/scripts/vm/fetch-kernels.sh" "${vms[@]}")"
fi

echo "date: $(date -u +%F)  host: $(uname -r)  cpus: $(nproc)  baseline: $baseline ($(git log -1 --format=%h "$baseline" 2>/dev/null || echo '?'))  this build: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')  runs: $runs"
python3 - "$res" "$runs" "${kernels[@]}" <<'PY'
import os, re, sys, statistics
res, runs, kernels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def fields(path):
    try:
        return dict(kv.split("=", 1) for kv in open(path).read().split() if "=" in kv)
    except OSError:
        return {}
mib = lambda b: b / 1048576
print()
print("| kernel | release | baseline peak MiB (kernel part) | this build peak MiB (kernel part) | ratio | peak from | exits (baseline / this) |")
print("|---|---|---|---|---|---|---|")
progs = {}
for k in kernels:
    d = os.path.join(res, k)
    rel = open(os.path.join(d, "release")).read().strip() if os.path.exists(os.path.join(d, "release")) else "?"
    cells = []
    for i in (0, 1):
        peaks, kmem, rcs, src = [], [], [], "-"
        for r in range(1, runs + 1):
            f = fields(os.path.join(d, f"peak.{i}.{r}"))
            if not f:
                rcs.append("none")
                continue
            peaks.append(int(f["memcg_peak_bytes"]))
            if f["memcg_kmem_peak_bytes"].isdigit():
                kmem.append(int(f["memcg_kmem_peak_bytes"]))
            rcs.append(f["rc"])
            src = f["peak_source"]
        cells.append((peaks, kmem, rcs, src))
    def show(c):
        peaks, kmem, _, _ = c
        if not peaks:
            return "-"
        s = f"{mib(max(peaks)):.1f}"
        return s + (f" ({mib(max(kmem)):.1f})" if kmem else "")
    (bp, _, brc, _), (tp, _, trc, src) = cells
    ratio = f"{max(tp) / max(bp):.3f}" if bp and tp else "-"
    print(f"| {k} | {rel} | {show(cells[0])} | {show(cells[1])} | {ratio} | {src} | {','.join(brc)} / {','.join(trc)} |")
    check = open(os.path.join(d, "check.1.1")).read() if os.path.exists(os.path.join(d, "check.1.1")) else ""
    for m in re.finditer(r"^program=(\S+) object=(\S+) verified_insns=(\d+) peak_states=(\d+) total_states=(\d+)", check, re.M):
        progs.setdefault((m.group(2), m.group(1)), {})[k] = (m.group(3), m.group(4), m.group(5))
print()
print("Verifier cost of this build, per program (instructions processed / peak states / total states; `-` = not loaded):")
print()
print("| object | program | " + " | ".join(kernels) + " |")
print("|---|---|" + "---|" * len(kernels))
for (obj, p), per in sorted(progs.items()):
    print(f"| {obj} | {p} | " + " | ".join("/".join(per[k]) if k in per else "-" for k in kernels) + " |")
PY
