//! Who loaded each program, and which programs are orphaned.
//!
//! The kernel keeps no record of a program's loader that the census could
//! read: `struct bpf_prog_aux` has no memory cgroup (the program's pages
//! are charged to the loader's memory cgroup at allocation, but nothing
//! points back to it) on any kernel from 5.10 to 6.18, only the loader's
//! user (`aux->user`). So the loader comes from the lifecycle probes: at
//! the exit of each `BPF_PROG_LOAD` they record, by program id, the pid,
//! comm and memory cgroup of the loading task ([`LoadRecords`]). This module
//! keeps a bounded table of the loaders of live programs, resolves each
//! loader's memory cgroup to a container and pod while it lives, and keeps
//! naming them after the cgroup is removed. A program whose load was not
//! recorded has an [`Unknown`] loader, with the reason; it is never guessed.
//!
//! A program is orphaned when its loader's memory cgroup is gone and only
//! pins keep it alive, through every chain (the rule of
//! [`super::roots::orphaned`], as for maps).
use std::collections::{BTreeMap, HashMap, HashSet};

use super::roots::{orphaned, Graph, Obj};
use super::{IdMap, ProgRecord};
use crate::k8s::cgroup::parse_path;

/// Loaders kept at most: far above the programs a node runs. Programs
/// beyond it read [`Unknown::TableFull`].
pub const MAX_LOADERS: usize = 65_536;

pub use crate::bpf::lifecycle::records::LoadRecord;

/// What the record slot of a program id holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(LoadRecord),
    /// A later load took the slot before the record was read.
    Overwritten,
    /// No record of this id.
    Missing,
}

/// The lifecycle probes' load records.
pub trait LoadRecords: Send {
    /// The record of program `id`'s load.
    fn lookup(&self, id: u32) -> Lookup;
    /// Programs with ids up to this one existed before the probes attached.
    fn start_max(&self) -> u32;
}

/// Why a program's loader is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unknown {
    /// Loaded before the probes attached.
    BeforeStart,
    /// Loaded after they attached, but no record names it: a load from
    /// inside the kernel (`bpf_sys_bpf`), or a file closed by another
    /// thread before the probe read it.
    NotRecorded,
    /// More loads than record slots between two scrapes.
    Overwritten,
    /// Nothing records loads: the lifecycle collector is off, could not
    /// load, or its bpf() probe did not attach.
    NoRecorder,
    /// The loader table is full.
    TableFull,
}

impl Unknown {
    /// The `reason` label.
    pub const fn label(self) -> &'static str {
        match self {
            Unknown::BeforeStart => "loaded_before_start",
            Unknown::NotRecorded => "not_recorded",
            Unknown::Overwritten => "record_overwritten",
            Unknown::NoRecorder => "no_recorder",
            Unknown::TableFull => "table_full",
        }
    }

    /// The sentence `explain` prints.
    pub const fn text(self) -> &'static str {
        match self {
            Unknown::BeforeStart => "unknown: loaded before the exporter started",
            Unknown::NotRecorded => {
                "unknown: the load was not recorded (loaded from inside the kernel, or its fd was closed before the probe read it)"
            }
            Unknown::Overwritten => {
                "unknown: its load record was overwritten by later loads before a scrape read it"
            }
            Unknown::NoRecorder => {
                "unknown: no lifecycle collector records program loads here (a standalone explain never does; explain --from http://<node>:9863 asks a running exporter)"
            }
            Unknown::TableFull => "unknown: the loader table is full",
        }
    }
}

/// The loader's memory cgroup now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupState {
    /// It exists (the kernfs id found in the memory hierarchy).
    Live,
    /// It was removed: its path no longer names a cgroup with its id (ids
    /// are never reused).
    Gone,
    /// Never found in the hierarchy (removed before a scrape saw it, or
    /// outside the walk's bounds), or no memory controller: whether it
    /// lives cannot be told.
    Unresolved,
}

/// A known loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    pub rec: LoadRecord,
    /// The memory cgroup's path, as resolved while it lived.
    pub cgroup_path: Option<String>,
    /// Container and pod from that path (empty where it names none).
    pub container_id: String,
    pub pod_uid: String,
    pub cgroup: CgroupState,
}

/// A program's loader, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgLoader {
    /// Boxed: most programs' loaders are unknown, and the table of every
    /// program is built each scrape.
    Known(Box<Loader>),
    Unknown(Unknown),
}

impl ProgLoader {
    pub fn known(&self) -> Option<&Loader> {
        match self {
            ProgLoader::Known(l) => Some(l),
            ProgLoader::Unknown(_) => None,
        }
    }
}

/// The memory cgroup hierarchy, as the loader table asks it.
pub trait Cgroups {
    /// The paths of the ids that a walk of the hierarchy finds.
    fn resolve(&mut self, ids: &HashSet<u64>) -> anyhow::Result<HashMap<u64, String>>;
    /// Whether the cgroup at `path` is still the one with kernfs id `id`;
    /// None when that cannot be read.
    fn still_there(&mut self, id: u64, path: &str) -> Option<bool>;
}

impl Cgroups for super::creators::PathResolver {
    fn resolve(&mut self, ids: &HashSet<u64>) -> anyhow::Result<HashMap<u64, String>> {
        super::creators::PathResolver::resolve(self, ids)
    }
    fn still_there(&mut self, id: u64, path: &str) -> Option<bool> {
        super::creators::PathResolver::still_there(self, id, path)
    }
}

/// The loaders of live programs, kept between scrapes.
#[derive(Debug, Default)]
pub struct LoaderTable {
    by_prog: IdMap<Loader>,
    /// Programs known to predate the probes.
    before: rustc_hash::FxHashSet<u32>,
}

impl LoaderTable {
    /// Learn the loaders of the live programs `progs` from `records` (None:
    /// nothing records loads), forget programs that are gone, decide each
    /// loader's memory cgroup state, and return every live program's
    /// loader.
    pub fn update(
        &mut self,
        progs: &[ProgRecord],
        records: Option<&dyn LoadRecords>,
        cgroups: &mut dyn Cgroups,
    ) -> IdMap<ProgLoader> {
        let mut live: rustc_hash::FxHashSet<u32> = rustc_hash::FxHashSet::default();
        live.reserve(progs.len());
        live.extend(progs.iter().map(|p| p.id));
        self.by_prog.retain(|id, _| live.contains(id));
        self.before.retain(|id| live.contains(id));
        let mut out: IdMap<ProgLoader> = IdMap::default();
        out.reserve(progs.len());
        let Some(records) = records else {
            for p in progs {
                out.insert(p.id, ProgLoader::Unknown(Unknown::NoRecorder));
            }
            return out;
        };
        let start_max = records.start_max();
        let mut unknown: IdMap<Unknown> = IdMap::default();
        for p in progs {
            if self.by_prog.contains_key(&p.id) || self.before.contains(&p.id) {
                continue;
            }
            let why = match records.lookup(p.id) {
                // The record must be of this very program: a load after
                // it (a wrapped id) carries a later time.
                Lookup::Found(r) if r.id == p.id => {
                    if self.by_prog.len() < MAX_LOADERS {
                        self.by_prog.insert(
                            p.id,
                            Loader {
                                rec: r,
                                cgroup_path: None,
                                container_id: String::new(),
                                pod_uid: String::new(),
                                cgroup: CgroupState::Unresolved,
                            },
                        );
                        continue;
                    }
                    Unknown::TableFull
                }
                _ if p.id <= start_max => {
                    if self.before.len() < MAX_LOADERS {
                        self.before.insert(p.id);
                    }
                    Unknown::BeforeStart
                }
                Lookup::Overwritten => Unknown::Overwritten,
                _ => Unknown::NotRecorded,
            };
            unknown.insert(p.id, why);
        }
        self.decide_cgroups(cgroups);
        for p in progs {
            let l = match self.by_prog.get(&p.id) {
                Some(l) => ProgLoader::Known(Box::new(l.clone())),
                None if self.before.contains(&p.id) => ProgLoader::Unknown(Unknown::BeforeStart),
                None => {
                    ProgLoader::Unknown(unknown.get(&p.id).copied().unwrap_or(Unknown::NotRecorded))
                }
            };
            out.insert(p.id, l);
        }
        out
    }

    /// Resolve the memory cgroups never resolved, and check the others
    /// still exist; once per cgroup.
    fn decide_cgroups(&mut self, cgroups: &mut dyn Cgroups) {
        let ask: HashSet<u64> = self
            .by_prog
            .values()
            .filter(|l| l.cgroup_path.is_none() && l.rec.memcg_id != 0)
            .map(|l| l.rec.memcg_id)
            .collect();
        let found = if ask.is_empty() {
            HashMap::new()
        } else {
            cgroups.resolve(&ask).unwrap_or_else(|e| {
                tracing::debug!(error = %format!("{e:#}"), "program loaders: memory cgroups not resolved");
                HashMap::new()
            })
        };
        let mut checked: HashMap<u64, Option<bool>> = HashMap::new();
        for l in self.by_prog.values_mut() {
            let id = l.rec.memcg_id;
            if l.cgroup_path.is_none() {
                if let Some(path) = found.get(&id) {
                    let c = parse_path(path);
                    l.container_id = c.container_id;
                    l.pod_uid = c.pod_uid;
                    l.cgroup_path = Some(path.clone());
                    // Found by this very walk: live.
                    checked.insert(id, Some(true));
                }
            }
            l.cgroup = match &l.cgroup_path {
                None => CgroupState::Unresolved,
                Some(path) => match *checked
                    .entry(id)
                    .or_insert_with(|| cgroups.still_there(id, path))
                {
                    Some(true) => CgroupState::Live,
                    Some(false) => CgroupState::Gone,
                    None => CgroupState::Unresolved,
                },
            };
        }
    }
}

/// Why a program's orphan verdict is withheld: the `reason` label of
/// `bpfmap_programs_orphaned_withheld`.
pub const WITHHELD_CGROUP: &str = "cgroup_unresolved";
pub const WITHHELD_ROOT: &str = "root_unknown";

/// Whether a program is orphaned, or why that is withheld.
pub fn verdict(loader: &ProgLoader, g: &Graph, id: u32) -> Result<bool, &'static str> {
    let l = match loader {
        ProgLoader::Unknown(u) => return Err(u.label()),
        ProgLoader::Known(l) => l,
    };
    match l.cgroup {
        CgroupState::Live => Ok(false),
        CgroupState::Unresolved => Err(WITHHELD_CGROUP),
        CgroupState::Gone => orphaned(&g.roots(Obj::Prog(id))).ok_or(WITHHELD_ROOT),
    }
}

/// What the loaders say about the node's programs.
#[derive(Debug, Clone, Default)]
pub struct ProgOrphans {
    /// Programs whose loader's memory cgroup is gone and that only pins
    /// keep alive, through every chain.
    pub orphaned: rustc_hash::FxHashSet<u32>,
    /// Programs without a verdict, by reason (exact).
    pub withheld: BTreeMap<&'static str, u64>,
}

pub fn summarize(progs: &[ProgRecord], loaders: &IdMap<ProgLoader>, g: &Graph) -> ProgOrphans {
    let mut s = ProgOrphans::default();
    for p in progs {
        let Some(l) = loaders.get(&p.id) else {
            continue;
        };
        match verdict(l, g, p.id) {
            Ok(true) => {
                s.orphaned.insert(p.id);
            }
            Ok(false) => {}
            Err(why) => *s.withheld.entry(why).or_default() += 1,
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::roots::{Holder, PinId, Root};

    fn prog(id: u32) -> ProgRecord {
        ProgRecord {
            prog_ptr: 0,
            refcnt: 1,
            load_time_ns: 0,
            memlock: 4096,
            id,
            prog_type: 1,
            expected_attach_type: 0,
            used_map_cnt: 0,
            tag: [0; 8],
            name: format!("p{id}"),
            map_ids: vec![],
            dst_prog_id: None,
        }
    }

    fn rec(id: u32, memcg_id: u64) -> LoadRecord {
        LoadRecord {
            load_ns: 1,
            cgroup_id: 5,
            memcg_id,
            id,
            tgid: 100 + id,
            pid: 100 + id,
            comm: "loader".into(),
        }
    }

    struct Records {
        recs: IdMap<Lookup>,
        start_max: u32,
    }

    impl LoadRecords for Records {
        fn lookup(&self, id: u32) -> Lookup {
            self.recs.get(&id).cloned().unwrap_or(Lookup::Missing)
        }
        fn start_max(&self) -> u32 {
            self.start_max
        }
    }

    /// A hierarchy of (id -> path) that exist now; `walks` counts resolves.
    #[derive(Default)]
    struct Fake {
        live: HashMap<u64, String>,
        walks: usize,
        stats: usize,
    }

    impl Cgroups for Fake {
        fn resolve(&mut self, ids: &HashSet<u64>) -> anyhow::Result<HashMap<u64, String>> {
            self.walks += 1;
            Ok(ids
                .iter()
                .filter_map(|id| self.live.get(id).map(|p| (*id, p.clone())))
                .collect())
        }
        fn still_there(&mut self, id: u64, path: &str) -> Option<bool> {
            self.stats += 1;
            Some(self.live.get(&id).map(String::as_str) == Some(path))
        }
    }

    const POD: &str = "0b8e6f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const CTR: &str = "3770bdd710afe32f765d2a786a1ec9be82b53f7d11c3078d0359abf802f9db29";

    #[test]
    fn loaders_are_learned_named_and_remembered_after_the_pod_is_deleted() {
        let path = format!("/kubepods/besteffort/pod{POD}/{CTR}");
        let mut cg = Fake::default();
        cg.live.insert(50, path.clone());
        let records = Records {
            recs: [
                (11, Lookup::Found(rec(11, 50))),
                (12, Lookup::Overwritten),
                (3, Lookup::Found(rec(3, 50))),
                // A slot of another id is no record of this one.
                (14, Lookup::Found(rec(999, 50))),
            ]
            .into_iter()
            .collect(),
            start_max: 10,
        };
        let progs = [prog(2), prog(3), prog(11), prog(12), prog(13), prog(14)];
        let mut t = LoaderTable::default();
        let l = t.update(&progs, Some(&records), &mut cg);
        let known = l[&11].known().unwrap();
        assert_eq!(
            (known.container_id.as_str(), known.pod_uid.as_str()),
            (CTR, POD)
        );
        assert_eq!(known.cgroup, CgroupState::Live);
        assert_eq!(known.rec.comm, "loader");
        // Loaded concurrently with the attach: its record wins.
        assert!(l[&3].known().is_some());
        assert_eq!(l[&2], ProgLoader::Unknown(Unknown::BeforeStart));
        assert_eq!(l[&12], ProgLoader::Unknown(Unknown::Overwritten));
        assert_eq!(l[&13], ProgLoader::Unknown(Unknown::NotRecorded));
        assert_eq!(l[&14], ProgLoader::Unknown(Unknown::NotRecorded));
        assert_eq!(cg.walks, 1);
        // kubelet removes the pod's cgroups: the loader is still named.
        cg.live.clear();
        let l = t.update(&progs, Some(&records), &mut cg);
        let known = l[&11].known().unwrap();
        assert_eq!(known.cgroup, CgroupState::Gone);
        assert_eq!(known.pod_uid, POD);
        assert_eq!(known.cgroup_path.as_deref(), Some(path.as_str()));
        assert_eq!(cg.walks, 1, "a remembered path is checked, not walked for");
        assert_eq!(cg.stats, 1, "once per cgroup, not per program");
        // A cgroup of the same name again is another cgroup (another id).
        cg.live.insert(51, path.clone());
        let l = t.update(&progs, Some(&records), &mut cg);
        assert_eq!(l[&11].known().unwrap().cgroup, CgroupState::Gone);
        // Programs that are gone are forgotten.
        t.update(&[prog(2)], Some(&records), &mut cg);
        assert!(t.by_prog.is_empty());
    }

    #[test]
    fn a_cgroup_never_seen_and_no_recorder_give_no_loader_state() {
        let mut cg = Fake::default();
        let records = Records {
            recs: [
                (20, Lookup::Found(rec(20, 77))),
                (21, Lookup::Found(rec(21, 0))),
            ]
            .into_iter()
            .collect(),
            start_max: 0,
        };
        let mut t = LoaderTable::default();
        let l = t.update(&[prog(20), prog(21)], Some(&records), &mut cg);
        // Removed before any scrape saw it: gone or not cannot be told.
        assert_eq!(l[&20].known().unwrap().cgroup, CgroupState::Unresolved);
        assert_eq!(l[&21].known().unwrap().cgroup, CgroupState::Unresolved);
        let l = LoaderTable::default().update(&[prog(20)], None, &mut cg);
        assert_eq!(l[&20], ProgLoader::Unknown(Unknown::NoRecorder));
    }

    #[test]
    fn verdicts_follow_the_roots_and_withhold_with_a_reason() {
        const P: PinId = PinId { dev: 1, ino: 2 };
        let mut g = Graph::default();
        // 1: pinned only; 2: pinned and held by a process; 3: pinned and an
        // unknown reference; 4: live loader; 5, 6: unknown, unresolved.
        for id in 1..=4 {
            g.add(Obj::Prog(id), Holder::Root(Root::Pin(P)));
        }
        g.add(Obj::Prog(2), Holder::Root(Root::Process(7)));
        g.add(Obj::Prog(3), Holder::Root(Root::Unknown(Obj::Prog(3))));
        g.finish();
        let loader = |state| {
            ProgLoader::Known(Box::new(Loader {
                rec: rec(1, 50),
                cgroup_path: Some("/x".into()),
                container_id: String::new(),
                pod_uid: POD.into(),
                cgroup: state,
            }))
        };
        let loaders: IdMap<ProgLoader> = [
            (1, loader(CgroupState::Gone)),
            (2, loader(CgroupState::Gone)),
            (3, loader(CgroupState::Gone)),
            (4, loader(CgroupState::Live)),
            (5, ProgLoader::Unknown(Unknown::BeforeStart)),
            (6, loader(CgroupState::Unresolved)),
        ]
        .into_iter()
        .collect();
        let progs: Vec<ProgRecord> = (1..=6).map(prog).collect();
        let s = summarize(&progs, &loaders, &g);
        assert_eq!(s.orphaned, [1].into_iter().collect());
        assert_eq!(
            s.withheld,
            BTreeMap::from([
                ("cgroup_unresolved", 1),
                ("loaded_before_start", 1),
                ("root_unknown", 1)
            ])
        );
        assert_eq!(verdict(&loaders[&2], &g, 2), Ok(false));
        assert_eq!(verdict(&loaders[&4], &g, 4), Ok(false));
    }
}
