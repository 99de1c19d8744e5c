//! Pod attribution: a process's cgroup -> container id -> pod.
//!
//! Contract used by the census renderer and the lifecycle collector: an
//! [`Attributor`] turns (tgid, cgroup id) into an [`Identity`]. Empty strings
//! mean "unknown" (host processes, or attribution turned off).
//!
//! [`CgroupAttributor`] reads `/proc/<tgid>/cgroup` (host pids: the
//! DaemonSet runs with hostPID) and parses it with [`cgroup`]. What it learns
//! from a cgroup v2 path is cached by the cgroup id (the kernfs inode of the
//! cgroup directory, which the census and the lifecycle probes record), so a
//! process that already exited is still attributed by its cgroup id. With
//! `--k8s.enrich` / `--k8s.kubelet-url` the pod UID is also resolved to
//! namespace and pod name ([`pods`]), published once per pod in
//! `bpfmap_k8s_pod_info{pod_uid,namespace,pod}` for joins.
//!
//! Cardinality: container_id and pod_uid add no series of their own (one
//! process has one of each); `bpfmap_k8s_pod_info` has one series per pod
//! that holds or created maps since the previous scrape, capped.
pub(crate) mod cgroup;
pub(crate) mod pods;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::metrics::defs;
use crate::metrics::Families;

/// Container and pod identity of a process. Empty where unknown.
#[derive(Clone, Default, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub container_id: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
}

pub trait Attributor: Send + Sync {
    fn identify(&self, tgid: u32, cgroup_id: u64) -> Identity;

    /// The attributor's own series (pod info for joins, enrichment health).
    /// Called once per scrape, after every `identify` of that scrape.
    fn render_metrics(&self, _out: &mut Families) {}
}

/// Attribution turned off: every process is unknown.
pub struct NoAttribution;

impl Attributor for NoAttribution {
    fn identify(&self, _tgid: u32, _cgroup_id: u64) -> Identity {
        Identity::default()
    }
}

/// Bounds of the caches: far above the processes and pods of one node.
const MAX_CACHE: usize = 8192;
const MAX_POD_INFO: usize = 1024;

/// cgroup -> container / pod, optionally enriched with pod names.
pub struct CgroupAttributor {
    proc_root: PathBuf,
    /// cgroup v2 id -> identity learned from a `0::` line naming that cgroup.
    by_cgroup: Mutex<HashMap<u64, cgroup::CgroupIdentity>>,
    pods: Option<Arc<RwLock<pods::PodIndex>>>,
    /// Pod UIDs identified since the last render (for bpfmap_k8s_pod_info).
    seen: Mutex<HashSet<String>>,
}

impl CgroupAttributor {
    pub fn new(proc_root: impl Into<PathBuf>, pods: Option<Arc<RwLock<pods::PodIndex>>>) -> Self {
        CgroupAttributor {
            proc_root: proc_root.into(),
            by_cgroup: Mutex::new(HashMap::new()),
            pods,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn lookup(&self, tgid: u32, cgroup_id: u64) -> cgroup::CgroupIdentity {
        let path = self.proc_root.join(tgid.to_string()).join("cgroup");
        let parsed = std::fs::read_to_string(path)
            .ok()
            .and_then(|c| cgroup::parse_proc_cgroup(&c));
        let mut cache = self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        match parsed {
            Some((id, source)) => {
                // Only a v2 path names the cgroup whose id we were given.
                if source == cgroup::Source::Unified && cgroup_id > 1 {
                    if cache.len() >= MAX_CACHE {
                        cache.clear();
                    }
                    cache.insert(cgroup_id, id.clone());
                }
                id
            }
            // The process is gone (or a host process): its cgroup may be known.
            None => cache.get(&cgroup_id).cloned().unwrap_or_default(),
        }
    }
}

impl Attributor for CgroupAttributor {
    fn identify(&self, tgid: u32, cgroup_id: u64) -> Identity {
        let c = self.lookup(tgid, cgroup_id);
        let mut id = Identity {
            container_id: c.container_id,
            pod_uid: c.pod_uid,
            ..Default::default()
        };
        if !id.pod_uid.is_empty() {
            if let Some(p) = &self.pods {
                let idx = p.read().unwrap_or_else(|e| e.into_inner());
                if let Some(r) = idx.pods.get(&id.pod_uid) {
                    id.namespace = r.namespace.clone();
                    id.pod_name = r.name.clone();
                }
            }
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() < MAX_POD_INFO {
                seen.insert(id.pod_uid.clone());
            }
        }
        id
    }

    fn render_metrics(&self, out: &mut Families) {
        let seen: Vec<String> = {
            let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            s.drain().collect()
        };
        let Some(p) = &self.pods else { return };
        let idx = p.read().unwrap_or_else(|e| e.into_inner());
        for uid in seen {
            if let Some(r) = idx.pods.get(&uid) {
                out.gauge(
                    &defs::K8S_POD_INFO,
                    vec![
                        ("pod_uid", uid.clone()),
                        ("namespace", r.namespace.clone()),
                        ("pod", r.name.clone()),
                    ],
                    1.0,
                );
            }
        }
        out.gauge(&defs::K8S_PODS, vec![], idx.pods.len() as f64);
        out.gauge(
            &defs::K8S_POD_REFRESH_SUCCESS,
            vec![],
            idx.last_ok as u8 as f64,
        );
        out.counter(&defs::K8S_POD_REFRESHES_TOTAL, vec![], idx.refreshes as f64);
        out.counter(
            &defs::K8S_POD_REFRESH_FAILURES_TOTAL,
            vec![],
            idx.failures as f64,
        );
        if idx.last_success_unix > 0.0 {
            out.gauge(
                &defs::K8S_POD_LAST_SUCCESS_TIMESTAMP_SECONDS,
                vec![],
                idx.last_success_unix,
            );
        }
    }
}

/// The Kubernetes flags (`--k8s.*`).
#[derive(Debug, Clone, Default)]
pub struct K8sOpts {
    pub attribution: bool,
    pub enrich: bool,
    pub kubelet_url: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub node_name: Option<String>,
    /// Seconds between pod list refreshes (at least 5 are used).
    pub refresh_interval: u64,
    pub max_pods: usize,
}

/// Build the attributor the flags ask for. Enrichment problems that can be
/// seen at startup (no node name, unreadable CA) are errors naming the fix;
/// failures at run time are soft (logged and counted).
pub fn attributor(cli: &K8sOpts) -> anyhow::Result<Arc<dyn Attributor>> {
    if !cli.attribution {
        if cli.enrich || cli.kubelet_url.is_some() {
            anyhow::bail!("--k8s.enrich / --k8s.kubelet-url need --k8s.attribution (on by default); drop --k8s.attribution=false");
        }
        return Ok(Arc::new(NoAttribution));
    }
    let interval = Duration::from_secs(cli.refresh_interval.max(5));
    let source = if let Some(url) = &cli.kubelet_url {
        Some(pods::PodSource::kubelet(
            url,
            cli.insecure_skip_tls_verify,
            cli.max_pods,
            interval,
        ))
    } else if cli.enrich {
        let node = cli
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--k8s.enrich needs the node name: set NODE_NAME (downward API spec.nodeName, as deploy/daemonset.yaml does) or --k8s.node-name")
            })?;
        Some(pods::PodSource::api_server(&node, cli.max_pods, interval)?)
    } else {
        None
    };
    let index = match source {
        Some(s) => Some(pods::spawn(s)?),
        None => None,
    };
    Ok(Arc::new(CgroupAttributor::new("/proc", index)))
}

#[cfg(test)]
mod prop_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4e3c2a1b0f9e8d7c6b5a49382716051f4e3c2a1b0f9e8d7c6b5a49382716051f";
    const UID: &str = "8a3f4c2e-1b2d-4e5f-9a8b-7c6d5e4f3a2b";

    fn fake_proc(entries: &[(u32, String)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (pid, content) in entries {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("cgroup"), content).unwrap();
        }
        d
    }

    #[test]
    fn attributes_live_and_exited_processes() {
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope\n",
            UID.replace('-', "_")
        );
        let d = fake_proc(&[(100, line), (200, "0::/system.slice/sshd.service\n".into())]);
        let mut index = pods::PodIndex::default();
        index.pods.insert(
            UID.into(),
            pods::PodRef {
                namespace: "kube-system".into(),
                name: "cilium-x7k2p".into(),
            },
        );
        let a = CgroupAttributor::new(d.path(), Some(Arc::new(RwLock::new(index))));
        let id = a.identify(100, 4242);
        assert_eq!(id.container_id, CID);
        assert_eq!(id.pod_uid, UID);
        assert_eq!(
            (id.namespace.as_str(), id.pod_name.as_str()),
            ("kube-system", "cilium-x7k2p")
        );
        // host process: unknown
        assert_eq!(a.identify(200, 7), Identity::default());
        // pid 300 exited, but its cgroup id is known from pid 100
        assert_eq!(a.identify(300, 4242).container_id, CID);
        // unknown pid, unknown cgroup
        assert_eq!(a.identify(301, 9999), Identity::default());

        let mut f = Families::new();
        a.render_metrics(&mut f);
        let text = String::from_utf8(f.encode_text(&[]).unwrap()).unwrap();
        assert!(
            text.contains(&format!("bpfmap_k8s_pod_info{{pod_uid=\"{UID}\",namespace=\"kube-system\",pod=\"cilium-x7k2p\"}} 1")),
            "{text}"
        );
        assert!(text.contains("bpfmap_k8s_pods 1"), "{text}");
        // pod info only for pods seen since the last render
        let mut f = Families::new();
        a.render_metrics(&mut f);
        let text = String::from_utf8(f.encode_text(&[]).unwrap()).unwrap();
        assert!(!text.contains("bpfmap_k8s_pod_info"), "{text}");
    }

    #[test]
    fn v1_paths_are_not_cached_by_cgroup_id() {
        // On a v1 host every process shares the root v2 cgroup: caching by
        // its id would give every host process the first container's id.
        let d = fake_proc(&[(10, format!("4:memory:/docker/{CID}\n0::/\n"))]);
        let a = CgroupAttributor::new(d.path(), None);
        assert_eq!(a.identify(10, 1).container_id, CID);
        assert_eq!(a.identify(11, 1), Identity::default());
        // No enrichment: no pod info, no enrichment health series.
        let mut f = Families::new();
        a.render_metrics(&mut f);
        assert!(f.is_empty());
    }
}
