//! Container and pod of the processes the lifecycle counts, from the same
//! source as the census's creator series: the memory cgroup a process's
//! maps are charged to (recorded by the probes as its kernfs id), resolved
//! to a path by the census's resolver and parsed by the attributor's
//! parser. On hybrid hosts (memory on cgroup v1, the process in the unified
//! root) the unified cgroup names no container, the memory cgroup does.
//! Where the memory cgroup cannot be resolved (no memory controller, or the
//! cgroup was removed before any scrape saw it) the attributor decides from
//! the process and its unified cgroup, as before.
//!
//! A key's identity is decided once and kept (bounded) so that its
//! counters keep one label set when the cgroup is later removed.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::bpf::lifecycle::records::ProcKey;
use crate::census::creators::{PathResolver, WalkLimits};
use crate::k8s::cgroup::parse_path;
use crate::k8s::Attributor;

/// Decided identities kept: far above the kernel's counter slots.
const MAX_KEYS: usize = 65_536;

/// Container id and pod UID (empty where unknown).
pub type Ident = (String, String);

/// Identity of a key: the memory cgroup, the unified cgroup and the tgid
/// (0 unless the pid label is on) it was decided from.
type Key = (u64, u64, u32);

fn key(p: &ProcKey) -> Key {
    (p.memcg_id, p.cgroup_id, p.tgid)
}

pub struct Identities {
    /// Attribution on (`--k8s.attribution`): memory cgroups are resolved.
    on: bool,
    resolver: PathResolver,
    decided: HashMap<Key, Ident>,
}

impl Identities {
    /// `root`: the memory cgroup hierarchy to resolve in
    /// (`--collector.creators.cgroup-root`), else found in mountinfo.
    pub fn new(on: bool, root: Option<PathBuf>) -> Identities {
        Identities {
            on,
            resolver: PathResolver::new(WalkLimits::default(), root),
            decided: HashMap::new(),
        }
    }

    /// Decide the identity of every key in `keys` not decided yet.
    /// `census_paths`: memory cgroup id -> path, as this scrape's census
    /// resolved them (looked up first: no second walk for those).
    pub fn learn<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a ProcKey>,
        census_paths: Option<&HashMap<u64, String>>,
        attributor: &dyn Attributor,
    ) {
        if !self.on {
            return;
        }
        let new: Vec<&ProcKey> = keys
            .filter(|p| !self.decided.contains_key(&key(p)))
            .map(|p| (key(p), p))
            .collect::<HashMap<Key, &ProcKey>>()
            .into_values()
            .collect();
        if new.is_empty() {
            return;
        }
        let mut paths: HashMap<u64, String> = HashMap::new();
        let mut ask: HashSet<u64> = HashSet::new();
        for p in &new {
            if p.memcg_id == 0 {
                continue;
            }
            match census_paths.and_then(|c| c.get(&p.memcg_id)) {
                Some(path) => {
                    paths.insert(p.memcg_id, path.clone());
                }
                None => {
                    ask.insert(p.memcg_id);
                }
            }
        }
        if !ask.is_empty() {
            match self.resolver.resolve(&ask) {
                Ok(found) => paths.extend(found),
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "lifecycle: memory cgroups not resolved; attributing by process")
                }
            }
        }
        for p in new {
            let ident = match paths.get(&p.memcg_id) {
                Some(path) => {
                    let c = parse_path(path);
                    (c.container_id, c.pod_uid)
                }
                None => {
                    let id = attributor.identify(p.tgid, p.cgroup_id);
                    (id.container_id, id.pod_uid)
                }
            };
            if self.decided.len() < MAX_KEYS {
                self.decided.insert(key(p), ident);
            }
        }
    }

    /// The decided identity of `p`; None when attribution by memory cgroup
    /// is off or `p` was not decided (the caller asks the attributor).
    pub fn get(&self, p: &ProcKey) -> Option<&Ident> {
        self.decided.get(&key(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{Identity, NoAttribution};

    const CTR: &str = "4e3c2a1b0f9e8d7c6b5a49382716051f4e3c2a1b0f9e8d7c6b5a49382716051f";
    const UID: &str = "8a3f4c2e-1b2d-4e5f-9a8b-7c6d5e4f3a2b";

    fn pk(memcg_id: u64, cgroup_id: u64) -> ProcKey {
        ProcKey {
            comm: "x".into(),
            tgid: 0,
            cgroup_id,
            memcg_id,
        }
    }

    struct ByProcess;
    impl Attributor for ByProcess {
        fn identify(&self, _tgid: u32, cgroup_id: u64) -> Identity {
            Identity {
                container_id: format!("proc-{cgroup_id}"),
                ..Default::default()
            }
        }
    }

    #[test]
    fn the_memory_cgroup_names_the_pod_and_the_decision_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let pod = d
            .path()
            .join("kubepods/besteffort")
            .join(format!("pod{UID}"));
        std::fs::create_dir_all(pod.join(CTR)).unwrap();
        let mut ids = Identities::new(true, Some(d.path().to_path_buf()));
        let ino = |p: &std::path::Path| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())
        };
        let (in_ctr, unknown) = (pk(ino(&pod.join(CTR)), 1), pk(999_999_999, 7));
        // The census resolved another id this scrape: taken as it is.
        let census = HashMap::from([(42u64, "/kubepods/pod".to_string() + UID)]);
        let from_census = pk(42, 1);
        ids.learn(
            [&in_ctr, &unknown, &from_census].into_iter(),
            Some(&census),
            &ByProcess,
        );
        assert_eq!(ids.get(&in_ctr), Some(&(CTR.to_string(), UID.to_string())));
        assert_eq!(
            ids.get(&from_census),
            Some(&(String::new(), UID.to_string()))
        );
        // Not a memory cgroup of the hierarchy: the attributor decides.
        assert_eq!(
            ids.get(&unknown),
            Some(&("proc-7".to_string(), String::new()))
        );
        // The cgroups go; the decision stays.
        std::fs::remove_dir_all(d.path().join("kubepods")).unwrap();
        ids.learn([&in_ctr].into_iter(), None, &NoAttribution);
        assert_eq!(ids.get(&in_ctr), Some(&(CTR.to_string(), UID.to_string())));
    }

    #[test]
    fn off_decides_nothing() {
        let mut ids = Identities::new(false, None);
        let p = pk(5, 1);
        ids.learn([&p].into_iter(), None, &ByProcess);
        assert_eq!(ids.get(&p), None);
    }
}
