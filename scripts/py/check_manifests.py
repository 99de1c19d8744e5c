#!/usr/bin/env python3
"""Offline checks of what kubernetes-validate cannot check (called by
scripts/check-deploy.sh):

- prometheus-operator CRs (ServiceMonitor, PodMonitor, PrometheusRule): their
  structure against the fields monitoring.coreos.com/v1 defines (a curated
  subset of the CRD schemas: unknown fields are rejected, durations and
  relabel actions are checked), and that they select the DaemonSet's pods and
  its named port;
- the kustomization: every resource exists and is a known kind;
- the alert rules: severity, summary, description and a runbook_url (docs/runbooks.md) whose
  anchor exists there, and a promtool unit test that fires and one that stays
  silent for every alert, and one that evaluates every recording rule;
- the Grafana dashboards: valid JSON, datasource and node (or, for the fleet
  dashboard, job) variables, every panel has a query and uses the
  datasource variable; every recorded series a query reads is recorded in
  deploy/prometheus/rules.yml, no node total is summed from a raw series that
  has a recorded node total, and the fleet dashboard reads recorded series
  only.

Each failure prints the file, what is wrong and how to fix it; exit 1 if any.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
RELABEL_ACTIONS = {
    a
    for x in ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase", "keepequal", "dropequal"]
    for a in (x, x.capitalize())
}
RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
ENDPOINT_KEYS = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
    "bearerTokenFile", "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps",
    "basicAuth", "oauth2", "metricRelabelings", "relabelings", "proxyUrl", "followRedirects",
    "enableHttp2", "filterRunning", "trackTimestampsStaleness",
}
PODENDPOINT_KEYS = ENDPOINT_KEYS - {"bearerTokenFile", "bearerTokenSecret"} | {"portNumber"}
SM_SPEC_KEYS = {
    "jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "namespaceSelector",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "keepDroppedTargets", "attachMetadata", "scrapeProtocols", "scrapeClass", "fallbackScrapeProtocol",
}
PM_SPEC_KEYS = (SM_SPEC_KEYS - {"endpoints", "targetLabels"}) | {"podMetricsEndpoints"}
# A recorded series (level:metric:operations) and a raw bpfmap_ series (not
# part of a recorded name) in a PromQL expression.
RECORDED_SERIES = re.compile(r"\b[a-z_]+:bpfmap_[a-z0-9_]+:[a-z0-9_]+\b")
RAW_SERIES = re.compile(r"(?<![\w:])bpfmap_[a-z0-9_]+(?![\w:])")
# The raw series a node total is summed from: sum by (instance) (X or rate(X[..])).
NODE_TOTAL = re.compile(r"sum by \(instance\) \((?:rate|increase|irate)?\(?\s*(bpfmap_[a-z0-9_]+)")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset", "labels"}


def load_all(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except Exception as e:  # noqa: BLE001
        err(path.name, f"not valid YAML: {e}")
        return []


def check_keys(where, obj, allowed):
    if not isinstance(obj, dict):
        err(where, f"must be a mapping, got {type(obj).__name__}")
        return False
    extra = set(obj) - allowed
    if extra:
        err(where, f"unknown field(s) {sorted(extra)} (prometheus-operator v1 defines {sorted(allowed)})")
    return True


def check_meta(where, doc, kind):
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        err(where, f"apiVersion must be monitoring.coreos.com/v1 for {kind}")
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name or ""):
        err(where, f"metadata.name {name!r} is not a DNS-1123 name")


def check_relabelings(where, rl):
    if not isinstance(rl, list):
        err(where, "relabelings must be a list")
        return
    for i, r in enumerate(rl):
        w = f"{where}[{i}]"
        if check_keys(w, r, RELABEL_KEYS):
            if "action" in r and r["action"] not in RELABEL_ACTIONS:
                err(w, f"action {r['action']!r} is not one of {sorted(RELABEL_ACTIONS)}")
            if "sourceLabels" in r and not all(isinstance(x, str) for x in r["sourceLabels"]):
                err(w, "sourceLabels must be a list of label names")
            if r.get("action", "replace").lower() == "replace" and "targetLabel" not in r:
                err(w, "a replace relabeling needs targetLabel")


def check_endpoint(where, ep, allowed):
    if not check_keys(where, ep, allowed):
        return
    for k in ("interval", "scrapeTimeout"):
        if k in ep and not DURATION.match(str(ep[k])):
            err(where, f"{k} {ep[k]!r} is not a Prometheus duration (e.g. 30s)")
    if "port" not in ep:
        err(where, "needs port (the named port 'metrics')")
    for k in ("relabelings", "metricRelabelings"):
        if k in ep:
            check_relabelings(f"{where}.{k}", ep[k])


TLS_KEYS = {"ca", "cert", "keySecret", "serverName", "insecureSkipVerify", "caFile", "certFile", "keyFile", "minVersion", "maxVersion"}
SCRAPE_SECRET = "bpfmap-exporter-scrape"


def check_secret_ref(where, ref):
    if check_keys(where, ref, {"name", "key", "optional"}):
        if ref.get("name") != SCRAPE_SECRET or not ref.get("key"):
            err(where, f"must reference a key of the Secret {SCRAPE_SECRET} (deploy/web/kustomization.yaml says what it holds)")


def check_tls_endpoint(where, ep):
    """The TLS/auth variant: https, a CA, a client certificate and basic auth from the scrape Secret."""
    if ep.get("scheme") != "https":
        err(where, "scheme must be https (the exporter serves TLS with deploy/web/web-config.yml)")
    tls = ep.get("tlsConfig")
    if not tls or not check_keys(f"{where}.tlsConfig", tls, TLS_KEYS):
        err(where, "needs tlsConfig")
        return
    if tls.get("insecureSkipVerify"):
        err(where, "tlsConfig.insecureSkipVerify defeats the CA: remove it")
    for k in ("ca", "cert"):
        if check_keys(f"{where}.tlsConfig.{k}", tls.get(k, {}), {"secret", "configMap"}):
            check_secret_ref(f"{where}.tlsConfig.{k}.secret", tls.get(k, {}).get("secret", {}))
    check_secret_ref(f"{where}.tlsConfig.keySecret", tls.get("keySecret", {}))
    ba = ep.get("basicAuth")
    if not ba or not check_keys(f"{where}.basicAuth", ba, {"username", "password"}):
        err(where, "needs basicAuth (web-config.yml sets basic_auth_users)")
        return
    for k in ("username", "password"):
        check_secret_ref(f"{where}.basicAuth.{k}", ba.get(k, {}))


def strategic_merge(base, patch, key_of=None):
    """The subset of Kubernetes strategic merge the overlay uses: maps merge,
    null deletes, lists of maps merge by name (mountPath for volumeMounts),
    other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, {"volumeMounts": "mountPath"}.get(k, "name"))
            else:
                out[k] = v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and key_of in x for x in base + patch):
        out = list(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out) if b[key_of] == item[key_of]), None)
            if idx is None:
                out.append(item)
            else:
                out[idx] = strategic_merge(out[idx], item)
        return out
    return patch


WEB_TOP = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}


def check_web_overlay(ds):
    w = "web/kustomization.yaml"
    web = DEPLOY / "web"
    kz = yaml.safe_load((web / "kustomization.yaml").read_text())
    for res in kz.get("resources", []):
        if not (web / res).is_file():
            err(w, f"resource {res} does not exist (relative to deploy/web/)")
    for must in ("../daemonset.yaml", "../serviceaccount.yaml", "../service.yaml", "servicemonitor-tls.yaml"):
        if must not in kz.get("resources", []):
            err(w, f"{must} is not listed in resources")
    base_kz = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    if kz.get("images") != base_kz.get("images") or kz.get("namespace") != base_kz.get("namespace"):
        err(w, "images and namespace must be those of deploy/kustomization.yaml")
    patches = kz.get("patches") or []
    if len(patches) != 1 or not (web / patches[0].get("path", "")).is_file():
        err(w, "needs one patch, daemonset-web-patch.yaml, that exists")
        return
    patch = yaml.safe_load((web / patches[0]["path"]).read_text())
    merged = strategic_merge(ds, patch)
    c = merged["spec"]["template"]["spec"]["containers"][0]
    base_args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    missing = [a for a in base_args if a not in c["args"]]
    if missing:
        err("web/daemonset-web-patch.yaml", f"args drop the base's flags {missing}: args replace the base list, copy them")
    cfg = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--web.config.file=")]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in merged["spec"]["template"]["spec"]["volumes"]}
    if not cfg:
        err("web/daemonset-web-patch.yaml", "needs --web.config.file=<mounted path>")
    else:
        d = str(pathlib.PurePosixPath(cfg[0]).parent)
        v = vols.get(mounts.get(d, ""), {})
        if "secret" not in v:
            err("web/daemonset-web-patch.yaml", f"--web.config.file's directory {d} must be a volumeMount of a Secret volume")
        elif (v["secret"].get("items") or None) is None and pathlib.PurePosixPath(cfg[0]).name != "web-config.yml":
            err("web/daemonset-web-patch.yaml", "the Secret key web-config.yml (kustomization.yaml's instructions) must be the file named")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {})
        handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in p]
        if handlers != ["tcpSocket"]:
            err("web/daemonset-web-patch.yaml", f"{probe} must be tcpSocket only after the merge (got {handlers}): the kubelet has no client certificate")
    out = __import__("os").environ.get("RENDERED_WEB_DAEMONSET")
    if out:
        pathlib.Path(out).write_text(yaml.safe_dump(merged))
    wc = yaml.safe_load((web / "web-config.yml").read_text())
    extra = set(wc) - WEB_TOP
    if extra:
        err("web/web-config.yml", f"unknown top-level fields {sorted(extra)}")
    if not wc.get("tls_server_config", {}).get("client_ca_file") or not wc.get("basic_auth_users"):
        err("web/web-config.yml", "the example must show client certificates and basic auth")


def selects(selector, labels):
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def main():
    ds = next(d for d in load_all(DEPLOY / "daemonset.yaml") if d.get("kind") == "DaemonSet")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for c in ds["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    svc = next(d for d in load_all(DEPLOY / "service.yaml") if d.get("kind") == "Service")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}

    # ServiceMonitor (plain and TLS/auth variant)
    for w, doc in [(f, d) for f in ("servicemonitor.yaml", "web/servicemonitor-tls.yaml") for d in load_all(DEPLOY / f)]:
        if doc.get("kind") != "ServiceMonitor":
            err(w, f"expected kind ServiceMonitor, got {doc.get('kind')}")
            continue
        check_meta(w, doc, "ServiceMonitor")
        spec = doc.get("spec", {})
        check_keys(f"{w} spec", spec, SM_SPEC_KEYS)
        if not selects(spec.get("selector"), svc["metadata"]["labels"]):
            err(w, "spec.selector.matchLabels does not select the Service's labels (service.yaml)")
        if spec.get("jobLabel") and spec["jobLabel"] not in svc["metadata"]["labels"]:
            err(w, f"jobLabel {spec['jobLabel']!r} is not a label of the Service")
        eps = spec.get("endpoints") or []
        if not eps:
            err(w, "spec.endpoints is empty")
        for i, ep in enumerate(eps):
            check_endpoint(f"{w} spec.endpoints[{i}]", ep, ENDPOINT_KEYS)
            if w.startswith("web/"):
                check_tls_endpoint(f"{w} spec.endpoints[{i}]", ep)
            if ep.get("port") not in svc_ports:
                err(w, f"endpoint port {ep.get('port')!r} is not a named port of the Service ({sorted(svc_ports)})")

    # PodMonitor (plain and TLS/auth variant)
    for w, doc in [(f, d) for f in ("podmonitor.yaml", "web/podmonitor-tls.yaml") for d in load_all(DEPLOY / f)]:
        if doc.get("kind") != "PodMonitor":
            err(w, f"expected kind PodMonitor, got {doc.get('kind')}")
            continue
        check_meta(w, doc, "PodMonitor")
        spec = doc.get("spec", {})
        check_keys(f"{w} spec", spec, PM_SPEC_KEYS)
        if not selects(spec.get("selector"), pod_labels):
            err(w, "spec.selector.matchLabels does not select the DaemonSet's pod labels")
        if spec.get("jobLabel") and spec["jobLabel"] not in pod_labels:
            err(w, f"jobLabel {spec['jobLabel']!r} is not a pod label")
        eps = spec.get("podMetricsEndpoints") or []
        if not eps:
            err(w, "spec.podMetricsEndpoints is empty")
        for i, ep in enumerate(eps):
            check_endpoint(f"{w} spec.podMetricsEndpoints[{i}]", ep, PODENDPOINT_KEYS)
            if w.startswith("web/"):
                check_tls_endpoint(f"{w} spec.podMetricsEndpoints[{i}]", ep)
            if ep.get("port") not in ports:
                err(w, f"port {ep.get('port')!r} is not a named container port ({sorted(ports)})")

    # PrometheusRule (structure; the rules themselves are checked below and by promtool)
    for doc in load_all(DEPLOY / "prometheusrule.yaml"):
        w = "prometheusrule.yaml"
        if doc.get("kind") != "PrometheusRule":
            err(w, f"expected kind PrometheusRule, got {doc.get('kind')}")
            continue
        check_meta(w, doc, "PrometheusRule")
        check_keys(f"{w} spec", doc.get("spec", {}), {"groups"})
        for gi, g in enumerate(doc.get("spec", {}).get("groups") or []):
            gw = f"{w} groups[{gi}]"
            if check_keys(gw, g, GROUP_KEYS):
                for ri, r in enumerate(g.get("rules") or []):
                    rw = f"{gw}.rules[{ri}]"
                    if check_keys(rw, r, RULE_KEYS):
                        if ("alert" in r) == ("record" in r):
                            err(rw, "needs exactly one of alert / record")
                        if not isinstance(r.get("expr"), str):
                            err(rw, "expr must be a string")
                        if "for" in r and not DURATION.match(str(r["for"])):
                            err(rw, f"for {r['for']!r} is not a duration")
                        for k in ("labels", "annotations"):
                            if k in r and not all(isinstance(v, str) for v in r[k].values()):
                                err(rw, f"{k} values must be strings")

    check_web_overlay(ds)

    # kustomization
    kz = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for res in kz.get("resources", []):
        if not (DEPLOY / res).is_file():
            err("kustomization.yaml", f"resource {res} does not exist under deploy/")
    for must in ("daemonset.yaml", "serviceaccount.yaml", "service.yaml"):
        if must not in kz.get("resources", []):
            err("kustomization.yaml", f"{must} is not listed in resources")

    # Alert rules: metadata, runbook anchors, unit-test coverage.
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = set()
    for line in runbooks.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(a)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = []
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            name = r["alert"]
            alerts.append(name)
            w = f"rules.yml {name}"
            if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                err(w, "needs labels.severity: critical, warning or info")
            ann = r.get("annotations", {})
            for k in ("summary", "description", "runbook_url"):
                if not ann.get(k):
                    err(w, f"needs annotations.{k}")
            url = ann.get("runbook_url", "")
            page, _, anchor = url.partition("#")
            if not page.endswith("/docs/runbooks.md"):
                err(w, f"runbook_url {url!r} must point into docs/runbooks.md")
            if anchor not in anchors:
                err(w, f"runbook_url anchor #{anchor} has no heading in docs/runbooks.md (add '### {name}')")
            if "for" not in r:
                err(w, "needs a for: duration")
    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())
    fires, silent = set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    for name in alerts:
        if name not in fires:
            err("rules_test.yml", f"no test where {name} fires")
        if name not in silent:
            err("rules_test.yml", f"no test where {name} stays silent")
    print(f"check-deploy: {len(alerts)} alerts, each with severity, summary, description, runbook anchor, firing and silent tests")
    # Every recording rule has a promql_expr_test whose expr selects it.
    records = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    evaluated = {re.match(r"[\w:]+", e["expr"]).group(0) for t in tests["tests"] for e in t.get("promql_expr_test", [])}
    for name in records:
        if name not in evaluated:
            err("rules_test.yml", f"no promql_expr_test evaluates the recording rule {name}")
    print(f"check-deploy: {len(records)} recording rules, each evaluated by a promql_expr_test")

    # Dashboards
    # Recorded series, and the raw series each node total (instance:*) sums.
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    node_total_of = {}
    for g in rules["groups"]:
        for r in g["rules"]:
            if r.get("record", "").startswith("instance:"):
                for raw in RAW_SERIES.findall(r["expr"]):
                    node_total_of[raw] = r["record"]
    dashboards = sorted((ROOT / "dashboards").glob("*.json"))
    want = {"node-overview.json", "leak-hunting.json", "bpffs.json", "exporter-self.json", "fleet.json"}
    if not want <= {p.name for p in dashboards}:
        err("dashboards/", f"expected the dashboards {sorted(want)}, found {sorted(p.name for p in dashboards)}")
    uids = set()
    npanels = 0
    for p in dashboards:
        w = f"dashboards/{p.name}"
        try:
            d = json.loads(p.read_text())
        except Exception as e:  # noqa: BLE001
            err(w, f"invalid JSON: {e}")
            continue
        if d.get("uid") in uids:
            err(w, f"duplicate uid {d.get('uid')}")
        uids.add(d.get("uid"))
        tvars = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        ds = tvars.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            err(w, "needs a 'datasource' template variable of type datasource (query: prometheus)")
        # The fleet dashboard selects by job and reads only recorded series;
        # every other dashboard selects by node.
        fleet = p.name == "fleet.json"
        scope = "job" if fleet else "instance"
        sv = tvars.get(scope)
        if not sv or sv.get("type") != "query":
            err(w, f"needs a '{scope}' query variable")
        for name, v in tvars.items():
            if v.get("type") == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
                err(w, f"variable {name} must use the datasource variable ${{datasource}}")
        panels = []
        for pnl in d.get("panels", []):
            panels.append(pnl)
            panels.extend(pnl.get("panels", []))
        for pnl in panels:
            if pnl.get("type") == "row":
                continue
            npanels += 1
            pw = f"{w} panel {pnl.get('title')!r}"
            if pnl.get("datasource", {}).get("uid") != "${datasource}":
                err(pw, "datasource must be the variable ${datasource}")
            targets = pnl.get("targets") or []
            if not targets or not all(t.get("expr", "").strip() for t in targets):
                err(pw, "every panel needs at least one target, each with a PromQL expr")
            for t in targets:
                if t.get("datasource", {}).get("uid") not in (None, "${datasource}"):
                    err(pw, "target datasource must be ${datasource}")
                expr = t.get("expr", "")
                if f"${scope}" not in expr and f"${{{scope}" not in expr:
                    err(pw, f"query does not filter by the variable ${scope}: {expr}")
                for name in RECORDED_SERIES.findall(expr):
                    if name not in recorded:
                        err(pw, f"reads {name}, which deploy/prometheus/rules.yml does not record: {expr}")
                if fleet and RAW_SERIES.findall(expr):
                    err(pw, f"the fleet dashboard must read recorded series only, not {RAW_SERIES.findall(expr)}: {expr}")
                for raw in NODE_TOTAL.findall(expr):
                    if raw in node_total_of:
                        err(pw, f"sums {raw} per node: read the recorded {node_total_of[raw]} instead: {expr}")
    print(f"check-deploy: {len(dashboards)} dashboards, {npanels} panels with queries on ${{datasource}}")

    if errors:
        for e in errors:
            print(f"check-deploy: FAIL {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
