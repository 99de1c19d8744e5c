//! Pod attribution: a process's cgroup -> container id -> pod (issue 5).
//!
//! Contract used by the census renderer and the lifecycle collector: an
//! [`Attributor`] turns (tgid, cgroup id) into an [`Identity`]. Empty strings
//! mean "unknown" (host processes, or attribution turned off).

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
}

/// Attribution turned off: every process is unknown.
pub struct NoAttribution;

impl Attributor for NoAttribution {
    fn identify(&self, _tgid: u32, _cgroup_id: u64) -> Identity {
        Identity::default()
    }
}
