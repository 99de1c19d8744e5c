//! Command line, in Prometheus exporter style (`--web.listen-address`,
//! `--collector.<name>` / `--no-collector.<name>`, `--log.level`).
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

/// Default listen port, documented in README.md and docs/flags.md.
pub const DEFAULT_PORT: u16 = 9863;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bpfmap-exporter",
    version,
    about = "Prometheus exporter for BPF maps: who holds them, what they cost, and which references nothing explains"
)]
pub struct Cli {
    /// Address to listen on for the web interface and telemetry: :PORT (every IPv4 and IPv6 address, one dual-stack socket; IPv4 only where the host has IPv6 disabled), HOST:PORT or [IPv6]:PORT. Repeatable.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9863", action = ArgAction::Append)]
    pub listen: Vec<String>,

    /// Web configuration file in exporter-toolkit's format (TLS, client certificates, basic auth, response headers). Re-read when it or a file it names changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Close a connection whose request header (or TLS handshake) has not arrived within this time.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = crate::units::parse_duration)]
    pub web_read_header_timeout: Duration,

    /// Close a keep-alive connection idle this long between requests.
    #[arg(long = "web.idle-timeout", default_value = "2m", value_parser = crate::units::parse_duration)]
    pub web_idle_timeout: Duration,

    /// Serve at most this many connections at once; more wait in the listen backlog.
    #[arg(long = "web.max-connections", default_value_t = 512)]
    pub web_max_connections: usize,

    /// Close a connection whose response write made no progress for this long (a client that does not read).
    #[arg(long = "web.write-timeout", default_value = "10s", value_parser = crate::units::parse_duration)]
    pub web_write_timeout: Duration,

    /// Close a connection whose response is still being written this long after its request began.
    #[arg(long = "web.request-timeout", default_value = "1m", value_parser = crate::units::parse_duration)]
    pub web_request_timeout: Duration,

    /// JSON API requests worked on at once; 16 per slot more wait up to 10 s, any more get 503 with Retry-After.
    #[arg(long = "web.max-api-requests", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub web_max_api_requests: u16,

    /// Serve the JSON API (/api/v1/*: this node's processes, fds, cgroups and pods, and with --collector.origins the code paths of their bpf() calls) to network clients without authentication or TLS. Without it, only loopback clients reach the API unless --web.config.file configures basic auth or TLS.
    #[arg(long = "web.expose-api")]
    pub web_expose_api: bool,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,

    /// Log level: error, warn, info, debug or trace (or target=level directives, comma-separated).
    #[arg(long = "log.level", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log format: logfmt (text; colour only on a terminal) or json (one object a line).
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    pub log_format: String,

    /// A warning that repeats (a collector failing every scrape) is logged the first time, then at most once per this interval with how many were held back (more_since_last=N), and once more at INFO when the condition ends.
    #[arg(long = "log.repeat-interval", default_value = "5m", value_parser = crate::units::parse_duration)]
    pub log_repeat_interval: Duration,

    /// /healthz answers 503 once the census (the map walk) has failed this many scrapes in a row, so the kubelet's liveness probe restarts a stuck exporter; 0 = never. A census that could not load does not count (bpfmap_collector_unavailable reports it).
    #[arg(long = "healthz.census-failures", default_value_t = 3)]
    pub healthz_census_failures: u32,

    /// Log every map create and destroy (map type, sizes, flags, pid, comm). Goes through a ring buffer; drops are counted in bpfmap_events_lost_total.
    #[arg(long = "log.map-events", action = ArgAction::SetTrue)]
    pub log_map_events: bool,

    /// Load everything, take one census, print a summary and exit (0 when every enabled collector succeeded).
    #[arg(long = "check", action = ArgAction::SetTrue)]
    pub check: bool,

    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux (for kernels built without CONFIG_DEBUG_INFO_BTF).
    #[arg(long = "btf.path")]
    pub btf_path: Option<PathBuf>,

    /// Publish per-map series for at most this many maps; 0 = no limit. The selected maps that matter most go first (unexplained references, creator gone, a file in flight, unused pin, near full, then the largest). Aggregates are always exact.
    #[arg(long = "collector.maps.max-series", default_value_t = crate::census::render::DEFAULT_MAX_MAP_SERIES)]
    pub max_map_series: usize,

    /// Besides the maps that matter (unexplained references, creator gone, a file in flight, pinned with no program, near full), the N largest maps by memory keep their per-map series.
    #[arg(long = "collector.maps.top-by-memory", default_value_t = crate::census::render::DEFAULT_TOP_BY_MEMORY)]
    pub top_by_memory: usize,

    /// A hash-family map (not LRU, 64 slots or more) with entries at or above this share of max_entries keeps its per-map series. 0 < ratio <= 1.
    #[arg(long = "collector.maps.near-full-ratio", default_value_t = crate::census::render::DEFAULT_NEAR_FULL_RATIO, value_parser = parse_ratio)]
    pub near_full_ratio: f64,

    /// Publish per-map series for every map, not only the maps that matter and the top by memory (still capped by --collector.maps.max-series; add --collector.maps.max-series=0 for all of them).
    #[arg(long = "collector.maps.publish-all", action = ArgAction::SetTrue)]
    pub publish_all_maps: bool,

    /// Publish no per-map series at all (only aggregates, processes and pins).
    #[arg(long = "collector.maps.no-per-map", action = ArgAction::SetTrue)]
    pub no_per_map: bool,

    /// Stop walking a bpffs tree after this many pinned objects, and after this many directories, per mount (what is skipped is reported; pins a cut walk misses are inferred from usercount).
    #[arg(long = "collector.pins.max-entries", default_value_t = 100_000)]
    pub pins_max_entries: usize,

    /// Do not descend deeper than this many directories in a bpffs tree.
    #[arg(long = "collector.pins.max-depth", default_value_t = 32)]
    pub pins_max_depth: usize,

    /// Cgroup hierarchy whose directory inodes are the maps' memory cgroup ids: the unified (v2) mount, or a tmpfs holding the v1 `memory` hierarchy (its `memory` directory is used). Default: the mount in /proc/self/mountinfo. In a pod, mount the host's /sys/fs/cgroup (for example at /host/sys/fs/cgroup) and point this at it.
    #[arg(long = "collector.creators.cgroup-root", value_name = "DIR")]
    pub creators_cgroup_root: Option<std::path::PathBuf>,
    /// Before publishing an unexplained reference, re-read the affected maps after this many milliseconds (up to three times, while their refcounts keep falling): references the kernel drops within its deferred-free window (a program just unloaded, a map just closed) are not leaks. 0 = publish the first reading.
    #[arg(long = "collector.maps.confirm-delay-ms", default_value_t = 100)]
    pub confirm_delay_ms: u64,

    /// Time each scrape may spend counting map elements by iteration (kernels before 6.6, and map types the kfunc does not count): a share of the census's own time before counting (20%: counting adds at most a fifth) or a fixed duration (50ms). Maps never counted first, then alternately the fullest and the longest uncounted; the rest keep their last count, published with its age (bpfmap_map_entries_age_seconds). Walks are stopped at the budget's end and left for a later scrape.
    #[arg(long = "collector.entries.budget", default_value = "20%", value_parser = crate::census::entries::Budget::parse)]
    pub entries_budget: crate::census::entries::Budget,

    /// How element counts are obtained: auto (the bpf_map_sum_elem_count kfunc where the kernel has it, 6.6+, iteration elsewhere) or iterate (iteration for every map, to compare with the kfunc).
    #[arg(long = "collector.entries.method", value_enum, default_value_t = crate::census::entries::Choice::Auto)]
    pub entries_method: crate::census::entries::Choice,

    /// Publish bpfmap_pin_info for at most this many pins per scrape; 0 = no limit.
    #[arg(long = "collector.pins.max-series", default_value_t = 10_000)]
    pub pins_max_series: usize,

    /// Distinct label sets the lifecycle collector keeps before folding the rest into comm="other".
    #[arg(long = "collector.lifecycle.max-processes", default_value_t = 512)]
    pub lifecycle_max_processes: usize,

    /// Add a pid label to lifecycle series (unbounded cardinality: opt-in).
    #[arg(long = "collector.lifecycle.pid-label", action = ArgAction::SetTrue)]
    pub lifecycle_pid_label: bool,

    /// Turn on the kernel's BPF run-time stats (BPF_ENABLE_STATS) while the exporter runs, so bpfmap_bpf_program_run* report the exporter's own BPF overhead. Costs every BPF program on the node a little; the alternative is sysctl kernel.bpf_stats_enabled=1.
    #[arg(long = "bpf.enable-stats", action = ArgAction::SetTrue)]
    pub bpf_enable_stats: bool,

    /// Attribute processes to a container id and pod UID from /proc/<pid>/cgroup (needs hostPID in Kubernetes). --k8s.attribution=false turns it off.
    #[arg(long = "k8s.attribution", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub k8s_attribution: bool,

    /// Resolve pod UIDs to namespace and pod name by listing this node's pods from the API server (in-cluster service account; RBAC: list pods). Publishes bpfmap_k8s_pod_info.
    #[arg(long = "k8s.enrich", action = ArgAction::SetTrue)]
    pub k8s_enrich: bool,

    /// Like --k8s.enrich, but list pods from the kubelet (e.g. https://$(NODE_IP):10250); needs nodes/proxy RBAC on a secured kubelet.
    #[arg(long = "k8s.kubelet-url", value_name = "URL")]
    pub k8s_kubelet_url: Option<String>,

    /// Do not verify the kubelet's serving certificate (often self-signed).
    #[arg(long = "k8s.insecure-skip-tls-verify", action = ArgAction::SetTrue)]
    pub k8s_insecure_skip_tls_verify: bool,

    /// This node's name for --k8s.enrich (default: $NODE_NAME, set from the downward API).
    #[arg(long = "k8s.node-name", value_name = "NAME")]
    pub k8s_node_name: Option<String>,

    /// Seconds between refreshes of the node's pod list (minimum 5).
    #[arg(long = "k8s.refresh-interval", default_value_t = 60)]
    pub k8s_refresh_interval: u64,

    /// Keep at most this many pods in the pod-name index.
    #[arg(long = "k8s.max-pods", default_value_t = 1000)]
    pub k8s_max_pods: usize,

    /// Keep names for the user stacks of origins (--collector.origins): --collector.origins.symbolize=false keeps only build id and file offset per frame, for nodes where reading other processes' binaries is not allowed.
    #[arg(long = "collector.origins.symbolize", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub origins_symbolize: bool,

    /// With --collector.origins, also ask the kernel for each frame's build id and file offset at the call, so a loader that exits before its memory map is read still has a stack (costs more per call: see BENCHMARKS.md).
    #[arg(long = "collector.origins.build-ids", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub origins_build_ids: bool,

    /// Distinct user stacks the origin store keeps at most (identical stacks are stored once; records, one per bpf() call, at most 8 times as many); the oldest records are evicted first (bpfmap_origin_store_evictions_total).
    #[arg(long = "collector.origins.max-stacks", default_value_t = crate::origins::DEFAULT_MAX_STACKS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub origins_max_stacks: usize,

    /// Enable a collector (all are on by default): --collector.<name>. Repeatable.
    #[arg(long = "collector", value_name = "NAME", hide = true)]
    pub enable: Vec<String>,

    /// Disable a collector: --no-collector.<name>. Repeatable.
    #[arg(long = "no-collector", value_name = "NAME", hide = true)]
    pub disable: Vec<String>,

    /// Run a subcommand instead of the exporter.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Create maps and leak files and pins at a chosen rate so alerts can be seen firing; cleans up on exit.
    SimulateLeak(crate::simulate::SimulateArgs),
    /// Take one census and explain maps (by --id, --name, --pin or --pid): facts, creator, every holder by identity, the unexplained remainder. Root.
    Explain(crate::explain::ExplainArgs),
}

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// A log level, or comma-separated `level` / `target=level` directives whose
/// levels are all known (a bare unknown word would be read by tracing as a
/// target name and silence every line).
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.split(',').all(|d| {
            let level = d
                .rsplit_once('=')
                .map(|(t, l)| (!t.is_empty()).then_some(l));
            match level {
                Some(Some(l)) => LEVELS.contains(&l.to_ascii_lowercase().as_str()),
                Some(None) => false,
                None => LEVELS.contains(&d.to_ascii_lowercase().as_str()),
            }
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a log level: use error, warn, info, debug or trace (or target=level directives such as info,bpfmap_exporter=debug)"
        ))
    }
}

/// The lifecycle collector's stack capture, toggled as a collector is
/// (`--collector.origins` / `--no-collector.origins`), off by default.
const ORIGINS: &str = "origins";

/// Rewrite `--collector.NAME` / `--no-collector.NAME` into `--collector NAME` /
/// `--no-collector NAME` so clap can parse them, keeping `--collector.maps.*`
/// option flags (which take values) untouched.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .flat_map(|a| {
            for (prefix, flag) in [
                ("--no-collector.", "--no-collector"),
                ("--collector.", "--collector"),
            ] {
                if let Some(name) = a.strip_prefix(prefix) {
                    // A bare name is a collector toggle (unknown names are
                    // rejected by validate() with the list of valid ones);
                    // `--collector.maps.max-series=...` is an ordinary flag.
                    if !name.is_empty() && !name.contains(['.', '=']) {
                        return vec![flag.to_string(), name.to_string()];
                    }
                }
            }
            vec![a]
        })
        .collect()
}

/// The `--help` section listing every collector of the registry.
fn collectors_help() -> String {
    let mut s = String::from("Collectors (--collector.<name> / --no-collector.<name>):\n");
    for c in crate::registry::REGISTRY {
        let on = if c.default_on { "on" } else { "off" };
        s.push_str(&format!("  {:<12} [{on}] {}\n", c.name, c.help));
    }
    s
}

impl Cli {
    pub fn parse_from_env() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let m = Self::command()
            .after_help(collectors_help())
            .get_matches_from(normalize_args(std::env::args()));
        Self::from_arg_matches(&m).unwrap_or_else(|e| e.exit())
    }

    /// Whether a collector is enabled after applying enable/disable flags.
    /// Returns an error naming valid collectors when a name is unknown.
    /// Everything the exporter is built from, derived from these flags.
    pub fn exporter_opts(&self) -> crate::exporter::ExporterOpts {
        use crate::census::{CensusOpts, Parts};
        let on = |n: &str| self.collector_enabled(n);
        crate::exporter::ExporterOpts {
            enabled: crate::registry::REGISTRY
                .iter()
                .map(|s| s.name)
                .filter(|n| on(n))
                .collect(),
            census: CensusOpts {
                btf_path: self.btf_path.clone(),
                parts: Parts::from_fn(on),
                pins_max_entries: self.pins_max_entries,
                pins_max_depth: self.pins_max_depth,
                keep_files: false,
                cgroup_root: self.creators_cgroup_root.clone(),
                confirm_delay: Duration::from_millis(self.confirm_delay_ms),
                entries_budget: self.entries_budget,
                entries_method: self.entries_method,
            },
            render: crate::census::render::RenderOpts {
                max_map_series: self.max_map_series,
                per_map: !self.no_per_map,
                all_maps: self.publish_all_maps,
                top_by_memory: self.top_by_memory,
                near_full_ratio: self.near_full_ratio,
                max_pin_series: self.pins_max_series,
            },
            k8s: crate::k8s::K8sOpts {
                attribution: self.k8s_attribution,
                enrich: self.k8s_enrich,
                kubelet_url: self.k8s_kubelet_url.clone(),
                insecure_skip_tls_verify: self.k8s_insecure_skip_tls_verify,
                node_name: self.k8s_node_name.clone(),
                refresh_interval: self.k8s_refresh_interval,
                max_pods: self.k8s_max_pods,
            },
            lifecycle: crate::lifecycle::LifecycleOpts {
                btf_path: self.btf_path.clone(),
                pid_label: self.lifecycle_pid_label,
                log_events: self.log_map_events,
                max_processes: self.lifecycle_max_processes,
                enable_stats: self.bpf_enable_stats,
                census: on("maps"),
                memcg_attribution: self.k8s_attribution,
                cgroup_root: self.creators_cgroup_root.clone(),
                origins: crate::origins::OriginsConfig {
                    enabled: self.collector_enabled(ORIGINS),
                    symbolize: self.origins_symbolize,
                    max_stacks: self.origins_max_stacks,
                    build_id: self.origins_build_ids,
                },
                #[cfg(feature = "testing")]
                knobs: crate::lifecycle::TestKnobs {
                    // The start-up tests make the kernel run out of memory with it.
                    counter_slots: std::env::var("BPFMAP_TEST_LIFECYCLE_SLOTS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(crate::bpf::lifecycle::records::SLOTS),
                    ..Default::default()
                },
                ..Default::default()
            },
            queue: self.web_max_connections,
            healthz_census_failures: self.healthz_census_failures,
            // The API tests make requests arrive while a census runs with it.
            #[cfg(feature = "testing")]
            census_delay: std::time::Duration::from_millis(
                std::env::var("BPFMAP_TEST_CENSUS_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
        }
    }

    pub fn collector_enabled(&self, name: &str) -> bool {
        let default = crate::registry::spec(name)
            .map(|s| s.default_on)
            .unwrap_or(false);
        if self.disable.iter().any(|n| n == name) {
            return false;
        }
        default || self.enable.iter().any(|n| n == name)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for n in self.enable.iter().chain(self.disable.iter()) {
            if crate::registry::spec(n).is_none() && n != ORIGINS {
                let names: Vec<_> = crate::registry::REGISTRY.iter().map(|s| s.name).collect();
                anyhow::bail!(
                    "unknown collector {n:?}: valid names are {}",
                    names.join(", ")
                );
            }
        }
        if !self.telemetry_path.starts_with('/') || self.telemetry_path == "/" {
            anyhow::bail!(
                "--web.telemetry-path must start with '/' and not be '/' itself (got {:?}); for example --web.telemetry-path=/metrics",
                self.telemetry_path
            );
        }
        Ok(())
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "expected a share of max_entries above 0 and at most 1, e.g. 0.8 (got {s:?})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["bpfmap-exporter".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        Cli::try_parse_from(normalize_args(v)).unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(&[]);
        assert_eq!(c.listen, vec![format!("0.0.0.0:{DEFAULT_PORT}")]);
        assert_eq!(c.web_read_header_timeout, Duration::from_secs(10));
        assert_eq!(c.entries_budget, crate::census::entries::Budget::Share(0.2));
        assert_eq!(c.entries_method, crate::census::entries::Choice::Auto);
        assert_eq!(c.telemetry_path, "/metrics");
        assert!(c.collector_enabled("maps"));
        assert!(c.collector_enabled("pins"));
        assert_eq!(c.max_map_series, 150);
        assert_eq!(c.top_by_memory, 50);
        assert!(!c.publish_all_maps);
        c.validate().unwrap();
    }

    #[test]
    fn near_full_ratio_is_a_share() {
        assert_eq!(
            parse(&["--collector.maps.near-full-ratio=0.5"]).near_full_ratio,
            0.5
        );
        for bad in ["0", "1.5", "-1", "x", "NaN"] {
            let e = Cli::try_parse_from(normalize_args(vec![
                "bpfmap-exporter".to_string(),
                format!("--collector.maps.near-full-ratio={bad}"),
            ]))
            .unwrap_err()
            .to_string();
            assert!(e.contains("share of max_entries"), "{bad}: {e}");
        }
    }

    #[test]
    fn entries_budget_is_a_share_or_a_duration() {
        use crate::census::entries::Budget;
        let b = |v: &str| parse(&[&format!("--collector.entries.budget={v}")]).entries_budget;
        assert_eq!(b("5%"), Budget::Share(0.05));
        assert_eq!(b("100%"), Budget::Share(1.0));
        assert_eq!(b("50ms"), Budget::Time(Duration::from_millis(50)));
        assert_eq!(b("2s"), Budget::Time(Duration::from_secs(2)));
        for (bad, why) in [
            ("0%", "above 0%"),
            ("150%", "at most 100%"),
            ("x%", "not a percentage"),
            ("20", "not a duration"),
            ("0ms", "more than 0"),
        ] {
            let e = Cli::try_parse_from(normalize_args(vec![
                "bpfmap-exporter".to_string(),
                format!("--collector.entries.budget={bad}"),
            ]))
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn collector_toggles() {
        let c = parse(&[
            "--no-collector.pins",
            "--collector.maps",
            "--collector.maps.max-series=5",
        ]);
        assert!(!c.collector_enabled("pins"));
        assert!(c.collector_enabled("maps"));
        assert_eq!(c.max_map_series, 5);
    }

    #[test]
    fn unknown_collector_is_rejected_with_the_valid_names() {
        let c = parse(&["--no-collector", "bogus"]);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("pins"), "{e}");
    }

    #[test]
    fn help_lists_every_registered_collector() {
        let h = collectors_help();
        for c in crate::registry::REGISTRY {
            assert!(
                h.contains(&format!("  {:<12} [on] {}", c.name, c.help)),
                "{h}"
            );
        }
    }

    #[test]
    fn listen_address_and_path() {
        let c = parse(&[
            "--web.listen-address=127.0.0.1:1234",
            "--web.telemetry-path=/m",
        ]);
        assert_eq!(c.listen, vec!["127.0.0.1:1234".to_string()]);
        assert_eq!(c.telemetry_path, "/m");
        let c = parse(&["--web.listen-address=:1", "--web.listen-address", "[::1]:2"]);
        assert_eq!(c.listen, vec![":1".to_string(), "[::1]:2".to_string()]);
        let c = parse(&["--web.telemetry-path=metrics"]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn log_level_and_durations_are_validated() {
        for ok in ["info", "DEBUG", "warn,bpfmap_exporter=trace", "libbpf=off"] {
            assert!(parse_log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["loud", "", "info,", "=debug", "x=loud"] {
            let e = parse_log_level(bad).unwrap_err();
            assert!(
                e.contains("error, warn, info, debug or trace"),
                "{bad}: {e}"
            );
        }
        let v = vec!["bpfmap-exporter".to_string(), "--log.level=loud".into()];
        assert!(Cli::try_parse_from(v).is_err());
        assert_eq!(
            crate::units::parse_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            crate::units::parse_duration("2m"),
            Ok(Duration::from_secs(120))
        );
        for bad in ["10", "s", "1.5s", "0s", "5d"] {
            assert!(crate::units::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
