#!/usr/bin/env python3
"""Write a test copy of deploy/prometheus/rules.yml with `for:`, windows and
floors shortened so the end-to-end test sees alerts fire within a minute.

Every substitution is explicit per alert and must match: if the rules change
so that a pattern no longer occurs, this fails (instead of silently testing
the long-window rule). Usage: e2e_shorten_rules.py <rules.yml> <out.yml>
"""
import sys

import yaml

FOR = "5s"
# alert -> [(old, new), ...] applied to its expr
EXPR = {
    "BpfMapUnexplainedReferences": [],
    "BpfProgramUnexplainedReferences": [],
    "BpfMapLeakDetectionBlind": [],
    "BpfMapFdStuckInFlight": [("> 1800", "> 5")],
    "BpfMapRefcountImbalance": [("[1h]", "[1m]"), ("> 1000", "> 5")],
    "BpfProcessMapFilesGrowing": [
        ("bpfmap_process_map_files > 500", "bpfmap_process_map_files > 10"),
        ("delta(bpfmap_process_map_files[1h]) >= 10", "delta(bpfmap_process_map_files[20s]) >= 3"),
    ],
    "BpfMapsAccumulating": [("[6h]", "[1m]"), ("offset 6h", "offset 30s"), ("> 100", "> 5")],
    "BpfMapCountGrowing": [("offset 6h", "offset 30s"), ("> 200", "> 5"), ("1.25 *", "1.0 *")],
    "BpfMapMemoryGrowing": [("[6h]", "[1m]"), ("86400", "600"), ("268435456", "1048576")],
    "BpfPinnedMapMemoryGrowing": [("[6h]", "[1m]"), ("86400", "600"), ("134217728", "65536")],
    "BpfMapNearlyFull": [],
    "BpfPinnedMapUnused": [],
    "BpfMapsOutlivedTheirPod": [],
    "BpfProgramsOutlivedTheirPod": [],
    "BpfMapExporterDown": [],
    "BpfMapExporterAbsent": [],
    "BpfMapExporterCollectorFailing": [],
    "BpfMapExporterProbeNotAttached": [],
}


def main(src, dst):
    doc = yaml.safe_load(open(src))
    seen = set()
    for g in doc["groups"]:
        g["interval"] = "1s"
        for r in g["rules"]:
            if "record" in r:
                # Recording rules have no for: and are evaluated every second too.
                continue
            name = r.get("alert")
            if name not in EXPR:
                sys.exit(f"e2e_shorten_rules.py: alert {name} has no entry: add its shortened windows to scripts/py/e2e_shorten_rules.py")
            seen.add(name)
            for old, new in EXPR[name]:
                if old not in r["expr"]:
                    sys.exit(f"e2e_shorten_rules.py: {name}: {old!r} not in its expr any more: update scripts/py/e2e_shorten_rules.py")
                r["expr"] = r["expr"].replace(old, new)
            r["for"] = FOR
    missing = set(EXPR) - seen
    if missing:
        sys.exit(f"e2e_shorten_rules.py: alerts {sorted(missing)} are gone from rules.yml: update scripts/py/e2e_shorten_rules.py")
    yaml.safe_dump(doc, open(dst, "w"), sort_keys=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
