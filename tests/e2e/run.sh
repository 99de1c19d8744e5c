#!/usr/bin/env bash
# End to end, as root, loopback only, bounded in time (~3 minutes):
#   1. start the real exporter on 127.0.0.1:<free port>;
#   2. start Debian's Prometheus on 127.0.0.1:<free port> with a temp TSDB,
#      scrape/evaluation interval 1s and a test copy of deploy/prometheus/
#      rules.yml with shortened for:/windows (scripts/py/e2e_shorten_rules.py);
#   3. run `bpfmap-exporter simulate-leak` (files, in-flight fds, an io_uring
#      fixed file, pins, a full map, churn, and maps that outlived their pod:
#      pinned themselves, and kept only through a pinned program or a pinned
#      outer map); `explain` prints the chained orphans' chains to their pins;
#   4. through Prometheus's HTTP API: every dashboard panel query returns
#      data (exceptions listed with their reason), the refcount
#      (unexplained refs, growing map files), churn, near-full, stale-pin and
#      orphan alerts fire for the simulator's maps, the chained maps are
#      published as orphaned and the orphan alert counts every orphan;
#   5. SIGTERM the simulator, check it removed its pins, and assert the
#      alerts resolve and the orphans' series are gone.
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

# 1. exporter, over TLS with client certificates and basic auth: a test CA,
# a server and a client certificate made here, and deploy/web/web-config.yml
# (its user "prometheus", password "change-me") pointed at them.
pki=$tmp/pki
mkdir -p "$pki"
ossl() { openssl "$@" 2>/dev/null || fail "openssl $1 failed"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=bpfmap e2e CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
for who in server client; do
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
        -keyout "$pki/$who.key" -out "$pki/$who.csr"
    if [[ $who == server ]]; then
        ext="subjectAltName=IP:127.0.0.1,DNS:bpfmap-exporter
extendedKeyUsage=serverAuth"
    else
        ext="extendedKeyUsage=clientAuth"
    fi
    ossl x509 -req -in "$pki/$who.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 1 -out "$pki/$who.crt" -extfile <(printf '%s\n' "$ext")
done
sed -e 's|cert_file: tls.crt|cert_file: server.crt|' -e 's|key_file: tls.key|key_file: server.key|' \
    deploy/web/web-config.yml >"$pki/web-config.yml"
grep -q 'cert_file: server.crt' "$pki/web-config.yml" || fail "deploy/web/web-config.yml no longer names tls.crt"
echo -n change-me >"$pki/password"
ecurl() { curl -fsS --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" -u prometheus:change-me "$@"; }
eport=$(free_port)
eargs=(--web.listen-address="127.0.0.1:$eport" --log.level=warn --web.config.file="$pki/web-config.yml")
# Kernel BPF stats feed the "own BPF programs" panels, when this build has the flag.
if "$bin" --help | grep -q -- '--bpf.enable-stats'; then
    eargs+=(--bpf.enable-stats)
fi
"$bin" "${eargs[@]}" >"$tmp/exporter.log" 2>&1 &
exporter_pid=$!
for ((i = 0; i < 300; i++)); do
    ecurl -o /dev/null "https://127.0.0.1:$eport/healthz" 2>/dev/null && break
    sleep 0.2
done
ecurl -o /dev/null "https://127.0.0.1:$eport/healthz" || fail "the exporter did not answer over TLS"
# Without credentials, or without a client certificate, nothing is served.
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" "https://127.0.0.1:$eport/metrics")
[[ $code == 401 ]] || fail "a scrape without basic auth got HTTP $code, not 401"
if curl -fsS -o /dev/null --cacert "$pki/ca.crt" -u prometheus:change-me "https://127.0.0.1:$eport/metrics" 2>/dev/null; then
    fail "a scrape without a client certificate was served"
fi
echo "e2e: exporter pid $exporter_pid on https://127.0.0.1:$eport (client certificate + basic auth)"

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
    scheme: https
    tls_config:
      ca_file: $pki/ca.crt
      cert_file: $pki/client.crt
      key_file: $pki/client.key
    basic_auth:
      username: prometheus
      password_file: $pki/password
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

# Prometheus negotiates its format: check what the exporter answered it.
for ((i = 0; i < 150; i++)); do
    up=$(curl -fsS "$prom/api/v1/query" --data-urlencode 'query=up{job="bpfmap-exporter"}' | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")')
    [[ $up == 1 ]] && break
    sleep 0.2
done
[[ $up == 1 ]] || fail "Prometheus could not scrape the exporter over TLS with basic auth: $(curl -fsS "$prom/api/v1/targets" | head -c 600)"
accept=$(curl -fsS "$prom/api/v1/targets" | python3 -c 'import json,sys; t=json.load(sys.stdin)["data"]["activeTargets"]; print(t[0].get("scrapeUrl",""), t[0].get("lastError",""))')
echo "e2e: Prometheus scrapes over TLS with basic auth: $accept"
om=$(ecurl -H 'Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' "https://127.0.0.1:$eport/metrics")
[[ $(tail -n 1 <<<"$om") == "# EOF" ]] || fail "OpenMetrics answer does not end with # EOF"
promtool check metrics <<<"$om" >/dev/null 2>&1 || [[ $? -eq 3 ]] || fail "promtool rejects the OpenMetrics exposition"

# 3. simulator
comm=bpfmap-e2e-sim
prefix=e2e
pin_dir=/sys/fs/bpf/bpfmap-e2e-$$
"$bin" simulate-leak --comm "$comm" --name-prefix "$prefix" --pin-dir "$pin_dir" \
    --leak-files 150 --leak-inflight 3 --leak-uring 1 --leak-pins 3 --leak-rate 2 --full-maps 1 \
    --leak-orphans 2 --leak-orphan-chains 1 --churn-rate 20 --duration 0 >"$tmp/sim.log" 2>&1 &
sim_pid=$!
sleep 2
kill -0 "$sim_pid" 2>/dev/null || fail "simulate-leak exited early: $(cat "$tmp/sim.log")"
echo "e2e: simulator pid $sim_pid (comm $comm, pins under $pin_dir)"

# The orphans (made before the leak loop starts): maps pinned themselves
# (`leak=orphan kind=map`), and maps kept only through a pinned program or
# a pinned outer map (`leak=orphan_chain kind=map ... via=program:<id>` or
# `via=map:<id>`).
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
direct=$(grep '^leak=orphan kind=map ' "$tmp/sim.log" | field id | paste -sd ' ')
chained=$(grep '^leak=orphan_chain kind=map ' "$tmp/sim.log" | field id | paste -sd ' ')
prog_pin=$(grep '^leak=orphan kind=program ' "$tmp/sim.log" | field pin | head -n 1)
[[ -n $chained && -n $prog_pin ]] || fail "simulate-leak reported no chained orphans: $(grep '^leak=orphan' "$tmp/sim.log")"
export E2E_ORPHANS=$(wc -w <<<"$direct $chained")
export E2E_CHAINED_ORPHANS=$chained
# explain names each chain down to the pin, and what removing it frees.
for id in $chained; do
    via=$(grep "^leak=orphan_chain kind=map id=$id " "$tmp/sim.log" | field via)
    out=$("$bin" explain --id "$id" 2>/dev/null) || fail "explain --id $id failed"
    grep -Eq "^    map $id <- ${via%%:*} ${via#*:} .* <- pin $pin_dir/[^ ]+ \(removing it frees [0-9]+ bytes\)$" <<<"$out" \
        || fail "explain --id $id does not print its chain through ${via/:/ } to a pin:
$out"
    grep -q "^  orphaned: " <<<"$out" || fail "explain --id $id does not call it orphaned:
$out"
done
out=$("$bin" explain --pin "$prog_pin" 2>/dev/null) || fail "explain --pin $prog_pin failed"
for id in $(grep '^leak=orphan_chain kind=map .* via=program:' "$tmp/sim.log" | field id); do
    grep -q "^  map $id " <<<"$out" || fail "explain --pin $prog_pin does not list map $id among what the pin alone keeps:
$out"
done
echo "e2e: orphans: $E2E_ORPHANS maps (direct: $direct; through chains: $chained); explain prints every chain to its pin"

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
