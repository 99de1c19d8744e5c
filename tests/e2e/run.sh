#!/usr/bin/env bash
# End to end, as root, loopback only, bounded in time (~3 minutes):
#   1. start the real exporter on 127.0.0.1:<free port>;
#   2. start Debian's Prometheus on 127.0.0.1:<free port> with a temp TSDB,
#      scrape/evaluation interval 1s and a test copy of deploy/prometheus/
#      rules.yml with shortened for:/windows (scripts/py/e2e_shorten_rules.py);
#   3. run `bpfmap-exporter simulate-leak` (files, in-flight fds, pins, a
#      full map, churn);
#   4. through Prometheus's HTTP API: every dashboard panel query returns
#      data (exceptions listed with their reason), and the refcount
#      (unexplained refs, growing map files), churn, near-full and stale-pin
#      alerts fire for the simulator's maps;
#   5. SIGTERM the simulator, check it removed its pins, and assert the
#      alerts resolve.
# Every process started here is stopped on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/../.."
t_start=$SECONDS

fail() { echo "e2e: FAIL $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "must run as root (loads BPF programs, creates maps and pins)"
for tool in prometheus promtool python3 curl; do
    command -v "$tool" >/dev/null || fail "$tool not found: run scripts/install-deps.sh"
done
bin=target/release/bpfmap-exporter
if [[ ! -x $bin ]]; then
    cargo build --release --locked --features testing --bin bpfmap-exporter
fi

tmp=$(mktemp -d /tmp/bpfmap-e2e.XXXXXX)
exporter_pid= prom_pid= sim_pid=
cleanup() {
    local rc=$?
    for p in $sim_pid $exporter_pid $prom_pid; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in $sim_pid $exporter_pid $prom_pid; do
        wait "$p" 2>/dev/null || true
    done
    if ((rc != 0)); then
        for f in exporter.log prometheus.log sim.log; do
            [[ -f $tmp/$f ]] && { echo "--- $f (last 12 lines)"; tail -n 12 "$tmp/$f"; } >&2
        done
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # url seconds what
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    fail "$3 did not answer $1 within $2 s"
}

# 1. exporter
eport=$(free_port)
eargs=(--web.listen-address="127.0.0.1:$eport" --log.level=warn)
# Kernel BPF stats feed the "own BPF programs" panels, when this build has the flag.
if "$bin" --help | grep -q -- '--bpf.enable-stats'; then
    eargs+=(--bpf.enable-stats)
fi
"$bin" "${eargs[@]}" >"$tmp/exporter.log" 2>&1 &
exporter_pid=$!
wait_http "http://127.0.0.1:$eport/healthz" 60 "the exporter"
echo "e2e: exporter pid $exporter_pid on 127.0.0.1:$eport"

# 2. Prometheus
pport=$(free_port)
python3 scripts/py/e2e_shorten_rules.py deploy/prometheus/rules.yml "$tmp/rules.yml"
promtool check rules "$tmp/rules.yml" >/dev/null
cat >"$tmp/prometheus.yml" <<CFG
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $tmp/rules.yml
scrape_configs:
  - job_name: bpfmap-exporter
    static_configs:
      - targets: ['127.0.0.1:$eport']
CFG
promtool check config "$tmp/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$pport" --storage.tsdb.retention.time=1h \
    --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
wait_http "http://127.0.0.1:$pport/-/ready" 60 "Prometheus"
prom="http://127.0.0.1:$pport"
echo "e2e: prometheus pid $prom_pid on $prom"

# 3. simulator
comm=bpfmap-e2e-sim
prefix=e2e
pin_dir=/sys/fs/bpf/bpfmap-e2e-$$
"$bin" simulate-leak --comm "$comm" --name-prefix "$prefix" --pin-dir "$pin_dir" \
    --leak-files 150 --leak-inflight 3 --leak-pins 3 --leak-rate 2 --full-maps 1 \
    --churn-rate 20 --duration 0 >"$tmp/sim.log" 2>&1 &
sim_pid=$!
sleep 2
kill -0 "$sim_pid" 2>/dev/null || fail "simulate-leak exited early: $(cat "$tmp/sim.log")"
echo "e2e: simulator pid $sim_pid (comm $comm, pins under $pin_dir)"

# 4. panels and alerts
t_fire=$SECONDS
python3 scripts/py/e2e_check.py fire "$prom" "$comm" "$prefix" || fail "see above"
echo "e2e: fire phase took $((SECONDS - t_fire)) s"

# 5. cleanup and resolution
kill -TERM "$sim_pid"
wait "$sim_pid" || fail "simulate-leak exited non-zero on SIGTERM: $(tail -n 5 "$tmp/sim.log")"
sim_pid=
grep -q "cleaned up" "$tmp/sim.log" || fail "simulate-leak did not report its cleanup: $(tail -n 5 "$tmp/sim.log")"
[[ ! -e $pin_dir ]] || fail "simulate-leak left $pin_dir behind"
t_res=$SECONDS
python3 scripts/py/e2e_check.py resolve "$prom" "$comm" "$prefix" || fail "see above"
echo "e2e: resolve phase took $((SECONDS - t_res)) s"
echo "e2e: ok ($((SECONDS - t_start)) s)"
