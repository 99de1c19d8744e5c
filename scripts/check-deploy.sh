#!/usr/bin/env bash
# Offline validation of deploy/ and dashboards/ (no cluster, no network):
#   1. kubernetes-validate --strict of every core manifest (DaemonSet,
#      Service, ServiceAccount, RBAC), after proving it rejects a broken one;
#   2. prometheus-operator CRs (ServiceMonitor, PodMonitor, PrometheusRule),
#      kustomization, rule metadata, runbook anchors, test coverage and
#      dashboards: scripts/py/check_manifests.py;
#   3. the PrometheusRule embeds exactly deploy/prometheus/rules.yml;
#   4. promtool check rules (plain file and the PrometheusRule's groups),
#      promtool test rules, promtool check config of the scrape example;
#   5. the Dockerfile installs the build packages of scripts/install-deps.sh.
# Tools come from scripts/install-deps.sh (prometheus -> promtool,
# kubernetes-validate from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check-deploy: FAIL $*" >&2; exit 1; }
for tool in promtool kubernetes-validate python3; do
    command -v "$tool" >/dev/null || fail "$tool not found: run scripts/install-deps.sh"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
K8S_VERSION=${K8S_VERSION:-1.29.0}

# 1. Core manifests against the Kubernetes schemas (strict: unknown fields fail).
core=(deploy/serviceaccount.yaml deploy/rbac.yaml deploy/daemonset.yaml deploy/service.yaml)
# The validator must be able to fail: a DaemonSet with a misspelled field.
sed 's/hostPID: true/hostPid: true/' deploy/daemonset.yaml > "$tmp/broken.yaml"
if kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$tmp/broken.yaml" >/dev/null 2>&1; then
    fail "kubernetes-validate accepted a DaemonSet with an unknown field (hostPid): the validator is not working"
fi
for f in "${core[@]}"; do
    out=$(kubernetes-validate --strict -k "$K8S_VERSION" "$f" 2>&1) || fail "$f does not validate against Kubernetes $K8S_VERSION:
$out"
    grep -q "passed" <<<"$out" || fail "$f: kubernetes-validate found no schema for it:
$out"
    if grep -E "^(WARN|ERROR)" <<<"$out"; then fail "$f: kubernetes-validate warnings (see above)"; fi
    echo "check-deploy: $f valid against Kubernetes $K8S_VERSION ($(grep -c passed <<<"$out") resource(s))"
done
# Every manifest in deploy/ is covered by one of the checks.
for f in deploy/*.yaml; do
    case $f in
        deploy/servicemonitor.yaml|deploy/podmonitor.yaml|deploy/prometheusrule.yaml|deploy/kustomization.yaml) ;;
        *) [[ " ${core[*]} " == *" $f "* ]] || fail "$f is not validated: add it to the core list in scripts/check-deploy.sh" ;;
    esac
done

for f in deploy/web/*.yaml; do
    case $f in
        deploy/web/kustomization.yaml|deploy/web/daemonset-web-patch.yaml|deploy/web/servicemonitor-tls.yaml|deploy/web/podmonitor-tls.yaml) ;;
        *) fail "$f is not validated: add it to scripts/check-deploy.sh and scripts/py/check_manifests.py" ;;
    esac
done

# 2. CRs, kustomization (and the web overlay, rendered), alert metadata,
# dashboards; then the rendered web DaemonSet against the Kubernetes schemas.
RENDERED_WEB_DAEMONSET="$tmp/daemonset-web.yaml" python3 scripts/py/check_manifests.py
out=$(kubernetes-validate --strict -k "$K8S_VERSION" "$tmp/daemonset-web.yaml" 2>&1) || fail "deploy/web: the DaemonSet with daemonset-web-patch.yaml applied does not validate:
$out"
grep -q "passed" <<<"$out" || fail "deploy/web: kubernetes-validate found no schema for the rendered DaemonSet"
echo "check-deploy: deploy/web DaemonSet (base + patch) valid against Kubernetes $K8S_VERSION"

# 3. One source of rules.
python3 scripts/py/gen_prometheusrule.py --check
python3 scripts/py/gen_dashboards.py --check

# 4. promtool.
promtool check rules deploy/prometheus/rules.yml
python3 -c '
import sys, yaml
d = yaml.safe_load(open("deploy/prometheusrule.yaml"))
yaml.safe_dump({"groups": d["spec"]["groups"]}, open(sys.argv[1], "w"))
' "$tmp/prometheusrule-groups.yml"
promtool check rules "$tmp/prometheusrule-groups.yml"
promtool test rules deploy/prometheus/rules_test.yml
# Debian's promtool is built without kubernetes_sd_configs, so the scrape
# example is checked with its service discovery swapped for a static target;
# the kubernetes_sd_configs block itself is checked for role: pod here.
python3 -c '
import sys, yaml
d = yaml.safe_load(open("deploy/prometheus/scrape-config.yml"))
jobs = [j for j in d["scrape_configs"] if j["job_name"] == "bpfmap-exporter"]
assert jobs, "scrape-config.yml: no job named bpfmap-exporter (the alert rules select job=\"bpfmap-exporter\")"
for j in jobs:
    sd = j.pop("kubernetes_sd_configs", None)
    assert sd and all(s.get("role") == "pod" for s in sd), "scrape-config.yml: kubernetes_sd_configs must use role: pod"
    j["static_configs"] = [{"targets": ["127.0.0.1:9863"]}]
d["rule_files"] = [sys.argv[2]]
yaml.safe_dump(d, open(sys.argv[1], "w"))
' "$tmp/prometheus.yml" "$PWD/deploy/prometheus/rules.yml"
promtool check config "$tmp/prometheus.yml"
# The TLS/auth variant, with its files swapped for real ones made here.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=check \
    -keyout "$tmp/client.key" -out "$tmp/client.crt" 2>/dev/null
cp "$tmp/client.crt" "$tmp/ca.crt"; echo secret > "$tmp/password"
python3 -c '
import sys, yaml
d = yaml.safe_load(open("deploy/prometheus/scrape-config-tls.yml"))
for j in d["scrape_configs"]:
    assert j["job_name"] == "bpfmap-exporter" and j.get("scheme") == "https", "scrape-config-tls.yml: job bpfmap-exporter with scheme https"
    t = j["tls_config"]
    assert not t.get("insecure_skip_verify"), "scrape-config-tls.yml: insecure_skip_verify defeats the CA"
    for k in ("ca_file", "cert_file", "key_file"):
        t[k] = sys.argv[2] + "/" + {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"}[k]
    j["basic_auth"]["password_file"] = sys.argv[2] + "/password"
    j.pop("kubernetes_sd_configs")
    j["static_configs"] = [{"targets": ["127.0.0.1:9863"]}]
yaml.safe_dump(d, open(sys.argv[1], "w"))
' "$tmp/prometheus-tls.yml" "$tmp"
promtool check config "$tmp/prometheus-tls.yml"

# 5. Dockerfile builds with the same packages as install-deps.sh.
for p in clang llvm libelf-dev zlib1g-dev pkg-config make; do
    grep -q "^want=.*\b$p\b" scripts/install-deps.sh || fail "scripts/install-deps.sh no longer installs $p: update this check and deploy/Dockerfile together"
    grep -Eq "^\s+.*\b$p\b" deploy/Dockerfile || fail "deploy/Dockerfile does not install build package $p (scripts/install-deps.sh does)"
done
grep -q "^FROM .* AS build" deploy/Dockerfile && [[ $(grep -c '^FROM ' deploy/Dockerfile) -ge 2 ]] \
    || fail "deploy/Dockerfile must be multi-stage (a build stage and a runtime stage)"

echo "check-deploy: ok"
