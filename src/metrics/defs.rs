//! Every metric family the exporter publishes: name, help and type,
//! declared once. Call sites name a definition; none repeats a help string.
use prometheus::proto::MetricType;

use super::Def;

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def::new(name, help, MetricType::GAUGE)
}
const fn counter(name: &'static str, help: &'static str) -> Def {
    Def::new(name, help, MetricType::COUNTER)
}
const fn histogram(name: &'static str, help: &'static str) -> Def {
    Def::new(name, help, MetricType::HISTOGRAM)
}

pub const BPF_PROGRAM_RUN_SECONDS_TOTAL: Def = counter(
    "bpfmap_bpf_program_run_seconds_total",
    "Time spent in the exporter's own BPF programs (kernel BPF stats).",
);
pub const BPF_PROGRAM_RUNS_TOTAL: Def = counter(
    "bpfmap_bpf_program_runs_total",
    "Runs of the exporter's own BPF programs (kernel BPF stats; needs --bpf.enable-stats or sysctl kernel.bpf_stats_enabled=1).",
);
pub const BPFFS_MOUNTS: Def = gauge(
    "bpfmap_bpffs_mounts",
    "Mounted bpffs instances visible to the exporter.",
);
pub const CENSUS_SETTLED_REFS: Def = gauge(
    "bpfmap_census_settled_refs",
    "References that looked unexplained in this scrape's census and were released within the confirm delay (deferred frees); never counted as unexplained.",
);
pub const HOLDER_SOURCE_COMPLETE: Def = gauge(
    "bpfmap_holder_source_complete",
    "1 when the holder source ran and saw every holder it could this scrape; 0 when it was off, failed or incomplete (walk cut short, bpffs unreachable, task walk outside the host pid namespace).",
);
pub const MAPS_UNEXPLAINED_WITHHELD: Def = gauge(
    "bpfmap_maps_unexplained_withheld",
    "Maps whose unexplained count is not published this scrape: a holder source that could explain them was off, failed or incomplete (see bpfmap_holder_source_complete).",
);
pub const PINS_INFERRED: Def = gauge(
    "bpfmap_pins_inferred",
    "Map pins the bpffs walk did not reach this scrape (cut short, denied, or in a mount it cannot enter), inferred per map as usercount less its files and iterator links; counted in bpfmap_map_holders with kind pin, their paths unknown. Inferred only while every file source and the links are complete.",
);
pub const PID_NAMESPACE_HOST: Def = gauge(
    "bpfmap_pid_namespace_host",
    "1 when the exporter runs in the host's (initial) pid namespace; 0 means process holders are invisible (run with hostPID: true / podman --pid=host).",
);
pub const BPFFS_MOUNT_REACHABLE: Def = gauge(
    "bpfmap_bpffs_mount_reachable",
    "1 when the pin walk could enter this bpffs superblock; 0 when its mount is unreachable (another mount namespace without CAP_SYS_PTRACE, or hidden under another mount at the same mount point): unexplained counts it could explain are withheld.",
);
pub const PIN_SERIES_OMITTED: Def = gauge(
    "bpfmap_pin_series_omitted",
    "Pins without a bpfmap_pin_info series this scrape: pins of maps the per-map budget left out that a program uses, and pins over --collector.pins.max-series; bpfmap_pinned_objects still counts them.",
);
pub const BPFFS_SKIPPED_ENTRIES: Def = gauge(
    "bpfmap_bpffs_skipped_entries",
    "bpffs entries the pin walk skipped this scrape, by reason.",
);
pub const BUILD_INFO: Def = gauge("bpfmap_build_info", "Build of the exporter.");
pub const CREATOR_MAPS: Def = gauge(
    "bpfmap_creator_maps",
    "Maps by the container and pod whose memory cgroup they are charged to (their creator's; empty labels for the host or a non-container cgroup). Exact, never capped.",
);
pub const CREATOR_MAPS_MEMORY_BYTES: Def = gauge(
    "bpfmap_creator_maps_memory_bytes",
    "Kernel memory of the maps charged to each container and pod (empty labels for the host). Exact, never capped.",
);
pub const EVENTS_LOST_TOTAL: Def = counter(
    "bpfmap_events_lost_total",
    "Lifecycle events lost: the sum of bpfmap_lifecycle_events_lost_total over every event and reason.",
);
pub const LIFECYCLE_EVENTS_LOST_TOTAL: Def = counter(
    "bpfmap_lifecycle_events_lost_total",
    "Lifecycle events seen but not attributed (not in bpfmap_maps_created_total / bpfmap_maps_destroyed_total), or not logged, by event and reason.",
);
pub const EXPORTER_MAP_MEMORY_BYTES: Def = gauge(
    "bpfmap_exporter_map_memory_bytes",
    "Kernel memory of the exporter's own BPF maps.",
);
pub const EXPORTER_MAPS: Def = gauge(
    "bpfmap_exporter_maps",
    "BPF maps that belong to the exporter itself (excluded from every node series).",
);
pub const FEATURE_AVAILABLE: Def = gauge(
    "bpfmap_feature_available",
    "Kernel features the census uses: task_vma (mmap holders, 5.15+), elem_count (hash map entries by kfunc, 6.6+), elem_iter (hash map entries by an iter/bpf_map_elem walk, 5.9+ where the kernel allows it), map_memcg (creator memory cgroup of maps, 5.11+ with CONFIG_MEMCG), iter_unix (in-flight holders, 5.17+).",
);
pub const K8S_POD_INFO: Def = gauge(
    "bpfmap_k8s_pod_info",
    "Namespace and name of a pod whose processes hold or create maps; join on pod_uid.",
);
pub const K8S_POD_LAST_SUCCESS_TIMESTAMP_SECONDS: Def = gauge(
    "bpfmap_k8s_pod_last_success_timestamp_seconds",
    "Unix time of the last successful pod list refresh.",
);
pub const K8S_POD_REFRESH_FAILURES_TOTAL: Def = counter(
    "bpfmap_k8s_pod_refresh_failures_total",
    "Failed refreshes of the node's pod list (the last good list is kept).",
);
pub const K8S_POD_REFRESH_SUCCESS: Def = gauge(
    "bpfmap_k8s_pod_refresh_success",
    "1 when the last refresh of the node's pod list succeeded.",
);
pub const K8S_POD_REFRESHES_TOTAL: Def = counter(
    "bpfmap_k8s_pod_refreshes_total",
    "Refreshes of the node's pod list.",
);
pub const K8S_PODS: Def = gauge(
    "bpfmap_k8s_pods",
    "Pods on this node known to the pod-name enrichment.",
);
pub const MAP_CREATOR_GONE: Def = gauge(
    "bpfmap_map_creator_gone",
    "1 for a map whose creating memory cgroup was removed (the map outlived its container or pod); join on id.",
);
pub const MAP_CREATOR_INFO: Def = gauge(
    "bpfmap_map_creator_info",
    "Creator of a map charged to a non-root memory cgroup: its cgroup id, container and pod (empty where the path names none); join on id.",
);
pub const MAP_ENTRIES: Def = gauge(
    "bpfmap_map_entries",
    "Live elements of maps with a variable number of elements: bpf_map_sum_elem_count (6.6+) or a per-map walk (bpfmap_map_entries_maps says which; bpfmap_map_entries_age_seconds how old a walked count is).",
);
pub const MAP_ENTRIES_AGE_SECONDS: Def = gauge(
    "bpfmap_map_entries_age_seconds",
    "Age in whole seconds of a map's bpfmap_map_entries when it was counted by a walk (0: counted this scrape; older: served from an earlier scrape within --collector.entries.budget).",
);
pub const MAP_ENTRIES_MAPS: Def = gauge(
    "bpfmap_map_entries_maps",
    "Maps with a variable element count, by how it was obtained (method: kfunc, iter, next_key, none) and whether it is fresh, cached from an earlier scrape, or missing.",
);
pub const MAP_ENTRIES_BUDGET_SECONDS: Def = gauge(
    "bpfmap_map_entries_budget_seconds",
    "Time this scrape could spend walking maps to count their elements (--collector.entries.budget: a fixed time, or a share of this census's time before counting).",
);
pub const MAP_ENTRIES_WALK_SECONDS: Def = gauge(
    "bpfmap_map_entries_walk_seconds",
    "Time this scrape spent walking maps to count their elements.",
);
pub const MAP_ENTRIES_OLDEST_SECONDS: Def = gauge(
    "bpfmap_map_entries_oldest_seconds",
    "Age of the oldest walked element count served this scrape.",
);
pub const MAP_ENTRIES_OVER_BUDGET_MAPS: Def = gauge(
    "bpfmap_map_entries_over_budget_maps",
    "Maps whose element walk costs more than the whole budget (estimated from their size, or stopped at the budget's end with the whole budget to itself): not counted while the budget is no larger (raise --collector.entries.budget).",
);
pub const MAP_ENTRIES_WALKS_STOPPED_TOTAL: Def = counter(
    "bpfmap_map_entries_walks_stopped_total",
    "Element walks stopped at the end of a scrape's budget (the map keeps its last count, or none; a map whose walk outlasts a whole budget is counted in bpfmap_map_entries_over_budget_maps).",
);
pub const MAP_ENTRIES_WALK_ERRORS_TOTAL: Def = counter(
    "bpfmap_map_entries_walk_errors_total",
    "Element walks that failed (the map keeps its last count, or none).",
);
pub const MAP_HOLDERS: Def = gauge(
    "bpfmap_map_holders",
    "Holders of map references, by kind: file, pin, program, map (outer-map slots), mmap, link, inflight, io_uring, struct_ops (a registered struct_ops map's registration and the kernel objects using its ops).",
);
pub const MAP_INFO: Def = gauge(
    "bpfmap_map_info",
    "Map metadata; join on id: ... * on(id) group_left(name, map_type) bpfmap_map_info.",
);
pub const MAP_KEY_SIZE_BYTES: Def = gauge("bpfmap_map_key_size_bytes", "Key size of the map.");
pub const MAP_LIFETIMES_TIMED_TOTAL: Def = counter(
    "bpfmap_map_lifetimes_timed_total",
    "Lifetimes observed in bpfmap_map_lifetime_seconds by where their end came from: source=probe (the kernel's destruction time, bpf_map_free_deferred) or source=census (the scrape that found the map gone: no probe, or the probe missed it).",
);
pub const MAP_LIFETIME_SECONDS: Def = histogram(
    "bpfmap_map_lifetime_seconds",
    "Lifetime of destroyed maps, from creation to the scrape that found them gone, by map type.",
);
pub const MAP_MAX_ENTRIES: Def = gauge("bpfmap_map_max_entries", "max_entries of the map.");
pub const MAP_MEMORY_BYTES: Def = gauge(
    "bpfmap_map_memory_bytes",
    "Kernel memory of the map as fdinfo memlock reports it (real usage on 6.4+, an estimate from sizes on 5.11-6.3, charged pages on 5.10).",
);
pub const MAP_REFCOUNT: Def = gauge(
    "bpfmap_map_refcount",
    "References on the map (bpf_map.refcnt), without the census iterator's own.",
);
pub const MAP_REFCOUNT_DECREMENTS_TOTAL: Def = counter(
    "bpfmap_map_refcount_decrements_total",
    "Map refcount decrements seen by the attached refcount probes, by process.",
);
pub const MAP_REFCOUNT_INCREMENTS_TOTAL: Def = counter(
    "bpfmap_map_refcount_increments_total",
    "Map refcount increments seen by the attached refcount probes, by process.",
);
pub const MAP_SERIES_OMITTED: Def = gauge(
    "bpfmap_map_series_omitted",
    "Maps whose per-map series were not published, by reason: budget (not a map that matters nor among the largest), cap (--collector.maps.max-series), disabled (--collector.maps.no-per-map).",
);
pub const MAP_SYSCALLS_TOTAL: Def = counter(
    "bpfmap_map_syscalls_total",
    "bpf() map commands from user space, by process, command and result.",
);
pub const MAP_UNEXPLAINED_REFS: Def = gauge(
    "bpfmap_map_unexplained_refs",
    "References on the map that no file, pin, program, outer map, mmap or link explains: the leak signal.",
);
pub const MAP_USERCOUNT: Def = gauge(
    "bpfmap_map_usercount",
    "User references on the map (bpf_map.usercnt).",
);
pub const MAP_VALUE_SIZE_BYTES: Def =
    gauge("bpfmap_map_value_size_bytes", "Value size of the map.");
pub const MAPS: Def = gauge(
    "bpfmap_maps",
    "Live BPF maps on the node, by map type (the exporter's own excluded).",
);
pub const MAPS_CREATED_TOTAL: Def = counter(
    "bpfmap_maps_created_total",
    "Maps created, by creating process and map type.",
);
pub const MAPS_DESTROYED_TOTAL: Def = counter(
    "bpfmap_maps_destroyed_total",
    "Maps destroyed, by the process that created them (comm unknown: created before the exporter started) and map type.",
);
pub const MAPS_CREATOR_GONE: Def = gauge(
    "bpfmap_maps_creator_gone",
    "Maps whose creating memory cgroup was removed: they outlived the container or pod that created them. Exact.",
);
pub const MAPS_MEMORY_BYTES: Def = gauge(
    "bpfmap_maps_memory_bytes",
    "Kernel memory of live BPF maps by map type, as fdinfo memlock reports it.",
);
pub const MAPS_UNEXPLAINED_REFS: Def = gauge(
    "bpfmap_maps_unexplained_refs",
    "Sum over all maps of references no user-visible holder explains (the leak signal).",
);
pub const MAPS_WITH_UNEXPLAINED_REFS: Def = gauge(
    "bpfmap_maps_with_unexplained_refs",
    "Maps with at least one reference no user-visible holder explains.",
);
pub const PIN_INFO: Def = gauge(
    "bpfmap_pin_info",
    "One bpffs pin: its mount, path, object type and object id.",
);
pub const PINNED_MAP_MEMORY_BYTES: Def = gauge(
    "bpfmap_pinned_map_memory_bytes",
    "Memory of the distinct maps pinned in a bpffs mount.",
);
pub const PROGRAMS: Def = gauge(
    "bpfmap_programs",
    "Live programs on the node (the exporter's own excluded), by program type (bpftool's names).",
);
pub const PROGRAMS_MEMORY_BYTES: Def = gauge(
    "bpfmap_programs_memory_bytes",
    "Memory of live programs (fdinfo memlock: their pages), by program type.",
);
pub const EXPORTER_PROGRAMS: Def = gauge(
    "bpfmap_exporter_programs",
    "The exporter's own programs, excluded from every node series.",
);
pub const PROGRAM_INFO: Def = gauge(
    "bpfmap_program_info",
    "Program metadata; join on id: ... * on(id) group_left(name, prog_type) bpfmap_program_info.",
);
pub const PROGRAM_REFCOUNT: Def = gauge(
    "bpfmap_program_refcount",
    "bpf_prog_aux.refcnt, without the census iterator's own reference.",
);
pub const PROGRAM_MEMORY_BYTES: Def = gauge(
    "bpfmap_program_memory_bytes",
    "Memory of the program (fdinfo memlock).",
);
pub const PROGRAM_MAPS: Def = gauge("bpfmap_program_maps", "Maps the program uses.");
pub const PROGRAM_LOAD_TIME_SECONDS: Def = gauge(
    "bpfmap_program_load_time_seconds",
    "When the program was loaded, Unix seconds.",
);
pub const PROGRAM_HOLDERS: Def = gauge(
    "bpfmap_program_holders",
    "Holders of program references, by kind: file, pin, link, prog_array, io_uring, inflight, program (a program loaded against it or a tracing link to it), and the attachments kept without a link: xdp, tc, tcx, netkit, flow_dissector, cgroup, perf_event, socket, reuseport, sockmap, devmap, struct_ops.",
);
pub const PROGRAM_UNEXPLAINED_REFS: Def = gauge(
    "bpfmap_program_unexplained_refs",
    "Program refcount minus every holder; published only when exact: every source that can hold a program of its type was read completely, or the holders found explain the whole refcount (0).",
);
pub const PROGRAMS_UNEXPLAINED_WITHHELD: Def = gauge(
    "bpfmap_programs_unexplained_withheld",
    "Programs whose unexplained count is not published: references beyond the holders read could be held by a source that is off, incomplete or not read (see bpfmap_program_holder_source_complete).",
);
pub const PROGRAM_HOLDER_SOURCE_COMPLETE: Def = gauge(
    "bpfmap_program_holder_source_complete",
    "1 when the program holder source ran and saw every holder it could this scrape; 0 when it was off, failed, incomplete, or is not read by this build (xt_bpf, tun, lwt, lirc). attachments is 1 only when every attachment source is.",
);
pub const LINKS: Def = gauge(
    "bpfmap_links",
    "Live links on the node (the exporter's own excluded), by link type (bpftool's names).",
);
pub const EXPORTER_LINKS: Def = gauge(
    "bpfmap_exporter_links",
    "The exporter's own links (of its own programs), excluded from every node series.",
);
pub const LINK_INFO: Def = gauge(
    "bpfmap_link_info",
    "Link metadata: type, the program it holds, its attach type (empty where the kernel does not tell) and target (where it is attached: device and network namespace, cgroup, netns, attach point; 'detached' when its target is gone); join on id.",
);
pub const LINK_HOLDERS: Def = gauge(
    "bpfmap_link_holders",
    "Holders of link references, by kind: file (a link file in an fd table), pin, io_uring (a link file held only by io_uring tables); kinds with 0 holders are omitted.",
);
pub const LINK_SERIES_OMITTED: Def = gauge(
    "bpfmap_link_series_omitted",
    "Links without per-link series, by reason: budget (not held by pins alone), cap (over the per-link series cap), disabled (--collector.maps.no-per-map).",
);
pub const PROGRAM_SERIES_OMITTED: Def = gauge(
    "bpfmap_program_series_omitted",
    "Programs without per-program series, by reason: budget (not held by pins alone, not among the largest), cap (over the per-program series cap), disabled (--collector.maps.no-per-map).",
);
pub const MAP_ROOTS: Def = gauge(
    "bpfmap_map_roots",
    "Roots that keep the map alive through every chain (programs, outer maps, prog_arrays, links), by kind: process, pin, inflight, attachment, unexplained, unknown, cycle.",
);
pub const MAP_ORPHANED: Def = gauge(
    "bpfmap_map_orphaned",
    "1 when the map's creating cgroup is gone and only pins keep it alive, directly or through any chain; 0 when a live root (a process, an attachment, a file in flight) does. Absent where that cannot be known.",
);
pub const MAPS_ORPHANED: Def = gauge(
    "bpfmap_maps_orphaned",
    "Maps whose creating cgroup is gone and that only pins keep alive, through any chain.",
);
pub const MAPS_ORPHANED_MEMORY_BYTES: Def = gauge(
    "bpfmap_maps_orphaned_memory_bytes",
    "Memory of orphaned maps.",
);
pub const MAPS_ORPHANED_WITHHELD: Def = gauge(
    "bpfmap_maps_orphaned_withheld",
    "Maps whose creating cgroup is gone and whose orphan verdict is withheld: a root is unknown or unexplained and no live root settles it.",
);
pub const CREATOR_ORPHANED_MAPS: Def = gauge(
    "bpfmap_creator_orphaned_maps",
    "Orphaned maps by the container and pod that created them (exact, never capped).",
);
pub const CREATOR_ORPHANED_MEMORY_BYTES: Def = gauge(
    "bpfmap_creator_orphaned_memory_bytes",
    "Memory of orphaned maps by the container and pod that created them.",
);
pub const PROGRAM_CREATOR_INFO: Def = gauge(
    "bpfmap_program_creator_info",
    "Loader of a program, as the lifecycle probes recorded its BPF_PROG_LOAD: the kernfs id of the loading task's memory cgroup, its container and pod (remembered after the cgroup is removed; empty where the path names none) and its comm; join on id. Absent where the loader is unknown (bpfmap_programs_orphaned_withheld says why).",
);
pub const PROGRAM_ORPHANED: Def = gauge(
    "bpfmap_program_orphaned",
    "1 when the program's loader's memory cgroup is gone and only pins keep it alive, directly or through any chain; 0 when its loader's cgroup lives or a live root (a process, a link, a file in flight) holds it. Absent where that cannot be known.",
);
pub const PROGRAMS_ORPHANED: Def = gauge(
    "bpfmap_programs_orphaned",
    "Programs whose loader's memory cgroup is gone and that only pins keep alive, through any chain.",
);
pub const PROGRAMS_ORPHANED_MEMORY_BYTES: Def = gauge(
    "bpfmap_programs_orphaned_memory_bytes",
    "Memory of orphaned programs (fdinfo memlock).",
);
pub const PROGRAMS_ORPHANED_WITHHELD: Def = gauge(
    "bpfmap_programs_orphaned_withheld",
    "Programs without an orphan verdict, by reason: loaded_before_start, not_recorded, record_overwritten, no_recorder, table_full (the loader is unknown), cgroup_unresolved (the loader's memory cgroup was never resolved), root_unknown (the loader's cgroup is gone and a root is unknown or unexplained with no live root).",
);
pub const CREATOR_ORPHANED_PROGRAMS: Def = gauge(
    "bpfmap_creator_orphaned_programs",
    "Orphaned programs by the container and pod that loaded them (exact, never capped).",
);
pub const CREATOR_ORPHANED_PROGRAMS_MEMORY_BYTES: Def = gauge(
    "bpfmap_creator_orphaned_programs_memory_bytes",
    "Memory of orphaned programs by the container and pod that loaded them.",
);
pub const PIN_RETAINED_MEMORY_BYTES: Def = gauge(
    "bpfmap_pin_retained_memory_bytes",
    "Bytes (maps and programs) that removing this pin alone would free: the objects whose only root it is. Largest first, under the pin series budget.",
);
pub const PINNED_MAP_UNUSED: Def = gauge(
    "bpfmap_pinned_map_unused",
    "1 when no program uses the pinned map (a stale pin candidate).",
);
pub const PINNED_OBJECTS: Def = gauge(
    "bpfmap_pinned_objects",
    "Pinned objects (distinct inodes) per bpffs mount and object type.",
);
pub const PROBE_ATTACHED: Def = gauge(
    "bpfmap_probe_attached",
    "1 when the lifecycle probe is attached in this mode, 0 when not.",
);
pub const PROCESS_MAP_FDS: Def = gauge(
    "bpfmap_process_map_fds",
    "File descriptors the process has open on maps (dups count).",
);
pub const PROCESS_MAP_FILES: Def = gauge(
    "bpfmap_process_map_files",
    "Distinct map files (struct file, not fds) in the process's fd table.",
);
pub const PROCESS_MAP_INFLIGHT_FILES: Def = gauge(
    "bpfmap_process_map_inflight_files",
    "Map files in flight (SCM_RIGHTS messages not yet received) to unix sockets the process owns, directly or inside an in-flight socket, and held in no fd table (iter/unix, 5.17+).",
);
pub const MAP_INFLIGHT_AGE_SECONDS: Def = gauge(
    "bpfmap_map_inflight_age_seconds",
    "How long the map's oldest in-flight file (held only by an unreceived SCM_RIGHTS message) has stayed in the same socket's queue, since this exporter first saw it there.",
);
pub const INFLIGHT_NETNS: Def = gauge(
    "bpfmap_inflight_network_namespaces",
    "Network namespaces the in-flight walk (iter/unix sees one namespace per walk) covered (state=walked) and could not enter or identify (state=unreachable; in-flight counts they could explain are withheld).",
);
pub const PROCESS_MAP_MMAP_FILES: Def = gauge(
    "bpfmap_process_map_mmap_files",
    "Map files the process keeps alive only through mmaps (in no fd).",
);
pub const SCRAPE_COLLECTOR_DURATION_SECONDS: Def = gauge(
    "bpfmap_scrape_collector_duration_seconds",
    "Time the collector took in this scrape.",
);
pub const SCRAPE_COLLECTOR_SUCCESS: Def = gauge(
    "bpfmap_scrape_collector_success",
    "1 when the collector succeeded in this scrape.",
);

pub const COLLECTOR_UNAVAILABLE: Def = gauge(
    "bpfmap_collector_unavailable",
    "1 for an enabled collector whose BPF programs or maps could not load, by reason: out_of_memory (ENOMEM from the verifier or a map, usually the memory limit) or error. The rest of the exporter runs without it.",
);

pub const SCRAPES_TOTAL: Def = counter(
    "bpfmap_scrapes_total",
    "Scrapes (censuses) the collector thread ran since start; concurrent HTTP requests share one.",
);

pub const SCRAPE_REQUESTS_TOTAL: Def = counter(
    "bpfmap_scrape_requests_total",
    "HTTP scrape requests answered since start, before this scrape's.",
);

pub const WEB_CONFIG_LAST_RELOAD_SUCCESSFUL: Def = gauge(
    "bpfmap_web_config_last_reload_successful",
    "1 when the last change of --web.config.file (or a file it names) was applied or none happened since start; 0 when it was refused and the configuration in force was kept (see bpfmap_web_config_reloads_total).",
);
pub const WEB_CONFIG_RELOADS_TOTAL: Def = counter(
    "bpfmap_web_config_reloads_total",
    "Reloads of a changed --web.config.file by result: applied, or kept the configuration in force because the file was unreadable, empty, invalid (a partial write included) or the change needs a restart (restart_required: TLS on or off, basic auth removed, client certificates no longer required).",
);
pub const WEB_AUTH_CHECKS_TOTAL: Def = counter(
    "bpfmap_web_auth_checks_total",
    "Basic-auth checks by result: cached (good credential from the cache), verified (good credential by bcrypt), denied (missing, unknown user or wrong password), busy (answered 503: every bcrypt slot was taken).",
);

pub const ORIGIN_CAPTURES_TOTAL: Def = counter(
    "bpfmap_origin_captures_total",
    "User stacks the lifecycle programs captured (--collector.origins), by bpf() command: map_create, prog_load, link_create, obj_pin, obj_get, map_get_fd_by_id, prog_get_fd_by_id.",
);
pub const ORIGIN_STACKS_TRUNCATED_TOTAL: Def = counter(
    "bpfmap_origin_stacks_truncated_total",
    "Captured stacks labelled truncated, by reason: frame_pointers (the walk stopped before a thread entry point: code without frame pointers on the path) or depth (deeper than the frames captured).",
);
pub const ORIGIN_RECORDS_LOST_TOTAL: Def = counter(
    "bpfmap_origin_records_lost_total",
    "Origin records not stored, by reason: ring_full (the kernel found the origins ring buffer full) or queue_full (too many records waiting to be symbolized).",
);
pub const ORIGIN_PROCESS_GONE_TOTAL: Def = counter(
    "bpfmap_origin_process_gone_total",
    "Origin records whose process had exited before its memory map was read: their frames are the kernel's build id and file offset, named only where a binary of that build id was seen before.",
);
pub const ORIGIN_STORE_EVICTIONS_TOTAL: Def = counter(
    "bpfmap_origin_store_evictions_total",
    "Origin records evicted from the store by its bounds (--collector.origins.max-stacks in all, 8 per object) or replaced by a newer creation of the same id.",
);
pub const ORIGIN_STORE_RECORDS: Def = gauge(
    "bpfmap_origin_store_records",
    "Origin records stored (each one bpf() call with its stack).",
);
pub const ORIGIN_STORE_STACKS: Def = gauge(
    "bpfmap_origin_store_stacks",
    "Distinct stacks stored (records with identical frames share one).",
);
pub const ORIGIN_STORE_BYTES: Def = gauge(
    "bpfmap_origin_store_bytes",
    "Bytes the origin store's records and stacks hold (an upper bound: strings shared between frames are counted per frame).",
);

/// Every definition, for checks over the whole set.
#[cfg(any(test, feature = "testing"))]
pub const ALL: &[&Def] = &[
    &BPF_PROGRAM_RUN_SECONDS_TOTAL,
    &BPF_PROGRAM_RUNS_TOTAL,
    &BPFFS_MOUNTS,
    &BPFFS_SKIPPED_ENTRIES,
    &BUILD_INFO,
    &CREATOR_MAPS,
    &CREATOR_MAPS_MEMORY_BYTES,
    &EVENTS_LOST_TOTAL,
    &LIFECYCLE_EVENTS_LOST_TOTAL,
    &ORIGIN_CAPTURES_TOTAL,
    &ORIGIN_STACKS_TRUNCATED_TOTAL,
    &ORIGIN_RECORDS_LOST_TOTAL,
    &ORIGIN_PROCESS_GONE_TOTAL,
    &ORIGIN_STORE_EVICTIONS_TOTAL,
    &ORIGIN_STORE_RECORDS,
    &ORIGIN_STORE_STACKS,
    &ORIGIN_STORE_BYTES,
    &EXPORTER_MAP_MEMORY_BYTES,
    &EXPORTER_MAPS,
    &FEATURE_AVAILABLE,
    &K8S_POD_INFO,
    &K8S_POD_LAST_SUCCESS_TIMESTAMP_SECONDS,
    &K8S_POD_REFRESH_FAILURES_TOTAL,
    &K8S_POD_REFRESH_SUCCESS,
    &K8S_POD_REFRESHES_TOTAL,
    &K8S_PODS,
    &MAP_CREATOR_GONE,
    &MAP_CREATOR_INFO,
    &MAP_ENTRIES,
    &MAP_ENTRIES_AGE_SECONDS,
    &MAP_ENTRIES_BUDGET_SECONDS,
    &MAP_ENTRIES_MAPS,
    &MAP_ENTRIES_OLDEST_SECONDS,
    &MAP_ENTRIES_OVER_BUDGET_MAPS,
    &MAP_ENTRIES_WALK_ERRORS_TOTAL,
    &MAP_ENTRIES_WALKS_STOPPED_TOTAL,
    &MAP_ENTRIES_WALK_SECONDS,
    &MAP_HOLDERS,
    &MAP_INFO,
    &MAP_KEY_SIZE_BYTES,
    &MAP_LIFETIME_SECONDS,
    &MAP_LIFETIMES_TIMED_TOTAL,
    &MAP_MAX_ENTRIES,
    &MAP_MEMORY_BYTES,
    &MAP_REFCOUNT,
    &MAP_REFCOUNT_DECREMENTS_TOTAL,
    &MAP_REFCOUNT_INCREMENTS_TOTAL,
    &MAP_SERIES_OMITTED,
    &MAP_SYSCALLS_TOTAL,
    &MAP_UNEXPLAINED_REFS,
    &MAP_USERCOUNT,
    &MAP_VALUE_SIZE_BYTES,
    &MAPS,
    &MAPS_CREATED_TOTAL,
    &MAPS_DESTROYED_TOTAL,
    &MAPS_CREATOR_GONE,
    &MAPS_MEMORY_BYTES,
    &CENSUS_SETTLED_REFS,
    &HOLDER_SOURCE_COMPLETE,
    &MAPS_UNEXPLAINED_WITHHELD,
    &PINS_INFERRED,
    &PID_NAMESPACE_HOST,
    &BPFFS_MOUNT_REACHABLE,
    &PIN_SERIES_OMITTED,
    &MAPS_UNEXPLAINED_REFS,
    &MAPS_WITH_UNEXPLAINED_REFS,
    &PIN_INFO,
    &PINNED_MAP_MEMORY_BYTES,
    &PINNED_MAP_UNUSED,
    &MAP_ROOTS,
    &MAP_ORPHANED,
    &MAPS_ORPHANED,
    &MAPS_ORPHANED_MEMORY_BYTES,
    &MAPS_ORPHANED_WITHHELD,
    &CREATOR_ORPHANED_MAPS,
    &CREATOR_ORPHANED_MEMORY_BYTES,
    &PROGRAM_CREATOR_INFO,
    &PROGRAM_ORPHANED,
    &PROGRAMS_ORPHANED,
    &PROGRAMS_ORPHANED_MEMORY_BYTES,
    &PROGRAMS_ORPHANED_WITHHELD,
    &CREATOR_ORPHANED_PROGRAMS,
    &CREATOR_ORPHANED_PROGRAMS_MEMORY_BYTES,
    &PIN_RETAINED_MEMORY_BYTES,
    &PROGRAMS,
    &PROGRAMS_MEMORY_BYTES,
    &EXPORTER_PROGRAMS,
    &PROGRAM_INFO,
    &PROGRAM_REFCOUNT,
    &PROGRAM_MEMORY_BYTES,
    &PROGRAM_MAPS,
    &PROGRAM_LOAD_TIME_SECONDS,
    &PROGRAM_HOLDERS,
    &PROGRAM_UNEXPLAINED_REFS,
    &PROGRAMS_UNEXPLAINED_WITHHELD,
    &PROGRAM_HOLDER_SOURCE_COMPLETE,
    &PROGRAM_SERIES_OMITTED,
    &LINKS,
    &EXPORTER_LINKS,
    &LINK_INFO,
    &LINK_HOLDERS,
    &LINK_SERIES_OMITTED,
    &PINNED_OBJECTS,
    &PROBE_ATTACHED,
    &PROCESS_MAP_FDS,
    &PROCESS_MAP_FILES,
    &PROCESS_MAP_MMAP_FILES,
    &PROCESS_MAP_INFLIGHT_FILES,
    &MAP_INFLIGHT_AGE_SECONDS,
    &INFLIGHT_NETNS,
    &SCRAPE_COLLECTOR_DURATION_SECONDS,
    &SCRAPE_COLLECTOR_SUCCESS,
    &COLLECTOR_UNAVAILABLE,
    &SCRAPES_TOTAL,
    &SCRAPE_REQUESTS_TOTAL,
    &WEB_CONFIG_LAST_RELOAD_SUCCESSFUL,
    &WEB_CONFIG_RELOADS_TOTAL,
    &WEB_AUTH_CHECKS_TOTAL,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a metric is defined twice");
        for d in ALL {
            assert!(d.name.starts_with("bpfmap_"), "{}", d.name);
            assert!(!d.help.is_empty(), "{} has no help", d.name);
            // Classic text escapes only \\ and \n in HELP, OpenMetrics also ":
            // help without quotes reads the same in both formats.
            assert!(
                !d.help.contains('"'),
                "{}: no double quotes in help",
                d.name
            );
            let total = d.name.ends_with("_total");
            assert_eq!(
                total,
                d.kind == MetricType::COUNTER,
                "{}: _total exactly on counters",
                d.name
            );
        }
    }

    #[test]
    fn every_metric_is_documented_in_docs_metrics() {
        let doc = include_str!("../../docs/metrics.md");
        let table_rows: Vec<&str> = doc.lines().filter(|l| l.starts_with('|')).collect();
        for d in ALL {
            let name = format!("`{}`", d.name);
            assert!(
                table_rows.iter().any(|row| row.contains(&name)),
                "{} is not in the metric tables of docs/metrics.md",
                d.name
            );
        }
    }
}
