//! The collector registry and the outcome of each scrape. Every collector is named in
//! [`REGISTRY`], from which the `--collector.<name>` / `--no-collector.<name>`
//! flags are derived; every one is timed and reported by [`Report::run`] (or
//! [`Report::record`] for work measured on another thread) as
//! `bpfmap_scrape_collector_success{collector}` and
//! `bpfmap_scrape_collector_duration_seconds{collector}`. A failing collector
//! loses only its own series, never the whole scrape.
use std::time::Instant;

/// Where a collector's work happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A part of the census walk: it fills the [`Snapshot`].
    Census,
    /// A [`Collector`] that runs after the census and reads the snapshot.
    After,
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Stable name: `--collector.<name>` and the `collector` label.
    pub name: &'static str,
    pub default_on: bool,
    pub stage: Stage,
    pub help: &'static str,
}

const fn census(name: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        default_on: true,
        stage: Stage::Census,
        help,
    }
}

/// Every collector the exporter has.
pub const REGISTRY: &[Spec] = &[
    census(
        "maps",
        "census of every map (iter/bpf_map): type, sizes, refcount, usercount",
    ),
    census("memory", "per-map memory as fdinfo memlock reports it"),
    census(
        "entries",
        "live elements of maps: the kfunc (6.6+) or, within a per-scrape budget, per-map iteration",
    ),
    census("files", "map files in process fd tables (iter/task_file)"),
    census(
        "mmaps",
        "map files held only by mmaps (iter/task_vma, 5.15+)",
    ),
    census(
        "programs",
        "census of every program (iter/bpf_prog, 5.9+): type, tag, memory, refcount, the maps each uses, and its holders",
    ),
    census("outer_maps", "map-in-map slots that hold each map"),
    census("links", "iterator links attached to each map"),
    census("pins", "bpffs pins on every mounted bpffs"),
    census(
        "inflight",
        "map files in flight in unix sockets' receive queues (iter/unix, 5.17+) and the processes receiving them",
    ),
    census(
        "io_uring",
        "map and program files held by io_uring registered-file tables (bpf_loop, 5.17+), and the processes holding the rings",
    ),
    census(
        "file_attachments",
        "programs kept by socket and perf event files: socket filters, reuseport groups, perf events (read by the task, in-flight and io_uring walks)",
    ),
    census(
        "program_targets",
        "program references held by programs loaded against them (freplace, fentry on a program) and by tracing links to them",
    ),
    census(
        "cgroups",
        "programs attached to cgroups without a link (BPF_PROG_QUERY on every cgroup of the v2 hierarchy)",
    ),
    census(
        "map_programs",
        "programs held by maps: sockmap and sockhash slots, devmap and cpumap entries, struct_ops members",
    ),
    census(
        "netdev",
        "programs attached without a link to network devices and namespaces (XDP, tc cls_bpf/act_bpf, tcx, netkit, flow dissector), in every network namespace",
    ),
    census(
        "creators",
        "creator cgroup of each map (kernel memcg accounting, 5.11+), resolved to container and pod",
    ),
    census(
        "confirm",
        "re-reads of maps with unexplained references after --collector.maps.confirm-delay-ms, so references the kernel is still releasing are not published as leaks",
    ),
    Spec {
        name: "lifecycle",
        default_on: true,
        stage: Stage::After,
        help: "map create/destroy, refcount and syscall flow per process",
    },
    Spec {
        name: "k8s",
        default_on: true,
        stage: Stage::After,
        help: "pod names of the pods whose processes hold or create maps (with --k8s.enrich)",
    },
];

/// The registry entry of `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// The census parts that explain references: with any of them off or
/// failed, unexplained counts cannot be known.
#[cfg(test)]
const HOLDER_SOURCES: &[&str] = &[
    "files",
    "mmaps",
    "programs",
    "outer_maps",
    "links",
    "pins",
    "inflight",
    "io_uring",
];

/// The kind of repeated warning a failing collector logs (once per
/// `--log.repeat-interval` while it keeps failing).
const FAILED: &str = "collector failed";

/// One collector's outcome in one scrape.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub error: Option<String>,
}

/// The outcomes of one scrape, in the order the collectors ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Run `f` as collector `name`: time it, log a failure, record the outcome.
    pub fn run<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> Option<T> {
        let (r, seconds) = measure(f);
        self.record(name, seconds, r)
    }

    /// Record work measured with [`measure`] (on another thread).
    pub fn record<T>(
        &mut self,
        name: &'static str,
        seconds: f64,
        r: anyhow::Result<T>,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                crate::logging::repeat_ended((FAILED, name), |held| {
                    tracing::info!(
                        collector = name,
                        more_since_last = held,
                        "collector recovered"
                    );
                });
                self.outcomes.push(Outcome {
                    name,
                    ok: true,
                    seconds,
                    error: None,
                });
                Some(v)
            }
            Err(e) => {
                let mut error = format!("{e:#}");
                if crate::limits::out_of_fds(&e) {
                    error = format!("{error} ({})", crate::limits::out_of_fds_hint());
                }
                crate::logging::warn_repeated((FAILED, name), |held| {
                    tracing::warn!(collector = name, error = %error, more_since_last = held, "collector failed");
                });
                self.outcomes.push(Outcome {
                    name,
                    ok: false,
                    seconds,
                    error: Some(error),
                });
                None
            }
        }
    }

    /// Whether `name` ran and succeeded in this scrape.
    #[cfg(any(test, feature = "testing"))]
    pub fn succeeded(&self, name: &str) -> bool {
        self.outcomes.iter().any(|o| o.name == name && o.ok)
    }
}

/// Time `f`.
pub fn measure<T>(f: impl FnOnce() -> anyhow::Result<T>) -> (anyhow::Result<T>, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// Collectors that are enabled but could not load, and why: published as
/// `bpfmap_collector_unavailable{collector,reason}` so an alert can tell a
/// memory limit from another failure. A collector's entry is replaced by
/// its latest load.
pub mod unavailable {
    use std::sync::Mutex;

    /// Why a collector could not load.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Reason {
        /// ENOMEM from the verifier or a map's allocation (the memory
        /// cgroup's limit, most often).
        OutOfMemory,
        /// Any other load error (the log names it).
        Error,
    }

    impl Reason {
        pub fn label(self) -> &'static str {
            match self {
                Reason::OutOfMemory => "out_of_memory",
                Reason::Error => "error",
            }
        }
    }

    static NOTED: Mutex<Vec<(&'static str, Reason)>> = Mutex::new(Vec::new());

    /// Record that `collector` could not load, for `reason`.
    pub fn note(collector: &'static str, reason: Reason) {
        if let Ok(mut v) = NOTED.lock() {
            v.retain(|(c, _)| *c != collector);
            v.push((collector, reason));
        }
    }

    /// Record that `collector` loaded.
    pub fn clear(collector: &'static str) {
        if let Ok(mut v) = NOTED.lock() {
            v.retain(|(c, _)| *c != collector);
        }
    }

    /// Every collector that could not load, with its reason.
    pub fn list() -> Vec<(&'static str, Reason)> {
        NOTED.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_flag_safe() {
        let mut names: Vec<_> = REGISTRY.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        for n in names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
        }
        for h in HOLDER_SOURCES {
            assert_eq!(spec(h).map(|s| s.stage), Some(Stage::Census), "{h}");
        }
    }

    #[test]
    fn report_records_success_and_failure() {
        let mut r = Report::default();
        assert_eq!(r.run("maps", || Ok(3)), Some(3));
        assert_eq!(r.run::<()>("pins", || anyhow::bail!("boom")), None);
        assert!(r.succeeded("maps") && !r.succeeded("pins") && !r.succeeded("files"));
        assert_eq!(r.outcomes[1].error.as_deref(), Some("boom"));
    }
}
