#!/usr/bin/env python3
"""End-to-end assertions through Prometheus's HTTP API (called by run.sh).

  check.py fire <prom-url> <sim-comm> <sim-prefix>
      wait until every dashboard panel query returns data (except the panels
      listed in EXCEPTIONS, each with its reason, printed) and until the
      simulator's alerts are firing; prints how long each took.
  check.py resolve <prom-url> <sim-comm> <sim-prefix>
      after the simulator cleaned up: wait until those alerts are resolved.
The simulator's orphans come from the environment: E2E_ORPHANS, how many
maps it orphaned (directly and through chains), and E2E_CHAINED_ORPHANS, the
ids of the maps only a chain keeps (a pinned program, a pinned outer map).
Each chained map must be published as bpfmap_map_orphaned 1, and
BpfMapsOutlivedTheirPod must count at least E2E_ORPHANS maps; after cleanup
their series must be gone.
Exit 1 naming what never happened.
"""
import os
import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIRE_TIMEOUT = 150
RESOLVE_TIMEOUT = 120


def api(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        d = json.load(r)
    if d.get("status") != "success":
        raise RuntimeError(f"{url}: {d}")
    return d["data"]


def query(base, expr):
    return api(base, "/api/v1/query", query=expr)["result"]


def panels():
    for p in sorted((ROOT / "dashboards").glob("*.json")):
        d = json.loads(p.read_text())
        for pnl in d["panels"]:
            for t in pnl.get("targets", []):
                expr = t["expr"].replace("$instance", ".*").replace("$job", ".*").replace("$__rate_interval", "30s")
                yield p.name, pnl["title"], expr


def exceptions(base):
    """Panels whose data depends on something the simulator does not create.
    Each is decided at run time where possible, with the reason printed."""
    ex = {
        ("leak-hunting.json", "Map files held only by mmaps"):
            "needs a process that keeps a map alive only through an mmap; the simulator leaks no mmaps",
        ("bpffs.json", "Entries the pin walk skipped"):
            "only has data when the bounded bpffs walk skips entries (depth/entry caps, races); nothing here is skipped on purpose",
    }
    if not query(base, "bpfmap_map_refcount_increments_total"):
        reason = ("no bpfmap_map_refcount_increments_total series: the refcount probes need fentry or kprobes, "
                  "which this kernel does not offer (see bpfmap_probe_attached)")
        ex[("node-overview.json", "Refcount balance (increments - decrements)")] = reason
        ex[("leak-hunting.json", "Refcount increments - decrements by comm")] = reason
    if not query(base, "bpfmap_bpf_program_runs_total"):
        reason = "no bpfmap_bpf_program_runs_total: kernel BPF stats are off (exporter built without --bpf.enable-stats)"
        ex[("exporter-self.json", "Own BPF programs: time per run")] = reason
        ex[("exporter-self.json", "Own BPF programs: CPU")] = reason
    return ex


def has_iter_unix(base):
    r = query(base, 'bpfmap_feature_available{feature="iter_unix"}')
    return bool(r) and float(r[0]["value"][1]) == 1


def false_leaks(base, prefix):
    """Unexplained-reference alerts for the in-flight maps where the kernel
    explains them: each one is a false leak."""
    if not has_iter_unix(base):
        return []
    return [a["labels"].get("name") for a in firing(base)
            if a["labels"].get("alertname") == "BpfMapUnexplainedReferences"
            and a["labels"].get("name", "").startswith(f"{prefix}_fly")]


def firing(base):
    return [a for a in api(base, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]


def orphans():
    """(how many maps the simulator orphaned, the ids only chains keep)."""
    return int(os.environ.get("E2E_ORPHANS", "0")), os.environ.get("E2E_CHAINED_ORPHANS", "").split()


def orphaned_of(ids):
    return f'bpfmap_map_orphaned{{id=~"{"|".join(ids)}"}}'


def wanted(base, comm, prefix):
    """name -> predicate on an alert's labels, for the simulator's alerts."""
    churn = "BpfMapsAccumulating" if query(base, "bpfmap_maps_created_total") else "BpfMapCountGrowing"
    fly = lambda l: l.get("name", "").startswith(f"{prefix}_fly")
    uring = lambda l: l.get("name", "").startswith(f"{prefix}_uring")
    # The simulator's in-flight fds: explained and stuck where the kernel has
    # iter/unix (5.17+), unexplained references where it does not. Its
    # io_uring fixed files are the unexplained references everywhere.
    if has_iter_unix(base):
        stuck = {"BpfMapFdStuckInFlight": fly, "BpfMapUnexplainedReferences": uring}
    else:
        stuck = {"BpfMapUnexplainedReferences": lambda l: fly(l) or uring(l)}
    w = {
        **stuck,
        "BpfProcessMapFilesGrowing": lambda l: l.get("comm") == comm,
        churn: lambda l: True,
        "BpfMapNearlyFull": lambda l: l.get("name", "").startswith(f"{prefix}_full"),
        "BpfPinnedMapUnused": lambda l: f"/{prefix}_pin" in l.get("path", ""),
        "BpfMapsOutlivedTheirPod": lambda l: True,
    }
    return w, churn


def outlived_value(alerts):
    """The largest count BpfMapsOutlivedTheirPod fires with."""
    return max((float(a["value"]) for a in alerts if a["labels"].get("alertname") == "BpfMapsOutlivedTheirPod"), default=0)


def matched(alerts, w):
    got = set()
    for a in alerts:
        pred = w.get(a["labels"].get("alertname"))
        if pred and pred(a["labels"]):
            got.add(a["labels"]["alertname"])
    return got


def fire(base, comm, prefix):
    t0 = time.time()
    todo = {(f, t): e for f, t, e in panels()}
    ex = None
    w = churn = None
    fired = {}
    ok_panels = 0
    total = len(todo)
    n_orphans, chained = orphans()
    # Chained maps published as orphaned, and the alert counting them all.
    chained_at = None if chained else 0.0
    counted_at = None if n_orphans else 0.0
    while time.time() - t0 < FIRE_TIMEOUT:
        if ex is None and time.time() - t0 > 5:
            ex = exceptions(base)
            w, churn = wanted(base, comm, prefix)
            print(f"e2e: churn alert for this kernel: {churn}")
        for key in list(todo):
            if ex is not None and key in ex:
                continue
            if query(base, todo[key]):
                del todo[key]
                ok_panels += 1
        if chained_at is None and len(query(base, orphaned_of(chained) + " == 1")) == len(chained):
            chained_at = time.time() - t0
        if w:
            alerts = firing(base)
            for name in matched(alerts, w):
                fired.setdefault(name, time.time() - t0)
            if counted_at is None and outlived_value(alerts) >= n_orphans:
                counted_at = time.time() - t0
            bad_fly = false_leaks(base, prefix)
            if bad_fly:
                print(f"e2e: FAIL BpfMapUnexplainedReferences fires for in-flight maps the census explains: {bad_fly}", file=sys.stderr)
                return 1
        if (ex is not None and all(k in ex for k in todo) and set(fired) >= set(w)
                and chained_at is not None and counted_at is not None):
            break
        time.sleep(1)
    if ex is None:
        ex = exceptions(base)
    for key in sorted(ex):
        print(f"e2e: panel {key[0]} / {key[1]!r} not required: {ex[key]}")
    bad = False
    for key in sorted(k for k in todo if k not in ex):
        print(f"e2e: FAIL panel {key[0]} / {key[1]!r} returned no data in {FIRE_TIMEOUT}s: {todo[key]}", file=sys.stderr)
        bad = True
    print(f"e2e: {ok_panels} of {total} panel queries returned data, {len(ex)} listed as not required (those may still have data)")
    for name in sorted(w or {}):
        if name in fired:
            print(f"e2e: alert {name} firing after {fired[name]:.0f}s")
        else:
            print(f"e2e: FAIL alert {name} did not fire within {FIRE_TIMEOUT}s", file=sys.stderr)
            bad = True
    if chained:
        if chained_at is not None:
            print(f"e2e: maps {' '.join(chained)} orphaned through chains (bpfmap_map_orphaned 1) after {chained_at:.0f}s")
        else:
            got = {r["metric"]["id"]: r["value"][1] for r in query(base, orphaned_of(chained))}
            print(f"e2e: FAIL maps kept only through chains are not all bpfmap_map_orphaned 1 within {FIRE_TIMEOUT}s: "
                  f"wanted {chained}, got {got}", file=sys.stderr)
            bad = True
    if n_orphans:
        if counted_at is not None:
            print(f"e2e: BpfMapsOutlivedTheirPod counts the simulator's {n_orphans} orphans after {counted_at:.0f}s")
        else:
            print(f"e2e: FAIL BpfMapsOutlivedTheirPod never counted {n_orphans} maps (the simulator's, direct and chained) "
                  f"within {FIRE_TIMEOUT}s: it fired with {outlived_value(firing(base)):.0f}", file=sys.stderr)
            bad = True
    return 1 if bad else 0


def resolve(base, comm, prefix):
    t0 = time.time()
    w, churn = wanted(base, comm, prefix)
    stuck = {"BpfMapFdStuckInFlight"} if has_iter_unix(base) else set()
    must = stuck | {"BpfMapUnexplainedReferences", "BpfProcessMapFilesGrowing", churn, "BpfMapNearlyFull", "BpfPinnedMapUnused", "BpfMapsOutlivedTheirPod"}
    resolved = {}
    _, chained = orphans()
    chained_gone = None if chained else 0.0
    while time.time() - t0 < RESOLVE_TIMEOUT:
        still = matched(firing(base), w)
        for name in must - still:
            resolved.setdefault(name, time.time() - t0)
        if chained_gone is None and not query(base, orphaned_of(chained)):
            chained_gone = time.time() - t0
        if not (must & still) and chained_gone is not None:
            break
        time.sleep(1)
    bad = False
    for name in sorted(must):
        if name in resolved:
            print(f"e2e: alert {name} resolved {resolved[name]:.0f}s after cleanup")
        else:
            print(f"e2e: FAIL alert {name} still firing {RESOLVE_TIMEOUT}s after the simulator cleaned up", file=sys.stderr)
            bad = True
    if chained:
        if chained_gone is not None:
            print(f"e2e: the chained orphans' series gone {chained_gone:.0f}s after cleanup")
        else:
            print(f"e2e: FAIL bpfmap_map_orphaned of {chained} still published {RESOLVE_TIMEOUT}s after cleanup", file=sys.stderr)
            bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    mode, base, comm, prefix = sys.argv[1:5]
    sys.exit({"fire": fire, "resolve": resolve}[mode](base, comm, prefix))
