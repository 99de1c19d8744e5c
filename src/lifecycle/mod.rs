//! Map lifecycle and refcount flow per process.
//!
//! BPF programs (bpf/lifecycle.bpf.c) count, per process and in per-CPU
//! maps, map creations by type, bpf() map commands by result, and refcount
//! increments and decrements. Attach points are chosen per probe at startup
//! from the running kernel (fentry/fexit -> kprobe/kretprobe -> tracepoint);
//! destructions come from map ids leaving the census (ids are never reused
//! before they wrap), attributed to the creator recorded at creation, and
//! where a probe on bpf_map_free_deferred attaches their lifetimes end at
//! the kernel's destruction time instead of the scrape that found them gone.
pub(crate) mod memcg;
pub(crate) mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use libbpf_rs::skel::Skel;
use libbpf_rs::{Link, MapCore, MapFlags};

use crate::bpf::lifecycle::records as decode;
use crate::bpf::lifecycle::{attach, open_and_load, LifecycleSkel};
use crate::bpf::records::sum_percpu;
use crate::census::names::map_type_name;
use crate::collector::{Collector, ScrapeContext};
use crate::k8s::{Attributor, NoAttribution};
use crate::metrics::defs;
use crate::metrics::{Families, Labels};
use crate::sys;

use crate::bpf::lifecycle::probes::{self, Choice, KernelCaps, Mode};
use decode::{Kind, ProcKey};
use state::{Folder, LabelSet, Slot, Tracker};

/// Options of the lifecycle collector (from the command line).
#[derive(Clone)]
pub struct LifecycleOpts {
    pub btf_path: Option<PathBuf>,
    /// `--collector.lifecycle.pid-label`.
    pub pid_label: bool,
    /// `--log.map-events`.
    pub log_events: bool,
    /// `--collector.lifecycle.max-processes` (0 = no cap).
    pub max_processes: usize,
    /// `--bpf.enable-stats`: turn on the kernel's BPF run-time stats while
    /// the exporter runs (BPF_ENABLE_STATS).
    pub enable_stats: bool,
    /// Whether the census runs (destructions are found through it).
    pub census: bool,
    pub attributor: Arc<dyn Attributor>,
    /// Container and pod from each process's memory cgroup, as the census
    /// attributes maps (`--k8s.attribution`); off: the attributor alone.
    pub memcg_attribution: bool,
    /// The memory cgroup hierarchy (`--collector.creators.cgroup-root`),
    /// else found in mountinfo.
    pub cgroup_root: Option<PathBuf>,
    /// `--collector.origins*`.
    pub origins: crate::origins::OriginsConfig,
    /// Overrides that only tests and benchmarks set.
    #[cfg(feature = "testing")]
    pub knobs: TestKnobs,
}

/// Lifecycle overrides for tests and benchmarks (cargo feature `testing`;
/// the exporter itself is built without them).
#[cfg(feature = "testing")]
#[derive(Clone)]
pub struct TestKnobs {
    /// Programs never to use (benchmarks compare attach points with it),
    /// e.g. `tp_sys_exit_bpf` to force `tp_btf/sys_exit`.
    pub exclude_programs: Vec<String>,
    /// Kernel counter slots: distinct (process, counter) pairs the BPF
    /// programs keep apart; the rest count into `comm="other"` (totals stay
    /// exact). Tests shrink it to reach the overflow path.
    pub counter_slots: u32,
}

#[cfg(feature = "testing")]
impl Default for TestKnobs {
    fn default() -> Self {
        TestKnobs {
            exclude_programs: Vec::new(),
            counter_slots: decode::SLOTS,
        }
    }
}

impl LifecycleOpts {
    /// What the BPF load needs of these options.
    pub(crate) fn load_config(&self) -> crate::bpf::lifecycle::LoadConfig {
        crate::bpf::lifecycle::LoadConfig {
            btf_path: self.btf_path.clone(),
            pid_label: self.pid_label,
            log_events: self.log_events,
            counter_slots: self.counter_slots(),
            origins: self.origins.enabled,
            origins_build_id: self.origins.build_id,
        }
    }

    /// Kernel counter slots (`decode::SLOTS` unless a test shrinks them).
    pub(crate) fn counter_slots(&self) -> u32 {
        #[cfg(feature = "testing")]
        return self.knobs.counter_slots;
        #[cfg(not(feature = "testing"))]
        decode::SLOTS
    }

    /// Whether a benchmark excluded program `prog`.
    fn excluded(&self, _prog: &str) -> bool {
        #[cfg(feature = "testing")]
        return self.knobs.exclude_programs.iter().any(|x| x == _prog);
        #[cfg(not(feature = "testing"))]
        false
    }
}

impl Default for LifecycleOpts {
    fn default() -> Self {
        LifecycleOpts {
            btf_path: None,
            pid_label: false,
            log_events: false,
            max_processes: 512,
            enable_stats: false,
            census: true,
            attributor: Arc::new(NoAttribution),
            memcg_attribution: false,
            cgroup_root: None,
            origins: crate::origins::OriginsConfig::default(),
            #[cfg(feature = "testing")]
            knobs: TestKnobs::default(),
        }
    }
}

type Events = Arc<Mutex<Vec<decode::CreateRec>>>;

/// The loaded lifecycle programs and the state kept between scrapes.
pub struct Lifecycle {
    skel: LifecycleSkel<'static>,
    _links: Vec<Link>,
    choices: Vec<Choice>,
    attached_progs: Vec<&'static str>,
    own_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
    /// The highest program id when the probes were attached.
    prog_start_max: u32,
    tracker: Tracker,
    folder: Folder,
    identities: memcg::Identities,
    opts: LifecycleOpts,
    ring: Option<(libbpf_rs::RingBuffer<'static>, Events)>,
    stats_fd: Option<OwnedFd>,
    /// The origin store and its workers (`--collector.origins`).
    origins: Option<Arc<crate::origins::Origins>>,
    /// CLOCK_BOOTTIME of the previous collect: origin records older than
    /// it predate the census this collect reads.
    prev_collect_ns: u64,
}

impl Lifecycle {
    /// Choose attach points from the running kernel, load only the chosen
    /// programs and attach them. Fails only when nothing can be loaded.
    pub fn load(opts: LifecycleOpts) -> anyhow::Result<Lifecycle> {
        let btf = crate::bpf::load::btf_path(opts.btf_path.as_deref())?;
        let caps = KernelCaps::read(&btf)?;
        let mut plan = probes::plan(&caps);
        for def in plan.iter_mut() {
            def.chain
                .retain(|c| !c.progs.iter().any(|g| opts.excluded(g)));
        }
        let mut loaded = None;
        let mut last_err = None;
        let mut refused = 0;
        for set in probes::load_attempts(&plan) {
            match crate::logging::expected_failures(|| {
                open_and_load(&set, &opts.load_config(), &caps)
            }) {
                Ok(skel) => {
                    loaded = Some((skel, set));
                    break;
                }
                Err(e) if crate::bpf::load::is_out_of_memory(&e) => {
                    // Fewer programs would not fit either: the maps and the
                    // verifier's states are charged to the same cgroup.
                    last_err = Some(e);
                    break;
                }
                Err(e) => {
                    refused += 1;
                    tracing::debug!(error = %format!("{e:#}"), programs = set.len(), "lifecycle load refused, dropping a class of programs");
                    last_err = Some(e);
                }
            }
        }
        let Some((mut skel, mut set)) = loaded else {
            return Err(crate::bpf::load::load_error(
                "lifecycle",
                last_err.unwrap_or_else(|| anyhow::anyhow!("no lifecycle program set")),
            ));
        };
        let (mut links, mut choices, mut used) =
            crate::logging::expected_failures(|| attach(&skel, &plan, &set, opts.census, false));
        // Load only what is used: reload with the chosen programs when some
        // loaded ones found no attach point.
        let used_set: BTreeSet<&'static str> = used.iter().copied().collect();
        if used_set != set {
            drop(links);
            match open_and_load(&used_set, &opts.load_config(), &caps) {
                Ok(s2) => {
                    skel = s2;
                    set = used_set;
                    (links, choices, used) = crate::logging::expected_failures(|| {
                        attach(&skel, &plan, &set, opts.census, true)
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reloading the chosen programs failed; keeping the first load");
                    (links, choices, used) = attach(&skel, &plan, &set, opts.census, true);
                }
            }
        }
        let create_from_probe = choices
            .iter()
            .any(|c| c.probe == "map_create" && matches!(c.mode, Mode::Fexit | Mode::Kretprobe));
        if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
            bss.create_from_probe = create_from_probe as u32;
        }
        // Fallbacks are expected (kernels differ): details at debug, one
        // summary line at info.
        let off: Vec<&str> = choices
            .iter()
            .filter(|c| c.mode == Mode::None)
            .map(|c| c.probe)
            .collect();
        let modes: BTreeSet<&str> = choices
            .iter()
            .filter(|c| c.mode != Mode::None)
            .map(|c| c.mode.as_str())
            .collect();
        tracing::info!(
            attached = choices.len() - off.len(),
            modes = ?modes,
            off = ?off,
            load_attempts_refused = refused,
            libbpf_warnings_expected = crate::logging::demoted_warnings(),
            "lifecycle probes (details at --log.level=debug; --check lists each)"
        );
        for c in &choices {
            if c.mode == Mode::None {
                tracing::debug!(
                    probe = c.probe,
                    "no attach point on this kernel: probe off (mode none)"
                );
                continue;
            }
            tracing::debug!(
                probe = c.probe,
                mode = c.mode.as_str(),
                attached = c.attached,
                point = %c.point,
                "lifecycle probe"
            );
        }
        let own_ids = sys::object_map_ids(skel.object());
        let own_prog_ids = sys::object_prog_ids(skel.object());
        let start_max = sys::max_map_id().context("BPF_MAP_GET_NEXT_ID")?;
        let prog_start_max = sys::max_prog_id().context("BPF_PROG_GET_NEXT_ID")?;
        let mut tracker = Tracker::new(start_max);
        tracker.pid_label = opts.pid_label;
        let ring = if opts.log_events {
            let events: Events = Arc::new(Mutex::new(Vec::new()));
            let ev = events.clone();
            let mut b = libbpf_rs::RingBufferBuilder::new();
            b.add(&skel.maps.events, move |data: &[u8]| {
                if let Ok(r) = decode::decode_create_rec(data) {
                    ev.lock().expect("events lock").push(r);
                }
                0
            })?;
            Some((b.build()?, events))
        } else {
            None
        };
        let stats_fd = if opts.enable_stats {
            match sys::enable_run_time_stats() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "BPF_ENABLE_STATS failed; set sysctl kernel.bpf_stats_enabled=1 instead");
                    None
                }
            }
        } else {
            None
        };
        let syscalls_attached = choices
            .iter()
            .any(|c| c.probe == "map_syscalls" && c.attached);
        let origins = if opts.origins.enabled && syscalls_attached {
            let link_start_max = sys::max_link_id().context("BPF_LINK_GET_NEXT_ID")?;
            let started = libbpf_rs::MapHandle::try_from(&skel.maps.origins)
                .and_then(|ring| {
                    libbpf_rs::MapHandle::try_from(&skel.maps.origin_gen).map(|g| (ring, g))
                })
                .map_err(anyhow::Error::from)
                .and_then(|(ring, generation)| {
                    crate::origins::Origins::start(
                        opts.origins.clone(),
                        ring,
                        generation,
                        crate::origins::StartIds {
                            map: start_max,
                            prog: prog_start_max,
                            link: link_start_max,
                        },
                    )
                });
            match started {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "origins unavailable: no stacks are kept");
                    None
                }
            }
        } else {
            if opts.origins.enabled {
                tracing::warn!("origins unavailable: the bpf() exit probe is not attached");
            }
            None
        };
        Ok(Lifecycle {
            skel,
            _links: links,
            choices,
            attached_progs: used,
            own_ids,
            own_prog_ids,
            prog_start_max,
            tracker,
            folder: Folder::new(opts.max_processes),
            identities: memcg::Identities::new(opts.memcg_attribution, opts.cgroup_root.clone()),
            opts,
            ring,
            stats_fd,
            origins,
            prev_collect_ns: 0,
        })
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn choices(&self) -> &[Choice] {
        &self.choices
    }

    /// Whether a probe times destructions in the kernel (map_destroy
    /// attached as fentry or kprobe).
    fn destroy_probed(&self) -> bool {
        self.choices.iter().any(|c| {
            c.probe == "map_destroy" && c.attached && matches!(c.mode, Mode::Fentry | Mode::Kprobe)
        })
    }

    fn label_set(&self, p: &ProcKey) -> LabelSet {
        let (container_id, pod_uid) = match self.identities.get(p) {
            Some((c, u)) => (c.clone(), u.clone()),
            None => {
                let id = self.opts.attributor.identify(p.tgid, p.cgroup_id);
                (id.container_id, id.pod_uid)
            }
        };
        LabelSet {
            comm: p.comm.clone(),
            pid: self.opts.pid_label.then_some(p.tgid),
            container_id,
            pod_uid,
        }
    }

    fn labels(&self, l: &LabelSet) -> Labels {
        let mut v: Labels = vec![("comm", l.comm.clone())];
        if self.opts.pid_label {
            v.push(("pid", l.pid.map(|p| p.to_string()).unwrap_or_default()));
        }
        v.push(("container_id", l.container_id.clone()));
        v.push(("pod_uid", l.pod_uid.clone()));
        v
    }

    /// Every per-process kernel counter: (process or None for overflow, kind, value).
    fn read_counts(&self) -> anyhow::Result<Vec<(Option<ProcKey>, Kind, u64)>> {
        let mut out = Vec::new();
        let (slots, counts) = (&self.skel.maps.slots, &self.skel.maps.counts);
        for key in slots.keys() {
            let Some(slot) = slots.lookup(&key, MapFlags::ANY)? else {
                continue; // never happens: slots are never deleted
            };
            let slot = decode::decode_slot(&slot, self.opts.counter_slots())?;
            let Some(vals) = counts.lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)? else {
                continue;
            };
            let (p, kind) = decode::decode_count_key(&key)?;
            if let Some(kind) = kind {
                out.push((Some(p), kind, sum_percpu(&vals)));
            }
        }
        if let Some(v) = self
            .skel
            .maps
            .overflow
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
        {
            for (kind, n) in decode::decode_overflow(&v)? {
                out.push((None, kind, n));
            }
        }
        Ok(out)
    }

    /// The kernel's count of events it saw but could not count or record
    /// (`decode::LOST_*`).
    fn kernel_lost(&self, index: u32) -> u64 {
        self.skel
            .maps
            .lost
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|v| sum_percpu(&v))
            .unwrap_or(0)
    }

    fn slot(&self, id: u32) -> Slot {
        let key = (id % decode::RING).to_ne_bytes();
        match self.skel.maps.records.lookup(&key, MapFlags::ANY) {
            Ok(Some(v)) => match decode::decode_create_rec(&v) {
                Ok(r) if r.id == id => Slot::Valid(r),
                Ok(r) if r.id > id => Slot::Overwritten,
                _ => Slot::Empty,
            },
            _ => Slot::Empty,
        }
    }

    fn last_recorded(&self) -> u32 {
        crate::bpf::lifecycle::last_recorded(&self.skel)
    }

    fn log_events(&mut self) {
        let Some((rb, events)) = &self.ring else {
            return;
        };
        let _ = rb.consume();
        let evs = std::mem::take(&mut *events.lock().expect("events lock"));
        for r in evs {
            tracing::info!(
                target: "map_events",
                event = "create",
                id = r.id,
                map_type = %map_type_name(r.map_type),
                key_size = r.key_size,
                value_size = r.value_size,
                max_entries = r.max_entries,
                flags = format!("0x{:x}", r.map_flags),
                pid = r.tgid,
                comm = %r.comm,
                "map created"
            );
        }
    }

    fn emit_stats(&self, out: &mut Families) {
        let sysctl = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        if self.stats_fd.is_none() && !sysctl {
            return;
        }
        for p in self.skel.object().progs() {
            let name = p.name().to_string_lossy().into_owned();
            if !self.attached_progs.iter().any(|g| *g == name) {
                continue;
            }
            let Ok((cnt, ns)) = sys::prog_run_stats(p.as_fd()) else {
                continue;
            };
            out.counter(
                &defs::BPF_PROGRAM_RUNS_TOTAL,
                vec![("program", name.clone())],
                cnt as f64,
            );
            out.counter(
                &defs::BPF_PROGRAM_RUN_SECONDS_TOTAL,
                vec![("program", name)],
                ns as f64 / 1e9,
            );
        }
    }
}

impl Collector for Lifecycle {
    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn own_map_ids(&self) -> Vec<u32> {
        self.own_ids.clone()
    }

    fn own_prog_ids(&self) -> Vec<u32> {
        self.own_prog_ids.clone()
    }

    fn check_lines(&self) -> Vec<String> {
        self.choices.iter().map(|c| c.check_line()).collect()
    }

    fn prog_load_records(&self) -> Option<Box<dyn crate::census::loaders::LoadRecords>> {
        // Loads are recorded by the bpf() exit probe; without it nothing is.
        if !self
            .choices
            .iter()
            .any(|c| c.probe == "map_syscalls" && c.attached)
        {
            return None;
        }
        match libbpf_rs::MapHandle::try_from(&self.skel.maps.prog_records) {
            Ok(map) => Some(Box::new(ProgLoads {
                map,
                start_max: self.prog_start_max,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "program load records unreadable: every program's loader reads unknown");
                None
            }
        }
    }

    fn creator_processes(&self) -> Option<crate::collector::CreatorProcesses> {
        if !self.opts.census {
            return None;
        }
        let now_boot = sys::boottime_ns();
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let by_id = self
            .tracker
            .live()
            .filter_map(|(id, k)| {
                let (who, ns) = (k.creator.as_ref()?, k.create_ns?);
                Some((
                    id,
                    crate::collector::CreatorProcess {
                        pid: k.pid,
                        comm: who.comm.clone(),
                        cgroup_id: who.cgroup_id,
                        created_unix: now_unix - now_boot.saturating_sub(ns) as f64 / 1e9,
                    },
                ))
            })
            .collect();
        Some(crate::collector::CreatorProcesses {
            by_id,
            start_max: self.tracker.start_max(),
            origins: self.origins.clone(),
        })
    }

    fn collect(&mut self, ctx: &ScrapeContext<'_>, out: &mut Families) -> anyhow::Result<()> {
        let census = ctx.census;
        self.log_events();
        for c in &self.choices {
            out.gauge(
                &defs::PROBE_ATTACHED,
                vec![
                    ("probe", c.probe.to_string()),
                    ("mode", c.mode.as_str().to_string()),
                ],
                c.attached as u8 as f64,
            );
        }
        if let Some(snap) = census.filter(|_| self.opts.census) {
            let live: Vec<(u32, u32, u64)> = snap
                .maps
                .iter()
                .map(|m| (m.id, m.map_type, m.map_ptr))
                .collect();
            let timed = self.destroy_probed();
            let freed = &self.skel.maps.freed;
            let last = self.last_recorded();
            let now = sys::boottime_ns();
            let mut tracker = std::mem::replace(&mut self.tracker, Tracker::new(0));
            // Creation records carry the creator's real tgid: let the
            // attributor learn each (tgid, cgroup) once while the process
            // may still exist, then key by cgroup only (no pid label) so
            // per-process state stays bounded.
            let mut warmed = std::collections::HashSet::new();
            let gone = tracker.update_timed(
                &live,
                last,
                |id| match self.slot(id) {
                    Slot::Valid(r) => {
                        if warmed.insert((r.tgid, r.cgroup_id)) {
                            self.opts.attributor.identify(r.tgid, r.cgroup_id);
                        }
                        Slot::Valid(r)
                    }
                    other => other,
                },
                |ptr| {
                    if !timed {
                        return None;
                    }
                    let key = ptr.to_ne_bytes();
                    let v = freed.lookup(&key, MapFlags::ANY).ok().flatten()?;
                    let _ = freed.delete(&key);
                    Some(u64::from_ne_bytes(v.as_slice().try_into().ok()?))
                },
                now,
            );
            self.tracker = tracker;
            if self.opts.log_events {
                for d in gone {
                    let who = d.creator.as_ref();
                    tracing::info!(
                        target: "map_events",
                        event = "destroy",
                        id = d.id,
                        map_type = %d.map_type.map(map_type_name).unwrap_or_else(|| "unknown".into()),
                        creator_comm = %who.map(|p| p.comm.as_str()).unwrap_or("unknown"),
                        lifetime_seconds = d.lifetime_seconds.unwrap_or(f64::NAN),
                        "map destroyed"
                    );
                }
            }
        }
        let counts = self.read_counts()?;
        let keys = counts.iter().filter_map(|(p, _, _)| p.as_ref()).chain(
            self.tracker
                .destroyed
                .keys()
                .filter_map(|(p, _)| p.as_ref()),
        );
        self.identities.learn(
            keys,
            census.and_then(|s| s.creator_paths.as_ref()),
            self.opts.attributor.as_ref(),
        );
        let mut folder = std::mem::replace(&mut self.folder, Folder::new(0));
        let agg = state::aggregate(&counts, &mut folder, |p| self.label_set(p));
        for ((l, kind), n) in &agg {
            let mut labels = self.labels(l);
            let n = *n as f64;
            match *kind {
                Kind::Create { map_type } => {
                    labels.push(("map_type", map_type_name(map_type)));
                    out.counter(&defs::MAPS_CREATED_TOTAL, labels, n);
                }
                Kind::Syscall { cmd, error } => {
                    labels.push(("cmd", decode::cmd_name(cmd)));
                    labels.push(("result", if error { "error" } else { "ok" }.into()));
                    out.counter(&defs::MAP_SYSCALLS_TOTAL, labels, n);
                }
                Kind::Inc => out.counter(&defs::MAP_REFCOUNT_INCREMENTS_TOTAL, labels, n),
                Kind::Dec => out.counter(&defs::MAP_REFCOUNT_DECREMENTS_TOTAL, labels, n),
            }
        }
        let mut destroyed: BTreeMap<(LabelSet, String), u64> = BTreeMap::new();
        for ((p, ty), n) in &self.tracker.destroyed {
            let l = match p {
                Some(p) => folder.fold(self.label_set(p)),
                None => LabelSet::named("unknown"),
            };
            *destroyed.entry((l, map_type_name(*ty))).or_default() += n;
        }
        self.folder = folder;
        for ((l, ty), n) in destroyed {
            let mut labels = self.labels(&l);
            labels.push(("map_type", ty));
            out.counter(&defs::MAPS_DESTROYED_TOTAL, labels, n as f64);
        }
        for (ty, h) in &self.tracker.lifetimes {
            out.histogram(
                &defs::MAP_LIFETIME_SECONDS,
                vec![("map_type", map_type_name(*ty))],
                &h.cumulative(),
                h.count,
                h.sum,
            );
        }
        for (source, n) in [
            ("probe", self.tracker.timed_by_probe),
            ("census", self.tracker.timed_by_census),
        ] {
            out.counter(
                &defs::MAP_LIFETIMES_TIMED_TOTAL,
                vec![("source", source.to_string())],
                n as f64,
            );
        }
        let lost = self.tracker.lost_series(
            self.kernel_lost(decode::LOST_UNREADABLE),
            self.kernel_lost(decode::LOST_LOG_RING),
        );
        for (event, reason, n) in lost {
            out.counter(
                &defs::LIFECYCLE_EVENTS_LOST_TOTAL,
                vec![("event", event.to_string()), ("reason", reason.to_string())],
                n as f64,
            );
        }
        out.counter(
            &defs::EVENTS_LOST_TOTAL,
            vec![],
            lost.iter().map(|l| l.2).sum::<u64>() as f64,
        );
        self.emit_stats(out);
        self.collect_origins(census, out);
        Ok(())
    }
}

impl Lifecycle {
    /// Origin metrics, and the stored origins of objects the census no
    /// longer has dropped.
    fn collect_origins(&mut self, census: Option<&crate::census::Snapshot>, out: &mut Families) {
        let now = sys::boottime_ns();
        let before = std::mem::replace(&mut self.prev_collect_ns, now);
        let Some(o) = &self.origins else {
            return;
        };
        if let Some(snap) = census.filter(|s| s.maps_ok && before > 0) {
            use crate::origins::store::ObjKind;
            let maps: std::collections::HashSet<u32> = snap.maps.iter().map(|m| m.id).collect();
            o.prune(ObjKind::Map, &|id| maps.contains(&id), before);
            if let Some(progs) = snap.programs.as_ref() {
                let progs: std::collections::HashSet<u32> = progs.iter().map(|p| p.id).collect();
                o.prune(ObjKind::Prog, &|id| progs.contains(&id), before);
            }
        }
        o.emit(out, self.kernel_lost(decode::LOST_ORIGIN_RING));
    }
}

/// The program load records (`prog_records`), read by program id.
struct ProgLoads {
    map: libbpf_rs::MapHandle,
    start_max: u32,
}

impl crate::census::loaders::LoadRecords for ProgLoads {
    fn lookup(&self, id: u32) -> crate::census::loaders::Lookup {
        use crate::census::loaders::Lookup;
        let key = (id % decode::PROG_RING).to_ne_bytes();
        match self.map.lookup(&key, MapFlags::ANY) {
            Ok(Some(v)) => match decode::decode_prog_rec(&v) {
                Ok(r) if r.id == id => Lookup::Found(r),
                Ok(r) if r.id > id => Lookup::Overwritten,
                _ => Lookup::Missing,
            },
            _ => Lookup::Missing,
        }
    }

    fn start_max(&self) -> u32 {
        self.start_max
    }
}

/// Stands in for the lifecycle collector when it cannot load at all: the
/// scrape reports `success 0` with the reason instead of the exporter failing.
pub struct Unavailable {
    pub error: String,
}

impl Collector for Unavailable {
    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn collect(&mut self, _: &ScrapeContext<'_>, _: &mut Families) -> anyhow::Result<()> {
        anyhow::bail!("{}", self.error)
    }
}

/// The lifecycle collector for `opts`, or a stand-in that reports why it
/// could not load.
pub fn load_or_unavailable(opts: LifecycleOpts) -> Box<dyn Collector> {
    match Lifecycle::load(opts) {
        Ok(l) => {
            crate::registry::unavailable::clear("lifecycle");
            Box::new(l)
        }
        Err(e) => {
            crate::registry::unavailable::note("lifecycle", crate::bpf::load::failure_reason(&e));
            let error = format!("{e:#}");
            tracing::error!(error = %error, "lifecycle collector unavailable");
            Box::new(Unavailable { error })
        }
    }
}
