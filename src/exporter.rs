//! One scrape: census parts + other collectors, each timed and reported,
//! rendered into fresh families. Owned by a single thread (BPF objects are
//! not shared across threads), which serialises scrapes.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::census::render::{render_cached, RenderOpts};
use crate::census::{Census, CensusOpts, PartResult, Parts, Snapshot};
use crate::cli::Cli;
use crate::collector::Collector;
use crate::http::ScrapeRequest;
use crate::k8s::Attributor;
use crate::metrics::Families;

pub struct Exporter {
    census: Option<Census>,
    collectors: Vec<Box<dyn Collector>>,
    /// Container/pod identity of processes (census and lifecycle series).
    attributor: std::sync::Arc<dyn Attributor>,
    render_opts: RenderOpts,
    process: prometheus::process_collector::ProcessCollector,
    /// Per-map families' text from the previous scrape, reused where
    /// unchanged.
    series_cache: Option<crate::metrics::SeriesCache>,
}

/// What a scrape produced, for /metrics and for `--check`.
pub struct Scrape {
    /// The exposition in the text format (or why encoding failed).
    pub text: anyhow::Result<crate::metrics::Exposition>,
    pub parts: Vec<PartResult>,
    pub snapshot: Snapshot,
}

impl Exporter {
    pub fn new(cli: &Cli) -> anyhow::Result<Exporter> {
        let on = |n: &str| cli.collector_enabled(n);
        let census = if on("maps") {
            Some(Census::load(CensusOpts {
                btf_path: cli.btf_path.clone(),
                parts: Parts {
                    memory: on("memory"),
                    files: on("files"),
                    mmaps: on("mmaps"),
                    programs: on("programs"),
                    outer_maps: on("outer_maps"),
                    links: on("links"),
                    pins: on("pins"),
                },
                pins_max_entries: cli.pins_max_entries,
                pins_max_depth: cli.pins_max_depth,
            })?)
        } else {
            None
        };
        let attributor = crate::k8s::from_cli(cli)?;
        let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
        // The lifecycle collector never stops the exporter: if it cannot
        // load, it reports success 0 with the reason.
        if on("lifecycle") {
            collectors.push(crate::lifecycle::from_cli(cli, attributor.clone()));
        }
        Ok(Exporter {
            census,
            collectors,
            attributor,
            render_opts: RenderOpts {
                max_map_series: cli.max_map_series,
                per_map: !cli.no_per_map,
                max_pin_series: cli.pins_max_series,
            },
            process: prometheus::process_collector::ProcessCollector::for_self(),
            series_cache: Some(Default::default()),
        })
    }

    pub fn collectors(&self) -> &[Box<dyn Collector>] {
        &self.collectors
    }

    pub fn census(&self) -> Option<&Census> {
        self.census.as_ref()
    }

    pub fn scrape(&mut self) -> Scrape {
        let mut out = Families::new();
        let own_extra: Vec<u32> = self
            .collectors
            .iter()
            .flat_map(|c| c.own_map_ids())
            .collect();
        let t_census = Instant::now();
        let (snapshot, mut parts) = match self.census.as_mut() {
            Some(c) => {
                let snap = c.take(&own_extra);
                let parts = snap.parts.clone();
                (snap, parts)
            }
            None => (Snapshot::default(), Vec::new()),
        };
        let census_s = t_census.elapsed().as_secs_f64();
        let t_render = Instant::now();
        if self.census.is_some() {
            if let Some(c) = self.series_cache.as_mut() {
                c.begin();
            }
            let attributor = &self.attributor;
            render_cached(
                &snapshot,
                &self.render_opts,
                &|tgid, cgroup_id| {
                    let id = attributor.identify(tgid, cgroup_id);
                    (id.container_id, id.pod_uid)
                },
                &mut out,
                self.series_cache.as_mut(),
            );
            if let Some(c) = self.series_cache.as_mut() {
                c.end();
            }
            let f = &snapshot.features;
            for (name, v) in [("task_vma", f.task_vma), ("elem_count", f.elem_count)] {
                out.gauge(
                    "bpfmap_feature_available",
                    "Kernel features the census uses: task_vma (mmap holders, 5.15+), elem_count (hash map entries, 6.6+).",
                    vec![("feature", name.to_string())],
                    v as u8 as f64,
                );
            }
        }
        let census_ref = snapshot.maps_ok.then_some(&snapshot);
        for c in self.collectors.iter_mut() {
            let t = Instant::now();
            let mut fams = Families::new();
            let r = c.collect(census_ref, &mut fams);
            let seconds = t.elapsed().as_secs_f64();
            match r {
                Ok(()) => {
                    out.extend(fams);
                    parts.push(PartResult {
                        name: c.name(),
                        ok: true,
                        seconds,
                        error: None,
                    });
                }
                Err(e) => {
                    tracing::warn!(collector = c.name(), error = %format!("{e:#}"), "collector failed");
                    parts.push(PartResult {
                        name: c.name(),
                        ok: false,
                        seconds,
                        error: Some(format!("{e:#}")),
                    });
                }
            }
        }
        self.attributor.render_metrics(&mut out);
        for p in &parts {
            let l = || vec![("collector", p.name.to_string())];
            out.gauge(
                "bpfmap_scrape_collector_success",
                "1 when the collector succeeded in this scrape.",
                l(),
                p.ok as u8 as f64,
            );
            out.gauge(
                "bpfmap_scrape_collector_duration_seconds",
                "Time the collector took in this scrape.",
                l(),
                p.seconds,
            );
        }
        out.gauge(
            "bpfmap_build_info",
            "Build of the exporter.",
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("revision", env!("BPFMAP_REVISION").to_string()),
            ],
            1.0,
        );
        let process = prometheus::core::Collector::collect(&self.process);
        let render_s = t_render.elapsed().as_secs_f64();
        let t_encode = Instant::now();
        let series = out.len();
        let text = out.encode_chunks(&process);
        tracing::debug!(
            census_s,
            render_s,
            encode_s = t_encode.elapsed().as_secs_f64(),
            series,
            "scrape timings"
        );
        Scrape {
            text,
            parts,
            snapshot,
        }
    }
}

/// The collector thread and the hop to it: it owns the [`Exporter`] (BPF
/// objects are not shared across threads) and answers each
/// [`ScrapeRequest`] with one scrape's exposition, in arrival order.
pub struct ScrapeService {
    thread: std::thread::JoinHandle<()>,
    healthy: Arc<AtomicBool>,
}

impl ScrapeService {
    /// Load every collector on a new thread and start serving requests.
    /// Returns once loading finished, with loading's error if it failed.
    pub fn start(cli: &Cli) -> anyhow::Result<(ScrapeService, mpsc::Sender<ScrapeRequest>)> {
        let (tx, mut rx) = mpsc::channel::<ScrapeRequest>(16);
        let healthy = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let h = healthy.clone();
        let cli = cli.clone();
        let thread = std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                let mut ex = match Exporter::new(&cli) {
                    Ok(ex) => {
                        crate::sys::trim_c_heap();
                        let _ = ready_tx.send(Ok(()));
                        ex
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                h.store(true, Ordering::Relaxed);
                while let Some(reply) = rx.blocking_recv() {
                    let _ = reply.send(ex.scrape().text);
                }
                h.store(false, Ordering::Relaxed);
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("collector thread died while loading"))??;
        Ok((ScrapeService { thread, healthy }, tx))
    }

    /// True while the collector thread serves requests (`/healthz`).
    pub fn healthy(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Wait for the thread to finish (after every request sender is gone).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}
