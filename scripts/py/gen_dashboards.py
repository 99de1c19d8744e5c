#!/usr/bin/env python3
"""Generate the Grafana dashboards in dashboards/*.json (run after editing).

Every panel uses the datasource variable ${datasource}. The node dashboards'
queries filter on the node variable $instance; the fleet dashboard's filter
on the job variable $job and read only recorded series. Node and cluster
totals read the recording rules of deploy/prometheus/rules.yml
(instance:bpfmap_*, job:bpfmap_*, job_map_type:bpfmap_*); per-map,
per-process and per-type detail reads the raw series.
scripts/check-deploy.sh checks all of that, and tests/e2e/run.sh runs every
query against a real Prometheus with those rules loaded.
  scripts/py/gen_dashboards.py          rewrite the JSON files
  scripts/py/gen_dashboards.py --check  exit 1 if they differ from this script
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parents[2] / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'
J = 'job=~"$job"'
RI = "$__rate_interval"
REC = "Recorded by deploy/prometheus/rules.yml."


# One series per node: the recorded node total, merged over target labels
# other than instance (a restarted pod's) so the legend stays the node.
def node(series):
    return f"sum by (instance) ({series}{{{I}}})"


# One series per job with every label kept (the cluster external label of a
# global view, too): any aggregation drops the metric name from the legend.
def cluster(series):
    return f"sum without () ({series}{{{J}}})"


# The fleet-wide total of a cluster total.
def fleet(series):
    return f"sum({series}{{{J}}})"


def panel(title, exprs, kind="timeseries", unit="short", w=12, h=8, desc="", legend=None):
    targets = []
    for n, e in enumerate(exprs if isinstance(exprs, list) else [exprs]):
        expr, leg = (e if isinstance(e, tuple) else (e, legend or ""))
        t = {"datasource": DS, "expr": expr, "refId": chr(65 + n), "legendFormat": leg}
        if kind == "table":
            t.update({"format": "table", "instant": True})
        targets.append(t)
    p = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "_w": w,
        "_h": h,
    }
    if kind == "table":
        p["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}]
    return p


def query_var(name, label, query):
    """A multi-value query variable with an All option matching anything."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
        "sort": 1,
        "current": {},
        "hide": 0,
    }


NODE_VAR = query_var("instance", "Node", "label_values(bpfmap_build_info, instance)")
JOB_VAR = query_var("job", "Job", "label_values(job:bpfmap_maps:sum, job)")


def to_node(p):
    """A table of nodes whose rows link to the node overview of that node."""
    p["fieldConfig"]["defaults"]["links"] = [{
        "title": "Node overview",
        "url": "/d/bpfmap-node-overview?var-datasource=${datasource}&var-instance=${__data.fields.instance}",
    }]
    return p


def dashboard(uid, title, desc, panels, var=NODE_VAR):
    x = y = 0
    row_h = 0
    out = []
    for n, p in enumerate(panels, 1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        p["id"] = n
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_h = max(row_h, h)
        out.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["bpf", "bpfmap-exporter"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                var,
            ]
        },
        "annotations": {"list": []},
        "links": [
            {"title": "bpfmap-exporter dashboards", "type": "dashboards", "tags": ["bpfmap-exporter"], "asDropdown": True}
        ],
        "panels": out,
    }


DASHBOARDS = {
    "fleet.json": dashboard(
        "bpfmap-fleet",
        "BPF maps / Fleet",
        "Cluster totals and the nodes that stand out, from recorded series only "
        "(job:bpfmap_*, job_map_type:bpfmap_*, instance:bpfmap_*; deploy/prometheus/rules.yml): "
        "cheap at thousands of nodes, and works on a global view that has only the recorded series.",
        [
            panel("Nodes", fleet("job:bpfmap_nodes:count"), "stat", w=4, h=4, desc=f"Nodes whose census is scraped. {REC}"),
            panel("Live maps", fleet("job:bpfmap_maps:sum"), "stat", w=4, h=4, desc=REC),
            panel("Map memory", fleet("job:bpfmap_maps_memory_bytes:sum"), "stat", "bytes", w=4, h=4, desc=REC),
            panel("Pinned map memory", fleet("job:bpfmap_pinned_map_memory_bytes:sum"), "stat", "bytes", w=4, h=4, desc=REC),
            panel("Unexplained references", fleet("job:bpfmap_maps_unexplained_refs:sum"), "stat", w=4, h=4,
                  desc=f"References no holder explains, summed over every node: the leak signal. {REC}"),
            panel("Nodes with unexplained references", fleet("job:bpfmap_nodes_with_unexplained_refs:count"), "stat", w=4, h=4, desc=REC),
            panel("Live maps by job", cluster("job:bpfmap_maps:sum"), desc=REC),
            panel("Map memory by job", cluster("job:bpfmap_maps_memory_bytes:sum"), unit="bytes", desc=REC),
            panel("Maps by type", f"sum by (map_type) (job_map_type:bpfmap_maps:sum{{{J}}})", legend="{{map_type}}", desc=REC),
            panel("Map memory by type", f"sum by (map_type) (job_map_type:bpfmap_maps_memory_bytes:sum{{{J}}})", unit="bytes",
                  legend="{{map_type}}", desc=REC),
            panel("Create vs destroy rate", [
                (fleet("job:bpfmap_maps_created:rate5m"), "created"),
                (fleet("job:bpfmap_maps_destroyed:rate5m"), "destroyed"),
            ], unit="ops", desc=f"Maps created and destroyed per second over 5m, every node (lifecycle collector). {REC}"),
            panel("Unexplained references and leaking nodes", [
                (fleet("job:bpfmap_maps_unexplained_refs:sum"), "unexplained references"),
                (fleet("job:bpfmap_nodes_with_unexplained_refs:count"), "nodes with unexplained references"),
            ], desc=REC),
            panel("Maps that outlived their creator", cluster("job:bpfmap_maps_creator_gone:sum"),
                  desc=f"Maps whose creating container or pod is gone. {REC}"),
            panel("Pinned maps", cluster("job:bpfmap_pinned_maps:sum"), desc=REC),
            to_node(panel("Nodes with the most unexplained references", f"topk(20, instance:bpfmap_maps_unexplained_refs:sum{{{J}}} > 0)",
                          "table", w=8, desc=f"Open a node's overview from its row. {REC}")),
            to_node(panel("Nodes with the most map memory", f"topk(20, instance:bpfmap_maps_memory_bytes:sum{{{J}}})", "table", "bytes", w=8,
                          desc=f"Open a node's overview from its row. {REC}")),
            to_node(panel("Nodes creating the most maps", f"topk(20, instance:bpfmap_maps_created:rate5m{{{J}}} > 0)", "table", "ops", w=8,
                          desc=f"Maps created per second over 5m. Open a node's overview from its row. {REC}")),
        ],
        var=JOB_VAR,
    ),
    "node-overview.json": dashboard(
        "bpfmap-node-overview",
        "BPF maps / Node overview",
        "Maps, memory, create versus destroy rate and refcount balance per node. "
        "The node totals read the recording rules of deploy/prometheus/rules.yml.",
        [
            panel("Live maps", node("instance:bpfmap_maps:sum"), "stat", w=6, h=4, desc=REC, legend="{{instance}}"),
            panel("Map memory", node("instance:bpfmap_maps_memory_bytes:sum"), "stat", "bytes", w=6, h=4, desc=REC, legend="{{instance}}"),
            panel("Unexplained references", node("instance:bpfmap_maps_unexplained_refs:sum"), "stat", w=6, h=4,
                  desc=f"References no holder explains: the leak signal. {REC}", legend="{{instance}}"),
            panel("Maps with unexplained references", node("instance:bpfmap_maps_with_unexplained_refs:sum"), "stat", w=6, h=4,
                  desc=REC, legend="{{instance}}"),
            # bpfmap_maps is already one series per node and map type.
            panel("Maps by type", f"sum by (map_type) (bpfmap_maps{{{I}}})", legend="{{map_type}}"),
            panel("Map memory by type", f"sum by (map_type) (bpfmap_maps_memory_bytes{{{I}}})", unit="bytes", legend="{{map_type}}"),
            panel("Create vs destroy rate", [
                (node("instance:bpfmap_maps_created:rate5m"), "created {{instance}}"),
                (node("instance:bpfmap_maps_destroyed:rate5m"), "destroyed {{instance}}"),
            ], unit="ops", desc=f"Maps created and destroyed per second over 5m (lifecycle collector). {REC} "
                               "Per creator: the leak hunting dashboard."),
            panel("Refcount balance (increments - decrements)",
                  f"{node('instance:bpfmap_map_refcount_increments:rate5m')} - {node('instance:bpfmap_map_refcount_decrements:rate5m')}",
                  unit="ops", desc=f"Net references taken per second over 5m; persistently above 0 means references are not put back. {REC} "
                                   "Per comm: the leak hunting dashboard.", legend="{{instance}}"),
            panel("Unexplained references over time", node("instance:bpfmap_maps_unexplained_refs:sum"), desc=REC, legend="{{instance}}"),
            panel("Fullest maps (entries / max_entries)",
                  f"topk(10, (bpfmap_map_entries{{{I}}} / bpfmap_map_max_entries{{{I}}}) * on (instance, id) group_left (name, map_type) bpfmap_map_info{{{I}}})",
                  unit="percentunit", desc="Hash-family maps (6.6+).", legend="{{name}} ({{id}})"),
            # bpfmap_programs is already one series per node and program type.
            panel("Programs by type", f"sum by (prog_type) (bpfmap_programs{{{I}}})", legend="{{prog_type}}",
                  desc="Live programs (the exporter's own excluded), by type as bpftool names it."),
            panel("Program memory by type", f"sum by (prog_type) (bpfmap_programs_memory_bytes{{{I}}})", unit="bytes",
                  legend="{{prog_type}}"),
        ],
    ),
    "leak-hunting.json": dashboard(
        "bpfmap-leak-hunting",
        "BPF maps / Leak hunting",
        "Who leaks: maps with unexplained references, processes holding map files, per-process refcount balance, "
        "maps that outlived their pod and the pins that keep them.",
        [
            panel("Maps with unexplained references",
                  f"topk(20, (bpfmap_map_unexplained_refs{{{I}}} > 0) * on (instance, id) group_left (name, map_type) bpfmap_map_info{{{I}}})",
                  "table", w=24, desc="Each row is one leaking map; find its holders with bpftool map show id <id>."),
            panel("Top holders: map files per process", f"topk(20, bpfmap_process_map_files{{{I}}})", "table",
                  desc="Distinct map files in the process's fd table, with container and pod."),
            panel("Top holders: map fds per process", f"topk(20, bpfmap_process_map_fds{{{I}}})", "table"),
            panel("Map files per process over time", f"topk(10, bpfmap_process_map_files{{{I}}})", legend="{{comm}} {{pid}}"),
            panel("Map files held only by mmaps", f"topk(10, bpfmap_process_map_mmap_files{{{I}}})", legend="{{comm}} {{pid}}"),
            panel("Refcount increments - decrements by comm",
                  f"sum by (comm) (rate(bpfmap_map_refcount_increments_total{{{I}}}[{RI}])) - sum by (comm) (rate(bpfmap_map_refcount_decrements_total{{{I}}}[{RI}]))",
                  unit="ops", legend="{{comm}}"),
            panel("Maps created - destroyed by creator (1h)",
                  f"sum by (comm) (increase(bpfmap_maps_created_total{{{I}}}[1h])) - sum by (comm) (increase(bpfmap_maps_destroyed_total{{{I}}}[1h]))",
                  legend="{{comm}}", desc="Net maps per creating comm; a creator that only grows is accumulating maps."),
            panel("Maps created by comm", f"sum by (comm) (rate(bpfmap_maps_created_total{{{I}}}[{RI}]))", unit="ops", legend="{{comm}}"),
            panel("Map syscalls by command", f"sum by (cmd, result) (rate(bpfmap_map_syscalls_total{{{I}}}[{RI}]))", unit="ops", legend="{{cmd}} {{result}}"),
            panel("Map lifetime (median)",
                  f"histogram_quantile(0.5, sum by (le, map_type) (rate(bpfmap_map_lifetime_seconds_bucket{{{I}}}[{RI}])))",
                  unit="s", legend="{{map_type}}", desc="Short-lived churn shows as a low median with a high create rate."),
            panel("Orphaned map memory by creator", f"bpfmap_creator_orphaned_memory_bytes{{{I}}}", unit="bytes",
                  legend="{{instance}} pod {{pod_uid}} container {{container_id}}",
                  desc="Memory of maps whose creating cgroup is gone and that only pins keep alive, directly or through a "
                       "pinned program, outer map or prog_array (exact; the BpfMapsOutlivedTheirPod alert). The labels "
                       "name the cgroup the maps are charged to now: the pod without a container once the container "
                       "is gone, both empty once the pod is gone too."),
            panel("Largest retained pins", f"topk(10, bpfmap_pin_retained_memory_bytes{{{I}}})", "table", "bytes",
                  desc="What removing each pin alone would free: the maps and programs whose only root it is. "
                       "bpfmap-exporter explain --pin <mount><path> lists them."),
            panel("Orphaned maps",
                  f"(bpfmap_map_orphaned{{{I}}} == 1) * on (instance, id) group_left (name, map_type) bpfmap_map_info{{{I}}}",
                  "table",
                  desc="Each row is one orphaned map; bpfmap-exporter explain --id <id> prints its chains to the pins "
                       "that keep it and what removing each would free."),
        ],
    ),
    "bpffs.json": dashboard(
        "bpfmap-bpffs",
        "BPF maps / bpffs pins",
        "Pins by mount, pinned bytes, stale pins.",
        [
            panel("bpffs mounts", f"bpfmap_bpffs_mounts{{{I}}}", "stat", w=8, h=4, legend="{{instance}}"),
            panel("Pinned maps", node("instance:bpfmap_pinned_maps:sum"), "stat", w=8, h=4, desc=REC, legend="{{instance}}"),
            panel("Pinned map memory", node("instance:bpfmap_pinned_map_memory_bytes:sum"), "stat", "bytes", w=8, h=4, desc=REC, legend="{{instance}}"),
            panel("Pinned objects by mount and type", f"sum by (mount, object_type) (bpfmap_pinned_objects{{{I}}})", legend="{{mount}} {{object_type}}"),
            panel("Pinned map memory by mount", f"sum by (mount) (bpfmap_pinned_map_memory_bytes{{{I}}})", unit="bytes", legend="{{mount}}"),
            panel("Pinned maps no program uses (stale pin candidates)", f"bpfmap_pinned_map_unused{{{I}}} == 1", "table"),
            panel("Pins", f"bpfmap_pin_info{{{I}}}", "table",
                  desc="Pins of programs and links, of maps with per-map series and of maps no program uses (the per-map budget); every pin with --collector.maps.publish-all. bpfmap-exporter explain --pin PATH shows any pin."),
            panel("Entries the pin walk skipped", f"sum by (mount, reason) (bpfmap_bpffs_skipped_entries{{{I}}})", legend="{{mount}} {{reason}}", w=24),
        ],
    ),
    "exporter-self.json": dashboard(
        "bpfmap-exporter-self",
        "BPF maps / Exporter self",
        "Scrape time, collector health, probe modes and the exporter's own overhead.",
        [
            panel("Targets up", f"up{{job=\"bpfmap-exporter\",{I}}}", legend="{{instance}}", w=8),
            panel("Scrape duration", f"scrape_duration_seconds{{job=\"bpfmap-exporter\",{I}}}", unit="s", legend="{{instance}}", w=8),
            panel("Samples per scrape", f"scrape_samples_scraped{{job=\"bpfmap-exporter\",{I}}}", legend="{{instance}}", w=8),
            panel("Collector duration", f"max by (collector) (bpfmap_scrape_collector_duration_seconds{{{I}}})", unit="s", legend="{{collector}}"),
            panel("Collector success", f"min by (collector) (bpfmap_scrape_collector_success{{{I}}})", legend="{{collector}}"),
            panel("Probe attach modes", f"bpfmap_probe_attached{{{I}}}", "table", desc="1 = attached in that mode; mode none = not attached."),
            panel("Lifecycle events lost", f"sum by (instance) (rate(bpfmap_events_lost_total{{{I}}}[{RI}]))", unit="ops", legend="{{instance}}"),
            panel("Own BPF programs: time per run",
                  f"sum by (program) (rate(bpfmap_bpf_program_run_seconds_total{{{I}}}[{RI}])) / sum by (program) (rate(bpfmap_bpf_program_runs_total{{{I}}}[{RI}]))",
                  unit="s", legend="{{program}}", desc="Needs kernel BPF stats (--bpf.enable-stats or sysctl kernel.bpf_stats_enabled=1)."),
            panel("Own BPF programs: CPU", f"sum by (program) (rate(bpfmap_bpf_program_run_seconds_total{{{I}}}[{RI}]))", unit="percentunit", legend="{{program}}"),
            panel("Exporter resident memory", f"process_resident_memory_bytes{{job=\"bpfmap-exporter\",{I}}}", unit="bytes", legend="{{instance}}"),
            panel("Exporter CPU", f"rate(process_cpu_seconds_total{{job=\"bpfmap-exporter\",{I}}}[{RI}])", unit="percentunit", legend="{{instance}}"),
            panel("Maps without per-map series, by reason", f"sum by (instance, reason) (bpfmap_map_series_omitted{{{I}}})",
                  legend="{{instance}} {{reason}}",
                  desc="budget: not a map that matters and not among the largest; cap: over --collector.maps.max-series; disabled: --collector.maps.no-per-map. Aggregates still count every map."),
            panel("Exporter's own maps", f"bpfmap_exporter_maps{{{I}}}", legend="{{instance}}"),
            panel("Build", f"bpfmap_build_info{{{I}}}", "table"),
        ],
    ),
}


def main():
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, d in DASHBOARDS.items():
        text = json.dumps(d, indent=2, sort_keys=False) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"dashboards {stale} differ from scripts/py/gen_dashboards.py: run scripts/py/gen_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
