#!/usr/bin/env python3
"""Assertions of the container test on one scrape of the exporter's /metrics.

    container_check.py METRICS_FILE STATE_JSON SCRAPE_NO

STATE_JSON is what container_scenario.py wrote (map ids by case, holder pids). Prints one
line per assertion (`ok` or `FAIL`), exits 1 if any failed.

Each map of the scenario has exactly one reference (refcount 1), and the test
knows which holder takes it, so holders by kind and unexplained refs are
asserted exactly, per map id, on every scrape including the first.
"""
import json
import os
import re
import sys

# What the census explains. A case whose entry is False is asserted as the
# census of this tree reports it: with no holder, the reference is published
# as unexplained (a false leak). When the census learns to explain a case, the
# test fails on its unexplained 0 and names the entry to set to True here.
COVERS = {
    # Pins on a bpffs that is not mounted in the exporter's mount namespace:
    # a second host bpffs mount (not under /sys/fs/bpf) and a private bpffs in
    # another process's mount namespace.
    "other_mount_ns_pins": True,
    # An fd in an SCM_RIGHTS message that nobody received (iter/unix, 5.17+),
    # holder kind "inflight", received by the scenario process (its socket is
    # in the host's network namespace, the exporter's container in its own:
    # the walk enters it).
    "inflight": True,
    # An io_uring fixed file explained as holder kind "io_uring" (the ring's
    # owner).
    "io_uring": True,
    # A fixed file of a ring that only a thread's registered-ring table holds
    # (no fd anywhere). While False, it is the scenario's one real
    # unexplained reference.
    "registered_rings": False,
    # Unexplained counts are published only when every holder source was
    # complete: bpfmap_holder_source_complete{source}, bpfmap_pid_namespace_host
    # and bpfmap_maps_unexplained_withheld exist. In this scenario every source
    # must be complete and nothing withheld.
    "withholding": True,
}

# CONTAINER_COVERS=a,b (environment) sets those entries to True for one run,
# to try a tree whose census is ahead of this file.
for _key in filter(None, os.environ.get("CONTAINER_COVERS", "").split(",")):
    if _key not in COVERS:
        raise SystemExit(f"container_check: CONTAINER_COVERS names {_key!r}; known: {', '.join(COVERS)}")
    COVERS[_key] = True

# case -> (COVERS key or None, holders when explained)
CASES = {
    "pin_sys": (None, {"pin": 1}),
    "file": (None, {"file": 1}),
    "pin_host2": ("other_mount_ns_pins", {"pin": 1}),
    "pin_ns": ("other_mount_ns_pins", {"pin": 1}),
    "inflight": ("inflight", {"inflight": 1}),
    # An io_uring fixed file: no fd table, pin, program, map or link holds the
    # map.
    "uring": ("io_uring", {"io_uring": 1}),
    # The same, in a ring no fd table holds.
    "uring_hidden": ("registered_rings", {"io_uring": 1}),
}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def parse(text):
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise SystemExit(f"check: unparsable exposition line: {line!r}")
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def main():
    text = open(sys.argv[1]).read()
    state = json.load(open(sys.argv[2]))
    scrape = sys.argv[3]
    samples = parse(text)
    failures = []

    def get(name, **labels):
        return [v for n, l, v in samples if n == name and all(l.get(k) == str(x) for k, x in labels.items())]

    def one(name, **labels):
        vals = get(name, **labels)
        return vals[0] if len(vals) == 1 else (None if not vals else vals)

    def check(ok, what, detail=""):
        print(f"container-test: scrape {scrape}: {'ok  ' if ok else 'FAIL'} {what}{(': ' + detail) if detail and not ok else ''}")
        if not ok:
            failures.append(what)

    for name in ("bpfmap_scrape_collector_success",):
        bad = [(l.get("collector"), v) for n, l, v in samples if n == name and v != 1]
        check(not bad and get(name), "every collector succeeded (bpfmap_scrape_collector_success == 1)",
              f"failing collectors {bad}" if bad else "no bpfmap_scrape_collector_success series")

    flip = " -- the exporter now publishes it: set COVERS['withholding'] = True in scripts/py/container_check.py"
    srcs = [(l.get("source"), v) for n, l, v in samples if n == "bpfmap_holder_source_complete"]
    pidns = one("bpfmap_pid_namespace_host")
    withheld = one("bpfmap_maps_unexplained_withheld")
    if COVERS["withholding"]:
        check(srcs and all(v == 1 for _, v in srcs), "every holder source complete (bpfmap_holder_source_complete == 1)",
              f"got {srcs}")
        check(pidns == 1, "bpfmap_pid_namespace_host == 1 (hostPID)", f"got {pidns}")
        check(withheld == 0, "bpfmap_maps_unexplained_withheld == 0", f"got {withheld}")
    else:
        check(not srcs and pidns is None and withheld is None,
              "no completeness metrics (COVERS['withholding'] is False: not published yet)",
              f"got holder_source_complete {srcs}, pid_namespace_host {pidns}, withheld {withheld}{flip}")

    expected_total = 0
    for case, (cover, explained) in CASES.items():
        m = state["maps"][case]
        mid, mname = m["id"], m["name"]
        covered = cover is None or COVERS[cover]
        want_holders = explained if covered else {}
        want_unexpl = 0 if (covered and explained) else 1
        expected_total += want_unexpl
        tag = f"{case} (map {mname}, id {mid})"
        info = [l for n, l, v in samples if n == "bpfmap_map_info" and l.get("id") == str(mid)]
        check(len(info) == 1 and info[0].get("name") == mname, f"{tag}: bpfmap_map_info present with its name",
              f"got {info}")
        rc = one("bpfmap_map_refcount", id=mid)
        check(rc == 1, f"{tag}: bpfmap_map_refcount == 1", f"got {rc}")
        holders = {l["kind"]: v for n, l, v in samples if n == "bpfmap_map_holders" and l.get("id") == str(mid)}
        check(holders == {k: float(v) for k, v in want_holders.items()},
              f"{tag}: holders by kind == {want_holders}", f"got {holders}")
        un = one("bpfmap_map_unexplained_refs", id=mid)
        hint = ""
        if not covered and un == 0:
            hint = (f" -- the census now explains this case: set COVERS[{cover!r}] = True in "
                    "scripts/py/container_check.py")
        check(un == want_unexpl, f"{tag}: bpfmap_map_unexplained_refs == {want_unexpl}"
              + ("" if covered else f" (COVERS[{cover!r}] is False: not explained yet)"), f"got {un}{hint}")

    # Node totals include every other map on the node, so only a lower bound
    # is known: at least the scenario's own unexplained references.
    total = one("bpfmap_maps_unexplained_refs")
    with_un = one("bpfmap_maps_with_unexplained_refs")
    check(isinstance(total, float) and total >= expected_total,
          f"bpfmap_maps_unexplained_refs >= {expected_total} (the scenario's)", f"got {total}")
    check(isinstance(with_un, float) and with_un >= expected_total,
          f"bpfmap_maps_with_unexplained_refs >= {expected_total}", f"got {with_un}")

    # The pin on the DaemonSet's mount is listed with its path.
    psys = state["maps"]["pin_sys"]
    paths = [l.get("path") for n, l, v in samples if n == "bpfmap_pin_info" and l.get("id") == str(psys["id"])]
    check(len(paths) == 1 and paths[0].endswith(psys["name"]),
          f"pin_sys: one bpfmap_pin_info whose path ends in {psys['name']}", f"got {paths}")
    if COVERS["other_mount_ns_pins"]:
        for case in ("pin_host2", "pin_ns"):
            m = state["maps"][case]
            paths = [l for n, l, v in samples if n == "bpfmap_pin_info" and l.get("id") == str(m["id"])]
            check(len(paths) == 1 and paths[0].get("path", "").endswith(m["name"]),
                  f"{case}: one bpfmap_pin_info whose path ends in {m['name']}", f"got {paths}")

    # The file holder is the scenario process, seen through hostPID.
    pid = state["pids"]["holder"]
    files = one("bpfmap_process_map_files", pid=pid)
    check(files == 1, f"holder process {pid}: bpfmap_process_map_files == 1", f"got {files}")

    if COVERS["inflight"]:
        # The receiver of the in-flight fd is named: the scenario process owns
        # the receiving socket; every network namespace was walked.
        infl = one("bpfmap_process_map_inflight_files", pid=pid)
        check(infl == 1, f"holder process {pid}: bpfmap_process_map_inflight_files == 1 (the receiver named)",
              f"got {infl}")
        unreach = one("bpfmap_inflight_network_namespaces", state="unreachable")
        walked = one("bpfmap_inflight_network_namespaces", state="walked")
        check(unreach == 0 and isinstance(walked, float) and walked >= 1,
              "bpfmap_inflight_network_namespaces: none unreachable", f"walked {walked}, unreachable {unreach}")
        age = one("bpfmap_map_inflight_age_seconds", id=state["maps"]["inflight"]["id"])
        check(isinstance(age, float) and age >= 0, "in-flight map: bpfmap_map_inflight_age_seconds present",
              f"got {age}")

    own = one("bpfmap_exporter_maps")
    check(isinstance(own, float) and own > 0, "bpfmap_exporter_maps > 0 (own maps accounted as own)", f"got {own}")
    if failures:
        print(f"container-test: scrape {scrape}: {len(failures)} assertion(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
