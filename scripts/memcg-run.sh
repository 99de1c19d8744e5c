#!/usr/bin/env bash
# Run a command in a fresh memory cgroup and print that cgroup's peak usage
# (user plus kernel memory) when it exits. As root; works on cgroup v1 (the
# memory controller's own hierarchy) and v2.
#   scripts/memcg-run.sh [--limit BYTES] [--out FILE] -- <command> [args...]
# Prints, on stderr (or into FILE), one line:
#   memcg_peak_bytes=<n> memcg_kmem_peak_bytes=<n|unknown> peak_source=<kernel|sampled> limit_bytes=<n|max> rc=<rc>
# peak_source=kernel: the kernel's own high-water mark (v1
# memory.max_usage_in_bytes, v2 memory.peak on 5.19+); sampled: v2 before
# 5.19 keeps none, so memory.current is sampled every 5 ms (a lower bound).
# Exits with the command's status.
set -uo pipefail
limit=max
out=/dev/stderr
while (($#)); do
    case $1 in
        --limit) limit=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
(($#)) || { echo "usage: $0 [--limit BYTES] [--out FILE] -- <command> [args...]" >&2; exit 2; }

v1=$(awk '$9 == "cgroup" && $NF ~ /(^|,)memory(,|$)/ {print $5; exit}' /proc/self/mountinfo)
v2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
name=bpfmap-memcg-run-$$
if [[ -n $v1 ]]; then
    cg=$v1/$name
    mkdir "$cg"
    [[ $limit != max ]] && echo "$limit" > "$cg/memory.limit_in_bytes"
elif [[ -n $v2 ]]; then
    if ! grep -qw memory "$v2/cgroup.subtree_control"; then
        echo +memory > "$v2/cgroup.subtree_control" || {
            echo "memcg-run: cannot enable the memory controller in $v2" >&2; exit 2; }
    fi
    cg=$v2/$name
    mkdir "$cg"
    echo "$limit" > "$cg/memory.max"
    # No swap: a limit must be a limit.
    [[ -f $cg/memory.swap.max ]] && echo 0 > "$cg/memory.swap.max"
else
    echo "memcg-run: no memory cgroup hierarchy is mounted" >&2
    exit 2
fi
# The child moves itself in before it execs, so nothing it runs is charged
# elsewhere.
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$cg" "$@" &
child=$!
source=kernel
max=0
if [[ -z $v1 && ! -f $cg/memory.peak ]]; then
    source=sampled
    while kill -0 "$child" 2> /dev/null; do
        cur=$(cat "$cg/memory.current" 2> /dev/null || echo 0)
        ((cur > max)) && max=$cur
        sleep 0.005
    done
fi
wait "$child"
rc=$?
if [[ -n $v1 ]]; then
    peak=$(cat "$cg/memory.max_usage_in_bytes")
    kmem=$(cat "$cg/memory.kmem.max_usage_in_bytes" 2> /dev/null || echo unknown)
elif [[ $source == kernel ]]; then
    peak=$(cat "$cg/memory.peak")
    kmem=unknown
else
    peak=$max
    kmem=unknown
fi
# Charges of freed pages can outlive the processes a moment.
for _ in $(seq 50); do rmdir "$cg" 2> /dev/null && break; sleep 0.1; done
echo "memcg_peak_bytes=$peak memcg_kmem_peak_bytes=$kmem peak_source=$source limit_bytes=$limit rc=$rc" >> "$out"
exit "$rc"
