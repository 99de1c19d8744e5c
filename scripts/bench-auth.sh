#!/usr/bin/env bash
# Basic-auth abuse benchmark (root, loopback only): this build against a
# baseline build in the same run, each a fresh exporter with a cost-10
# basic-auth web config (scripts/py/bench_auth.py):
#   - timing: median 401 time of the known user vs an unknown user;
#   - flood: N connections sending wrong passwords while a scraper with the
#     good credential scrapes /metrics every 250 ms (success, p50, p99);
#   - rewrites: non-atomic rewrites of the config (truncate, three pieces)
#     while clients without credentials ask: unauthenticated 200s;
#   - shutdown: seconds from SIGTERM to exit behind a queue of N checks.
#   ./scripts/bench-auth.sh [--baseline REV] [--baseline-bin PATH] [--bin PATH]
#                           [--flood N] [--seconds S] [--rewrites N]
# --bin and --baseline-bin use binaries already built instead of building.
# Default: baseline ffb858d (main before this work), 200 connections, 60 s
# (past the 256 wrong passwords that empty the baseline's cache),
# 1,000 rewrites. Prints markdown for BENCHMARKS.md; raw JSON in
# results/bench-auth/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source "$root/scripts/lib/baseline.sh"

baseline=ffb858d
base=
cur=
pass=()
while (($#)); do
    case $1 in
        --baseline) baseline=$2; shift 2 ;;
        --baseline-bin) base=$2; shift 2 ;;
        --bin) cur=$2; shift 2 ;;
        --flood|--seconds|--rewrites) pass+=("$1" "$2"); shift 2 ;;
        *) echo "bench-auth.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-auth.sh: the exporter loads BPF programs and must run as root" >&2
    exit 2
fi

if [[ -z $cur ]]; then
    cargo build --release --quiet --locked --bin bpfmap-exporter
    cur=$root/target/release/bpfmap-exporter
fi
if [[ -z $base ]]; then
    base=$(baseline_exporter "$root" bench-auth "$baseline")
fi

res=$root/results/bench-auth
mkdir -p "$res"
python3 scripts/py/bench_auth.py "$base" "baseline $baseline" "${pass[@]}" > "$res/baseline.json"
python3 scripts/py/bench_auth.py "$cur" "this build $(git rev-parse --short HEAD)" "${pass[@]}" > "$res/current.json"

python3 - "$res/baseline.json" "$res/current.json" <<'PY'
import json, sys
b, c = (json.load(open(p)) for p in sys.argv[1:3])
rows = [
    ("known user, wrong password (median ms)", "known_user_ms"),
    ("unknown user (median ms)", "unknown_user_ms"),
    ("unknown minus known (ms)", "unknown_minus_known_ms"),
    ("flood connections", "flood_connections"),
    ("good scrapes ok / sent, kept-alive connection", None),
    ("good scrape success (%), kept-alive", "scrape_success_pct"),
    ("good scrape p50 (ms), kept-alive", "scrape_p50_ms"),
    ("good scrape p99 (ms), kept-alive", "scrape_p99_ms"),
    ("good scrapes ok / sent, new connection each", "fresh"),
    ("good scrape p50 (ms), new connection", "fresh_p50_ms"),
    ("good scrape p99 (ms), new connection", "fresh_p99_ms"),
    ("flood responses by status", "flood_responses"),
    ("exporter threads (max)", "exporter_threads_max"),
    ("non-atomic rewrites", "rewrites"),
    ("unauthenticated requests during rewrites", "unauthenticated_requests"),
    ("unauthenticated 200s", "unauthenticated_200"),
    ("SIGTERM to exit behind the queue (s)", "sigterm_exit_s"),
]
def cell(d, k):
    if k is None:
        return f"{d['scrapes_ok']} / {d['scrapes']}"
    if k == "fresh":
        return f"{d['fresh_scrapes_ok']} / {d['fresh_scrapes']}"
    v = d.get(k)
    if isinstance(v, dict):
        return ", ".join(f"{s}: {n}" for s, n in v.items())
    return str(v)
print(f"| | {b['label']} | {c['label']} |")
print("|---|---|---|")
for name, k in rows:
    print(f"| {name} | {cell(b, k)} | {cell(c, k)} |")
PY
