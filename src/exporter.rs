//! One scrape: the census, then every other collector, each timed and
//! reported by the collector registry's one function, rendered into fresh
//! families. Owned by a single thread (BPF objects are not shared across
//! threads), which serialises scrapes.
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::census::render::{RenderOpts, Renderer};
use crate::census::{Census, CensusOpts, Snapshot};
use crate::collector::{Collector, ScrapeContext};
use crate::exposition::Format;
use crate::k8s::Attributor;
use crate::lifecycle::LifecycleOpts;
use crate::metrics::defs;
use crate::metrics::Exposition;
use crate::metrics::Families;
use crate::registry::Report;
use bytes::Bytes;
use tokio::sync::oneshot;

pub struct Exporter {
    census: Option<Census>,
    /// Why the census is off although enabled (it ran out of memory loading).
    census_error: Option<String>,
    renderer: Renderer,
    /// The collectors that run after the census, in registry order.
    collectors: Vec<Box<dyn Collector>>,
    /// Container/pod identity of processes (census and lifecycle series).
    attributor: Arc<dyn Attributor>,
    process: prometheus::process_collector::ProcessCollector,
    /// Scrapes run and HTTP requests they answered, since start.
    scrapes: u64,
    requests: u64,
    #[cfg(feature = "testing")]
    census_delay: Duration,
}

/// What the exporter is built from: the command line's choices, made once
/// (`Cli::exporter_opts`).
#[derive(Clone)]
pub struct ExporterOpts {
    /// The enabled collectors, by registry name.
    pub enabled: Vec<&'static str>,
    /// The census, when `maps` is enabled.
    pub census: CensusOpts,
    pub render: RenderOpts,
    pub k8s: crate::k8s::K8sOpts,
    /// The lifecycle collector's options; its attributor is the exporter's.
    pub lifecycle: LifecycleOpts,
    /// Requests that may wait for the collector thread at once.
    pub queue: usize,
    /// Consecutive failed censuses after which `/healthz` answers 503; 0
    /// = never.
    pub healthz_census_failures: u32,
    /// Tests only: every census takes this much longer after it read the
    /// kernel, so requests can be made to arrive while one runs.
    #[cfg(feature = "testing")]
    pub census_delay: Duration,
}

impl ExporterOpts {
    /// Whether collector `name` is enabled.
    pub fn on(&self, name: &str) -> bool {
        self.enabled.contains(&name)
    }
}

/// What a scrape produced, for /metrics and for `--check`.
pub struct Scrape {
    /// The exposition in the text format (or why encoding failed).
    pub text: anyhow::Result<crate::metrics::Exposition>,
    pub report: Report,
    pub snapshot: Snapshot,
    /// The same families as protos, when asked for (protobuf, OpenMetrics).
    pub families: Option<Vec<prometheus::proto::MetricFamily>>,
    /// The families before encoding and the process families, when asked
    /// for: filtered requests (collect[] / exclude[]) are encoded from them.
    pub source: Option<(Families, Vec<prometheus::proto::MetricFamily>)>,
}

/// The `k8s` collector: pod names of the pods the attributor met since the
/// previous scrape.
struct K8s;

impl Collector for K8s {
    fn name(&self) -> &'static str {
        "k8s"
    }

    fn collect(&mut self, ctx: &ScrapeContext<'_>, out: &mut Families) -> anyhow::Result<()> {
        ctx.attributor.render_metrics(out);
        Ok(())
    }
}

impl Exporter {
    /// Build every enabled collector of the registry.
    pub fn new(opts: &ExporterOpts) -> anyhow::Result<Exporter> {
        let on = |n: &str| opts.on(n);
        let load_first = crate::sys::max_map_id().unwrap_or(0);
        let mut census_error = None;
        let census = if on("maps") {
            let loaded = Census::load(opts.census.clone());
            match loaded {
                Ok(c) => {
                    crate::registry::unavailable::clear("maps");
                    Some(c)
                }
                // Degrade, don't die: the other collectors and the exporter's
                // own series still serve, and say why the census is missing.
                Err(e) if crate::bpf::load::is_out_of_memory(&e) => {
                    crate::registry::unavailable::note(
                        "maps",
                        crate::bpf::load::failure_reason(&e),
                    );
                    let error = format!("{e:#}");
                    tracing::error!(error = %error, "map census unavailable: every census part is off");
                    census_error = Some(error);
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let attributor = crate::k8s::attributor(&opts.k8s)?;
        let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
        for spec in crate::registry::REGISTRY {
            if spec.stage != crate::registry::Stage::After || !on(spec.name) {
                continue;
            }
            collectors.push(match spec.name {
                // Never stops the exporter: if it cannot load, it reports
                // success 0 with the reason.
                "lifecycle" => crate::lifecycle::load_or_unavailable(LifecycleOpts {
                    attributor: attributor.clone(),
                    ..opts.lifecycle.clone()
                }),
                "k8s" => Box::new(K8s),
                other => unreachable!("collector {other} is in the registry but never built"),
            });
        }
        let mut census = census;
        // Every BPF load is done (the census above, then the collectors):
        // the map ids allocated since `new` began are the exporter's own
        // while no user reference holds them (see Census::set_load_window).
        if let Some(c) = census.as_mut() {
            c.set_load_window(load_first, crate::sys::max_map_id().unwrap_or(u32::MAX));
            if let Some(r) = collectors.iter().find_map(|x| x.prog_load_records()) {
                c.set_load_records(r);
            }
        }
        Ok(Exporter {
            census,
            census_error,
            renderer: Renderer::new(opts.render.clone()),
            collectors,
            attributor,
            process: prometheus::process_collector::ProcessCollector::for_self(),
            scrapes: 0,
            requests: 0,
            #[cfg(feature = "testing")]
            census_delay: opts.census_delay,
        })
    }

    pub fn collectors(&self) -> &[Box<dyn Collector>] {
        &self.collectors
    }

    pub fn census(&self) -> Option<&Census> {
        self.census.as_ref()
    }

    /// Keep holder identities (file and vma records) in the next scrapes'
    /// snapshots, for the JSON API.
    pub fn keep_files(&mut self, on: bool) {
        if let Some(c) = self.census.as_mut() {
            c.set_keep_files(on);
        }
    }

    /// What the JSON API reads from a scrape taken with [`Self::keep_files`]
    /// whose census started at `started` (or later): the snapshot, the
    /// holder identities the census counts only, and the creator processes
    /// the lifecycle collector recorded.
    pub fn maps_data(
        &self,
        snap: Snapshot,
        report: &Report,
        started: Instant,
    ) -> crate::api::MapsData {
        let extras = if snap.maps_ok {
            crate::explain::gather_extras(&snap)
        } else {
            Default::default()
        };
        let failed = report
            .outcomes
            .iter()
            .filter(|o| {
                !o.ok
                    && crate::registry::spec(o.name)
                        .is_none_or(|s| s.stage == crate::registry::Stage::Census)
            })
            .map(|o| o.name.to_string())
            .collect();
        let processes = self
            .collectors
            .iter()
            .find_map(|c| c.creator_processes())
            .ok_or_else(|| {
                "the lifecycle collector is off or could not load (bpfmap_scrape_collector_success{collector=\"lifecycle\"}): \
                 only it records which process created a map"
                    .to_string()
            });
        crate::api::MapsData {
            started,
            snap,
            extras,
            failed,
            processes,
            attributor: self.attributor.clone(),
            release: None,
        }
    }

    pub fn scrape(&mut self) -> Scrape {
        self.scrape_for(0, false, false)
    }

    /// One scrape answering `requests` HTTP requests; `families` also
    /// returns the families as protos, `keep` the families unencoded.
    pub fn scrape_for(&mut self, requests: u64, families: bool, keep: bool) -> Scrape {
        self.scrapes += 1;
        self.requests += requests;
        let mut out = Families::new();
        let own_extra: Vec<u32> = self
            .collectors
            .iter()
            .flat_map(|c| c.own_map_ids())
            .collect();
        let own_progs: Vec<u32> = self
            .collectors
            .iter()
            .flat_map(|c| c.own_prog_ids())
            .collect();
        let t_census = Instant::now();
        let (snapshot, mut report) = match self.census.as_mut() {
            Some(c) => {
                c.set_other_own_programs(own_progs);
                let taken = c.take(&own_extra);
                #[cfg(feature = "testing")]
                std::thread::sleep(self.census_delay);
                taken
            }
            None => {
                let mut report = Report::default();
                if let Some(e) = &self.census_error {
                    report.record::<()>("maps", 0.0, Err(anyhow::anyhow!("{e}")));
                }
                (Snapshot::default(), report)
            }
        };
        let census_s = t_census.elapsed().as_secs_f64();
        let t_render = Instant::now();
        if self.census.is_some() {
            let attributor = &self.attributor;
            self.renderer.render(
                &snapshot,
                &|tgid, cgroup_id| {
                    let id = attributor.identify(tgid, cgroup_id);
                    (id.container_id, id.pod_uid)
                },
                &mut out,
            );
        }
        let ctx = ScrapeContext {
            census: snapshot.maps_ok.then_some(&snapshot),
            attributor: &*self.attributor,
        };
        for c in self.collectors.iter_mut() {
            let mut fams = Families::new();
            if report
                .run(c.name(), || c.collect(&ctx, &mut fams))
                .is_some()
            {
                out.extend(fams);
            }
        }
        for o in &report.outcomes {
            let l = || vec![("collector", o.name.to_string())];
            out.gauge(&defs::SCRAPE_COLLECTOR_SUCCESS, l(), o.ok as u8 as f64);
            out.gauge(&defs::SCRAPE_COLLECTOR_DURATION_SECONDS, l(), o.seconds);
        }
        for (name, reason) in crate::registry::unavailable::list() {
            out.gauge(
                &defs::COLLECTOR_UNAVAILABLE,
                vec![
                    ("collector", name.to_string()),
                    ("reason", reason.label().to_string()),
                ],
                1.0,
            );
        }
        out.gauge(
            &defs::BUILD_INFO,
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("revision", env!("BPFMAP_REVISION").to_string()),
            ],
            1.0,
        );
        out.counter(&defs::SCRAPES_TOTAL, vec![], self.scrapes as f64);
        out.counter(
            &defs::SCRAPE_REQUESTS_TOTAL,
            vec![],
            (self.requests - requests) as f64,
        );
        web_families(&mut out);
        let process = prometheus::core::Collector::collect(&self.process);
        let families = families.then(|| {
            let mut v = out.clone().into_proto();
            v.extend(process.iter().cloned());
            v
        });
        let render_s = t_render.elapsed().as_secs_f64();
        let t_encode = Instant::now();
        let series = out.len();
        let source = keep.then(|| (out.clone(), process.clone()));
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
            report,
            snapshot,
            families,
            source,
        }
    }
}

/// The web configuration's reload state and basic authentication's
/// outcomes, when a `--web.config.file` is in use.
fn web_families(out: &mut Families) {
    let Some(w) = crate::web::stats::snapshot() else {
        return;
    };
    out.gauge(
        &defs::WEB_CONFIG_LAST_RELOAD_SUCCESSFUL,
        vec![],
        w.last_reload_successful as u8 as f64,
    );
    for (r, n) in w.reloads {
        out.counter(
            &defs::WEB_CONFIG_RELOADS_TOTAL,
            vec![("result", r.label().to_string())],
            n as f64,
        );
    }
    for (r, n) in w.auth {
        out.counter(
            &defs::WEB_AUTH_CHECKS_TOTAL,
            vec![("result", r.label().to_string())],
            n as f64,
        );
    }
}

/// What a scrape produced, shared by every request it answers.
#[derive(Clone)]
pub enum Body {
    Chunks(Exposition),
    Bytes(Bytes),
}

/// A scrape request: the wanted format, and where to send the body (or
/// why the scrape failed).
pub struct ScrapeRequest {
    pub format: Format,
    /// collect[] / exclude[]: served from the same scrape, filtered.
    pub filter: Option<Arc<crate::metrics::filter::Filter>>,
    pub reply: oneshot::Sender<Result<Body, Arc<anyhow::Error>>>,
}

/// A JSON API request: the collector thread answers with a census that
/// started at or after `since` (see [`serves`]): the shared one when it
/// is fresh enough, else the next one, which every waiting request shares.
/// A request that needs a new census while [`MAX_API_CENSUSES`] are alive
/// waits for one to be released, at most [`CENSUS_ROOM_WAIT`], then is
/// answered `Err` (a 503).
pub struct MapsRequest {
    /// When the request arrived ([`Pending::since`]).
    pub since: Instant,
    pub reply: oneshot::Sender<MapsReply>,
}

/// The census that answers an API request, or why there is none now.
pub type MapsReply = Result<Arc<crate::api::MapsData>, String>;

/// API censuses (taken with holder identities) alive at once, counting the
/// one being taken: the collector thread takes a new one only while fewer
/// are alive (held by responses being written, or kept as the shared
/// census). A census of N maps with its holder identities is the largest
/// thing the exporter holds, so this bounds its memory under any number of
/// API requests: at most this many such censuses plus the scrapes' one.
pub const MAX_API_CENSUSES: usize = 1;

/// How long a request waits at most for an API census to be released
/// when [`MAX_API_CENSUSES`] are alive. A census is held no longer than
/// its slowest response is written, which the write and request timeouts
/// bound; a request that waits longer is answered 503 with `Retry-After`.
pub const CENSUS_ROOM_WAIT: Duration = Duration::from_secs(10);

/// The API censuses the collector thread handed out, by weak reference: a
/// census is alive while any response or the shared census holds it.
#[derive(Default)]
pub struct ApiCensuses {
    issued: Vec<Weak<crate::api::MapsData>>,
}

impl ApiCensuses {
    /// API censuses alive now.
    pub fn alive(&mut self) -> usize {
        self.issued.retain(|w| w.strong_count() > 0);
        self.issued.len()
    }

    /// Whether a new API census may be taken now ([`MAX_API_CENSUSES`]).
    pub fn room(&mut self) -> bool {
        self.alive() < MAX_API_CENSUSES
    }

    /// `data` is handed out.
    pub fn issue(&mut self, data: &Arc<crate::api::MapsData>) {
        self.issued.push(Arc::downgrade(data));
    }
}

/// Wakes the collector thread when the API census holding it is freed, so
/// that requests waiting for room ([`MAX_API_CENSUSES`]) get their census.
/// It holds no strong sender: it never keeps the job queue open.
pub struct Release(mpsc::WeakSender<Job>);

impl Release {
    pub fn new(wake: mpsc::WeakSender<Job>) -> Release {
        Release(wake)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // A full queue wakes the collector thread anyway; the thread counts
        // the alive censuses itself, this is only a wake-up.
        if let Some(tx) = self.0.upgrade() {
            let _ = tx.try_send(Job::Released);
        }
    }
}

/// API requests waiting for room for a new census, each until its
/// deadline.
#[derive(Default)]
pub struct Deferred {
    waiting: Vec<(Instant, MapsRequest)>,
}

impl Deferred {
    /// `r` waits from `now`, at most [`CENSUS_ROOM_WAIT`].
    pub fn push(&mut self, now: Instant, r: MapsRequest) {
        self.waiting.push((now + CENSUS_ROOM_WAIT, r));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|(t, _)| *t).min()
    }

    /// Answer the requests past their deadline at `now` with why there is
    /// no census, and forget those whose client is gone; returns how many
    /// were turned away.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        let mut kept = Vec::with_capacity(self.waiting.len());
        for (until, r) in self.waiting.drain(..) {
            if r.reply.is_closed() {
                continue;
            }
            if until > now {
                kept.push((until, r));
                continue;
            }
            expired += 1;
            let _ = r.reply.send(Err(format!(
                "every JSON API census this exporter may hold at once ({MAX_API_CENSUSES}) is still being written to other clients after {} s; retry",
                CENSUS_ROOM_WAIT.as_secs()
            )));
        }
        self.waiting = kept;
        expired
    }

    /// Every waiting request, to be answered from the next census.
    pub fn take(&mut self) -> impl Iterator<Item = MapsRequest> + '_ {
        self.waiting.drain(..).map(|(_, r)| r)
    }
}

/// Freshness, the invariant of every census a JSON API request is
/// answered from: the census started at or after the request arrived, so
/// whatever a client did before it sent the request (a map it created, a
/// pin it removed) is in the answer. A census that started earlier is
/// never served to it, however recent.
pub fn serves(census_started: Instant, request_arrived: Instant) -> bool {
    census_started >= request_arrived
}

/// The JSON API's shared census: the newest one taken with holder
/// identities, kept (one `Arc`, never copied) while some pending API
/// request arrived before it started, so that requests waiting for the API
/// gate are answered from it instead of each taking its own. Dropped when
/// no pending request is served by it: an idle exporter holds no API
/// census, and requests that need a newer one never keep it alive.
#[derive(Default)]
pub struct SharedMaps {
    inner: Mutex<SharedInner>,
}

#[derive(Default)]
struct SharedInner {
    /// Requests that arrived and hold no census yet ([`Pending`]), by
    /// arrival.
    pending: std::collections::BTreeMap<Instant, usize>,
    latest: Option<Arc<crate::api::MapsData>>,
}

/// An API request from its arrival until it holds its census: it keeps
/// the shared census alive for it.
pub struct Pending {
    since: Instant,
    shared: Arc<SharedMaps>,
}

impl SharedMaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, SharedInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request arrives now.
    pub fn arrive(self: &Arc<Self>) -> Pending {
        let mut g = self.lock();
        // Under the lock: a census offered from now on counts this request.
        let since = Instant::now();
        *g.pending.entry(since).or_default() += 1;
        Pending {
            since,
            shared: self.clone(),
        }
    }

    /// The shared census, if it serves a request that arrived at `since`.
    pub fn fresh(&self, since: Instant) -> Option<Arc<crate::api::MapsData>> {
        self.lock()
            .latest
            .as_ref()
            .filter(|d| serves(d.started, since))
            .cloned()
    }

    /// Keep `data` as the shared census if it is newer and serves some
    /// pending request. The census it replaces is freed by its last reader.
    fn offer(&self, data: &Arc<crate::api::MapsData>) {
        let old = {
            let mut g = self.lock();
            if !g.serves_pending(data)
                || g.latest.as_ref().is_some_and(|l| l.started >= data.started)
            {
                return;
            }
            g.latest.replace(data.clone())
        };
        drop(old);
    }

    /// Whether a census is kept (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn holds(&self) -> bool {
        self.lock().latest.is_some()
    }
}

impl SharedInner {
    /// Whether `data` serves some pending request: the census is kept only
    /// for those, never for requests that need a newer one (which could
    /// otherwise wait for room while keeping it alive).
    fn serves_pending(&self, data: &crate::api::MapsData) -> bool {
        self.pending
            .keys()
            .next()
            .is_some_and(|&first| serves(data.started, first))
    }
}

impl Pending {
    /// When the request arrived.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The shared census, if it serves this request.
    pub fn fresh(&self) -> Option<Arc<crate::api::MapsData>> {
        self.shared.fresh(self.since)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let last = {
            let mut g = self.shared.lock();
            if let std::collections::btree_map::Entry::Occupied(mut e) = g.pending.entry(self.since)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            if g.latest.as_ref().is_some_and(|d| !g.serves_pending(d)) {
                g.latest.take()
            } else {
                None
            }
        };
        // Freeing a census of many maps takes a while: off the reactor
        // when this was its last reference and a runtime is at hand.
        if let Some(d) = last.filter(|d| Arc::strong_count(d) == 1) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || drop(d));
            }
        }
    }
}

/// What the collector thread is asked for.
pub enum Job {
    Metrics(ScrapeRequest),
    Maps(MapsRequest),
    /// An API census was freed ([`Release`]): requests waiting for room
    /// may get theirs.
    Released,
}

/// The collector thread and the hop to it: it owns the [`Exporter`] (BPF
/// objects are not shared across threads) and answers each [`Job`]: a
/// [`ScrapeRequest`] or a JSON API [`MapsRequest`]. Single flight: every
/// request waiting when a scrape starts is answered from that scrape, so N
/// simultaneous requests, scrapes and API requests alike, cost one census
/// (two when some arrive while one runs). API requests are answered only
/// from a census that [`serves`] them: the shared one ([`SharedMaps`]) when
/// it does, without a census; scrapes that arrive while a census runs
/// share it. At most [`MAX_API_CENSUSES`] API censuses are alive at once:
/// API requests that need another wait (scrapes go on meanwhile) until one
/// is freed, at most [`CENSUS_ROOM_WAIT`].
pub struct ScrapeService {
    thread: std::thread::JoinHandle<()>,
    health: Arc<Health>,
    maps: Arc<SharedMaps>,
}

/// What `/healthz` answers: healthy while the collector thread serves
/// requests and the census (when loaded) has not failed the last
/// `max_census_failures` scrapes in a row. A census that could not load
/// does not count: `bpfmap_collector_unavailable` reports it and a
/// restart would not load it either.
pub struct Health {
    running: AtomicBool,
    census_failures: AtomicU32,
    max_census_failures: u32,
    last_error: Mutex<String>,
}

impl Health {
    pub fn new(max_census_failures: u32) -> Health {
        Health {
            running: AtomicBool::new(false),
            census_failures: AtomicU32::new(0),
            max_census_failures,
            last_error: Mutex::new(String::new()),
        }
    }

    fn set_running(&self, on: bool) {
        self.running.store(on, Ordering::Relaxed);
    }

    /// One scrape's census: `Ok` when it succeeded, else its error.
    pub fn census(&self, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => self.census_failures.store(0, Ordering::Relaxed),
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                self.census_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `Ok` when healthy, else why not (the body of the 503).
    pub fn check(&self) -> Result<(), String> {
        if !self.running.load(Ordering::Relaxed) {
            return Err("collector thread is not running".into());
        }
        let n = self.census_failures.load(Ordering::Relaxed);
        if self.max_census_failures > 0 && n >= self.max_census_failures {
            let e = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
            return Err(format!(
                "the census failed the last {n} scrapes (--healthz.census-failures={}): {}",
                self.max_census_failures, e
            ));
        }
        Ok(())
    }
}

impl ScrapeService {
    /// Load every collector on a new thread and start serving requests.
    /// Returns once loading finished, with loading's error if it failed.
    pub fn start(opts: ExporterOpts) -> anyhow::Result<(ScrapeService, mpsc::Sender<Job>)> {
        let (tx, mut rx) = mpsc::channel::<Job>(opts.queue.max(1));
        let health = Arc::new(Health::new(opts.healthz_census_failures));
        let maps = Arc::new(SharedMaps::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let h = health.clone();
        let shared = maps.clone();
        let wake = tx.downgrade();
        let thread = std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || {
                // Only to wait for a job with a deadline (requests waiting
                // for room for an API census); the thread runs nothing on it.
                let timer = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(anyhow::Error::from(e)
                                .context("collector thread: building its timer")));
                        return;
                    }
                };
                let mut ex = match Exporter::new(&opts) {
                    Ok(ex) => {
                        crate::sys::trim_c_heap();
                        // Healthy before the server may answer /healthz.
                        h.set_running(true);
                        let _ = ready_tx.send(Ok(()));
                        ex
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if crate::census::in_host_pid_namespace() == Some(false) {
                    tracing::error!(
                        "{} (bpfmap_pid_namespace_host is 0)",
                        crate::census::PID_NAMESPACE_ERROR
                    );
                }
                let mut api = Collecting {
                    censuses: ApiCensuses::default(),
                    deferred: Deferred::default(),
                    wake,
                };
                let mut carried = Vec::new();
                loop {
                    let mut batch = std::mem::take(&mut carried);
                    api.deferred.expire(Instant::now());
                    let ready = !api.deferred.is_empty() && api.censuses.room();
                    if batch.is_empty() && !ready {
                        let job = match api.deferred.next_deadline() {
                            None => rx.blocking_recv().ok_or(()),
                            // At the deadline, a wake-up: the loop turns
                            // the requests past it away.
                            Some(until) => timer.block_on(async {
                                tokio::time::timeout_at(until.into(), rx.recv())
                                    .await
                                    .map_or(Ok(Job::Released), |j| j.ok_or(()))
                            }),
                        };
                        match job {
                            Ok(r) => batch.push(r),
                            Err(()) => break,
                        }
                    }
                    while let Ok(r) = rx.try_recv() {
                        batch.push(r);
                    }
                    carried = answer(&mut ex, batch, &mut rx, &h, &shared, &mut api);
                    crate::sys::release_freed_memory();
                }
                h.set_running(false);
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("collector thread died while loading"))??;
        Ok((
            ScrapeService {
                thread,
                health,
                maps,
            },
            tx,
        ))
    }

    /// What `/healthz` answers.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// The JSON API's shared census.
    pub fn shared_maps(&self) -> Arc<SharedMaps> {
        self.maps.clone()
    }

    /// Wait for the thread to finish (after every request sender is gone).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// The collector thread's JSON API state: the censuses it handed out, the
/// requests waiting for room for a new one, and how a freed census wakes
/// the thread.
struct Collecting {
    censuses: ApiCensuses,
    deferred: Deferred,
    wake: mpsc::WeakSender<Job>,
}

/// Answer a batch of requests from one scrape, encoding each wanted format
/// once. Scrape requests that arrived while the scrape ran share it too
/// (the data is at most one scrape's duration older than such a request);
/// API requests share it only when it [`serves`] them, and the shared
/// census answers those it serves without a scrape. API requests get the
/// snapshot after every scrape request was answered. API requests that
/// need a new census while [`MAX_API_CENSUSES`] are alive wait (in
/// `api.deferred`) for one to be released; scrapes do not wait for them.
fn answer(
    ex: &mut Exporter,
    batch: Vec<Job>,
    rx: &mut mpsc::Receiver<Job>,
    health: &Health,
    shared: &SharedMaps,
    api: &mut Collecting,
) -> Vec<Job> {
    let mut scrapes: Vec<ScrapeRequest> = Vec::new();
    let mut maps: Vec<MapsRequest> = Vec::new();
    for j in batch {
        match j {
            Job::Metrics(r) => scrapes.push(r),
            Job::Maps(r) if r.reply.is_closed() => {}
            Job::Maps(r) => match shared.fresh(r.since) {
                Some(d) => {
                    let _ = r.reply.send(Ok(d));
                }
                None => maps.push(r),
            },
            Job::Released => {}
        }
    }
    if api.censuses.room() {
        maps.extend(api.deferred.take());
    } else {
        let now = Instant::now();
        for r in maps.drain(..) {
            api.deferred.push(now, r);
        }
    }
    if scrapes.is_empty() && maps.is_empty() {
        return Vec::new();
    }
    let protos = scrapes
        .iter()
        .any(|r| r.format != Format::Text && r.filter.is_none());
    let keep = scrapes.iter().any(|r| r.filter.is_some());
    let want_maps = !maps.is_empty();
    ex.keep_files(want_maps);
    // Before the census: every request in the batch arrived earlier.
    let started = Instant::now();
    let scrape = ex.scrape_for(scrapes.len() as u64, protos, keep);
    if ex.census.is_some() {
        health.census(if scrape.snapshot.maps_ok {
            Ok(())
        } else {
            Err(scrape
                .report
                .outcomes
                .iter()
                .find(|o| o.name == "maps")
                .and_then(|o| o.error.as_deref())
                .unwrap_or("the map walk failed"))
        });
    }
    // Late requests this scrape kept nothing to answer from (protos for
    // another format, families for a filter, holder identities for the
    // API), and API requests that arrived after it started, wait for the
    // next scrape.
    let mut next = Vec::new();
    while let Ok(j) = rx.try_recv() {
        match j {
            Job::Metrics(r)
                if match r.filter {
                    Some(_) => keep,
                    None => protos || r.format == Format::Text,
                } =>
            {
                ex.requests += 1;
                scrapes.push(r);
            }
            Job::Maps(r) if want_maps && serves(started, r.since) => maps.push(r),
            Job::Released => {}
            other => next.push(other),
        }
    }
    let text = scrape.text.map(Body::Chunks).map_err(Arc::new);
    let fams = scrape.families.unwrap_or_default();
    type Encoded = Result<Body, Arc<anyhow::Error>>;
    let mut encoded: Vec<(Format, Encoded)> = Vec::new();
    let mut filtered: Vec<(Format, Arc<crate::metrics::filter::Filter>, Encoded)> = Vec::new();
    for r in scrapes {
        let body = match (&r.filter, r.format) {
            (Some(f), format) => match filtered.iter().find(|(g, h, _)| *g == format && h == f) {
                Some((_, _, b)) => b.clone(),
                None => {
                    let b = encode_filtered(scrape.source.as_ref(), f, format);
                    filtered.push((format, f.clone(), b.clone()));
                    b
                }
            },
            (None, Format::Text) => text.clone(),
            (None, f) => match encoded.iter().find(|(g, _)| *g == f) {
                Some((_, b)) => b.clone(),
                None => {
                    let b = crate::exposition::encode(f, &fams)
                        .map(|v| Body::Bytes(v.into()))
                        .map_err(Arc::new);
                    encoded.push((f, b.clone()));
                    b
                }
            },
        };
        let _ = r.reply.send(body);
    }
    if want_maps {
        let mut data = ex.maps_data(scrape.snapshot, &scrape.report, started);
        data.release = Some(Box::new(Release::new(api.wake.clone())));
        let data = Arc::new(data);
        api.censuses.issue(&data);
        // Shared before any request holds it: a request that gets an API
        // slot once another's answer is written finds it.
        shared.offer(&data);
        for r in maps {
            let _ = r.reply.send(Ok(data.clone()));
        }
    } else if let Some(c) = ex.census.as_mut() {
        // Every answer is encoded: nothing reads the snapshot any more.
        c.recycle(scrape.snapshot);
    }
    next
}

/// One filtered response from a scrape's kept families.
fn encode_filtered(
    source: Option<&(Families, Vec<prometheus::proto::MetricFamily>)>,
    filter: &crate::metrics::filter::Filter,
    format: Format,
) -> Result<Body, Arc<anyhow::Error>> {
    let (fams, process) =
        source.ok_or_else(|| Arc::new(anyhow::anyhow!("the scrape kept no families to filter")))?;
    let mut fams = fams.clone();
    filter.apply(&mut fams);
    match format {
        Format::Text => fams.encode_chunks(process).map(Body::Chunks),
        f => {
            let mut v = fams.into_proto();
            v.extend(process.iter().cloned());
            crate::exposition::encode(f, &v).map(|v| Body::Bytes(v.into()))
        }
    }
    .map_err(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::{
        serves, ApiCensuses, Deferred, Health, Job, MapsRequest, Release, SharedMaps,
        CENSUS_ROOM_WAIT, MAX_API_CENSUSES,
    };
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::sync::{mpsc, oneshot};

    fn census_at(started: Instant) -> Arc<crate::api::MapsData> {
        Arc::new(crate::api::MapsData {
            started,
            snap: Default::default(),
            extras: Default::default(),
            failed: Vec::new(),
            processes: Err("none".into()),
            attributor: Arc::new(crate::k8s::NoAttribution),
            release: None,
        })
    }

    #[test]
    fn a_census_serves_only_requests_that_arrived_before_it_started() {
        let t = Instant::now();
        let later = t + Duration::from_millis(1);
        assert!(serves(later, t));
        assert!(serves(t, t));
        assert!(!serves(t, later), "a census that began before the request");
    }

    #[test]
    fn the_shared_census_answers_earlier_arrivals_and_lives_while_one_is_pending() {
        let shared = Arc::new(SharedMaps::default());
        // Nobody pending: nothing is kept.
        shared.offer(&census_at(Instant::now()));
        assert!(!shared.holds());

        let early = shared.arrive();
        std::thread::sleep(Duration::from_millis(2));
        let first = census_at(Instant::now());
        shared.offer(&first);
        let late = shared.arrive();
        // The census began after `early` arrived, before `late` did.
        assert!(Arc::ptr_eq(
            &early.fresh().expect("fresh for early"),
            &first
        ));
        assert!(late.fresh().is_none(), "began before `late` arrived");
        // An older census never replaces a newer one.
        shared.offer(&census_at(early.since()));
        assert!(Arc::ptr_eq(&early.fresh().unwrap(), &first));
        std::thread::sleep(Duration::from_millis(2));
        let second = census_at(Instant::now());
        shared.offer(&second);
        assert!(Arc::ptr_eq(&late.fresh().unwrap(), &second));
        assert!(Arc::ptr_eq(&early.fresh().unwrap(), &second));
        // `first` is no longer kept: its holders alone free it.
        assert_eq!(Arc::strong_count(&first), 1);

        // Kept while a request is pending, dropped with the last one.
        drop(early);
        assert!(shared.holds());
        drop(late);
        assert!(!shared.holds());
        assert_eq!(Arc::strong_count(&second), 1);
    }

    #[test]
    fn the_shared_census_is_not_kept_for_requests_that_need_a_newer_one() {
        let shared = Arc::new(SharedMaps::default());
        let early = shared.arrive();
        std::thread::sleep(Duration::from_millis(2));
        let census = census_at(Instant::now());
        shared.offer(&census);
        std::thread::sleep(Duration::from_millis(2));
        let late = shared.arrive();
        assert!(shared.holds(), "it serves `early`");
        drop(early);
        assert!(!shared.holds(), "`late` needs a newer one");
        assert_eq!(Arc::strong_count(&census), 1);
        // Nor is one offered that serves no pending request.
        shared.offer(&census_at(late.since() - Duration::from_millis(1)));
        assert!(!shared.holds());
        shared.offer(&census_at(late.since()));
        assert!(shared.holds());
        drop(late);
        assert!(!shared.holds());
    }

    #[test]
    fn no_api_census_is_taken_while_the_bound_is_alive_and_a_freed_one_wakes_the_thread() {
        let (tx, mut rx) = mpsc::channel::<Job>(4);
        let mut issued = ApiCensuses::default();
        let mut held = Vec::new();
        for i in 0..MAX_API_CENSUSES {
            assert!(issued.room(), "{i} alive of {MAX_API_CENSUSES}");
            let mut d = Arc::try_unwrap(census_at(Instant::now())).ok().unwrap();
            d.release = Some(Box::new(Release::new(tx.downgrade())));
            let d = Arc::new(d);
            issued.issue(&d);
            held.push(d);
        }
        assert_eq!(issued.alive(), MAX_API_CENSUSES);
        assert!(!issued.room(), "the bound is alive");
        // A second holder of the oldest: still alive when one lets go.
        let oldest = held.remove(0);
        let writer = oldest.clone();
        drop(oldest);
        assert!(!issued.room());
        assert!(rx.try_recv().is_err(), "nothing was freed");
        drop(writer);
        assert_eq!(issued.alive(), MAX_API_CENSUSES - 1);
        assert!(issued.room());
        assert!(matches!(rx.try_recv(), Ok(Job::Released)), "the wake-up");
        // The wake-up never keeps the queue open.
        drop(tx);
        drop(held);
        assert!(rx.try_recv().is_err());
        assert_eq!(issued.alive(), 0);
    }

    #[test]
    fn a_request_waits_for_room_at_most_the_bound_then_is_told_why() {
        let t = Instant::now();
        let mut d = Deferred::default();
        let request = || {
            let (tx, rx) = oneshot::channel();
            (
                MapsRequest {
                    since: t,
                    reply: tx,
                },
                rx,
            )
        };
        let (a, mut a_rx) = request();
        let (b, mut b_rx) = request();
        let (gone, gone_rx) = request();
        d.push(t, a);
        d.push(t + Duration::from_secs(1), b);
        d.push(t, gone);
        drop(gone_rx);
        assert_eq!(d.next_deadline(), Some(t + CENSUS_ROOM_WAIT));
        assert_eq!(d.expire(t + CENSUS_ROOM_WAIT - Duration::from_millis(1)), 0);
        assert!(a_rx.try_recv().is_err(), "still waiting");
        // `a` waited the bound: answered with why; `gone` is forgotten.
        assert_eq!(d.expire(t + CENSUS_ROOM_WAIT), 1);
        let why = a_rx.try_recv().unwrap().err().unwrap();
        assert!(why.contains("still being written"), "{why}");
        assert!(b_rx.try_recv().is_err());
        let rest: Vec<MapsRequest> = d.take().collect();
        assert_eq!(rest.len(), 1, "b alone is left");
        assert!(d.is_empty() && d.next_deadline().is_none());
    }

    #[test]
    fn health_fails_after_n_census_failures_in_a_row_and_recovers() {
        let h = Health::new(3);
        assert!(h.check().unwrap_err().contains("not running"));
        h.set_running(true);
        assert_eq!(h.check(), Ok(()));
        h.census(Err("creating iterator: Too many open files"));
        h.census(Err("creating iterator: Too many open files"));
        assert_eq!(h.check(), Ok(()), "two failures of three");
        h.census(Ok(()));
        h.census(Err("x"));
        h.census(Err("x"));
        assert_eq!(h.check(), Ok(()), "a success resets the count");
        h.census(Err("creating iterator: EMFILE"));
        let why = h.check().unwrap_err();
        assert!(
            why.contains("failed the last 3 scrapes") && why.contains("EMFILE"),
            "{why}"
        );
        h.census(Ok(()));
        assert_eq!(h.check(), Ok(()));
        // 0: the census never fails the probe.
        let never = Health::new(0);
        never.set_running(true);
        for _ in 0..100 {
            never.census(Err("x"));
        }
        assert_eq!(never.check(), Ok(()));
    }
}
