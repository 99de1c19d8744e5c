//! The creator of every map, from the kernel's memory accounting: the
//! census records the kernfs id of the memory cgroup each map is charged to
//! ([`Creator`]); this module resolves those ids to cgroup paths (bounded,
//! cached walk of the memory cgroup hierarchy) and the paths to container
//! and pod with the attributor's parser, and renders the creator series.
//!
//! A kernfs id is the inode number of the cgroup's directory in the
//! hierarchy that holds the memory controller: the v1 `memory` mount where
//! there is one, else the unified (v2) mount.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Creator, MapRecord, Snapshot};
use crate::k8s::cgroup::parse_path;
use crate::metrics::{defs, Families};

/// The mount whose directory inodes are memory cgroup ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcgMount {
    pub root: PathBuf,
    /// The cgroup v1 memory hierarchy (else the unified hierarchy).
    pub v1: bool,
}

/// Octal escapes of mountinfo fields (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The memory cgroup hierarchy in `/proc/self/mountinfo` text: a v1 mount
/// with the `memory` controller is preferred (where it exists the memory
/// controller is not on the unified hierarchy), else the first cgroup2 mount.
pub fn memcg_mount(mountinfo: &str) -> Option<MemcgMount> {
    let mut v2 = None;
    for m in memcg_mounts(mountinfo) {
        if m.v1 {
            return Some(MemcgMount {
                root: m.point,
                v1: true,
            });
        }
        if v2.is_none() {
            v2 = Some(MemcgMount {
                root: m.point,
                v1: false,
            });
        }
    }
    v2
}

/// One mount that can hold memory cgroups: a v1 hierarchy with the
/// `memory` controller, or a cgroup2 mount.
struct CgroupMount {
    /// The hierarchy path mounted (`/` unless the mount is of a subtree,
    /// as a container's is).
    root: String,
    point: PathBuf,
    v1: bool,
}

/// The memory-capable cgroup mounts of `/proc/self/mountinfo` text, in
/// order.
fn memcg_mounts(mountinfo: &str) -> impl Iterator<Item = CgroupMount> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut pre = pre.split(' ').skip(3);
        let (root, point) = (pre.next()?, pre.next()?);
        let mut post = post.split(' ');
        let (fstype, _, opts) = (post.next()?, post.next(), post.next()?);
        let v1 = match fstype {
            "cgroup" if opts.split(',').any(|o| o == "memory") => true,
            "cgroup2" => false,
            _ => return None,
        };
        Some(CgroupMount {
            root: unescape(root),
            point: PathBuf::from(unescape(point)),
            v1,
        })
    })
}

/// A given hierarchy root: a tmpfs of v1 hierarchies means its `memory`
/// directory.
fn given_root(r: &Path) -> PathBuf {
    let v1 = r.join("memory");
    if v1.join("memory.usage_in_bytes").exists() {
        v1
    } else {
        r.to_path_buf()
    }
}

/// Fail early, naming the fix, when a given hierarchy root is not a cgroup
/// hierarchy.
pub fn check_root(r: &Path) -> anyhow::Result<()> {
    let g = given_root(r);
    if !g.join("cgroup.procs").exists() {
        bail!(
            "--collector.creators.cgroup-root {}: not a cgroup hierarchy (no cgroup.procs); give the host's /sys/fs/cgroup as mounted into this container",
            r.display()
        );
    }
    Ok(())
}

/// Bounds of one walk of the cgroup hierarchy.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    pub max_entries: usize,
    pub max_depth: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_entries: 100_000,
            max_depth: 32,
        }
    }
}

/// Directory inode -> path relative to `root` ("/" for the root), for every
/// cgroup directory within the limits.
pub fn walk(root: &Path, limits: WalkLimits) -> anyhow::Result<HashMap<u64, String>> {
    let md = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    let mut out = HashMap::new();
    out.insert(md.ino(), "/".to_string());
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth >= limits.max_depth {
            continue;
        }
        // A cgroup removed during the walk is simply not found.
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if out.len() >= limits.max_entries {
                return Ok(out);
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            let child = format!("{rel}/{}", e.file_name().to_string_lossy());
            out.insert(md.ino(), child.clone());
            stack.push((e.path(), child, depth + 1));
        }
    }
    Ok(out)
}

/// Memory cgroup id -> path, cached between scrapes. The hierarchy is walked
/// again only when a scrape asks for an id that neither the last walk found
/// nor was already missing from it, so a cgroup that cannot be found costs
/// one walk, not one per scrape.
#[derive(Debug, Default)]
pub struct PathResolver {
    limits: WalkLimits,
    /// Given hierarchy root; else found in mountinfo on each walk.
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    misses: HashSet<u64>,
    /// The hierarchy root the last walk read.
    walked: Option<PathBuf>,
}

impl PathResolver {
    pub fn new(limits: WalkLimits, root: Option<PathBuf>) -> PathResolver {
        PathResolver {
            limits,
            root: root.map(|r| given_root(&r)),
            ..Default::default()
        }
    }

    /// The memory cgroup hierarchy's root: the given one, else found in
    /// mountinfo.
    fn hierarchy(&self) -> anyhow::Result<PathBuf> {
        if let Some(r) = &self.root {
            return Ok(r.clone());
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        Ok(memcg_mount(&mi).context(
            "no cgroup hierarchy with the memory controller is mounted: mount cgroup2 (or the v1 memory hierarchy) at /sys/fs/cgroup, or pass --collector.creators.cgroup-root",
        )?.root)
    }

    /// Whether the cgroup directory at `path` (as [`Self::resolve`] gave
    /// it) is still the cgroup with kernfs id `id`: a removed cgroup's id
    /// is never reused, so a cgroup created again under that name has
    /// another. None when the hierarchy cannot be read.
    pub fn still_there(&mut self, id: u64, path: &str) -> Option<bool> {
        let root = match &self.walked {
            Some(r) => r.clone(),
            None => self.hierarchy().ok()?,
        };
        match std::fs::metadata(root.join(path.trim_start_matches('/'))) {
            Ok(md) => Some(md.is_dir() && md.ino() == id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    /// The paths of `ids` that can be found. Fails only when no memory
    /// cgroup hierarchy is mounted.
    pub fn resolve(&mut self, ids: &HashSet<u64>) -> anyhow::Result<HashMap<u64, String>> {
        let unseen = ids
            .iter()
            .any(|id| !self.paths.contains_key(id) && !self.misses.contains(id));
        if unseen {
            let root = self.hierarchy()?;
            self.paths = walk(&root, self.limits)?;
            self.walked = Some(root);
            self.misses.clear();
        }
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            match self.paths.get(&id) {
                Some(p) => {
                    out.insert(id, p.clone());
                }
                None => {
                    self.misses.insert(id);
                }
            }
        }
        self.misses.retain(|id| ids.contains(id));
        Ok(out)
    }
}

/// The memory cgroup ids the census's maps are charged to.
pub fn cgroup_ids<'a>(maps: impl Iterator<Item = &'a MapRecord>) -> HashSet<u64> {
    maps.filter_map(|m| m.creator.cgroup_id()).collect()
}

/// The container and pod this exporter resolved for a map while its
/// creating cgroup still existed: kept (for live maps only) so that the
/// creator is still named after kubelet removes the container's and the
/// pod's cgroups and the kernel charges the map to an ancestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedCreator {
    pub container_id: String,
    pub pod_uid: String,
    /// The creating cgroup's path, as it was.
    pub cgroup_path: String,
}

/// Map id -> the creator resolved while its cgroup lived.
#[derive(Debug, Default)]
pub struct CreatorMemory {
    by_map: super::IdMap<RememberedCreator>,
}

impl CreatorMemory {
    /// Learn the creators of maps whose creating cgroup lives (and resolves
    /// to a container or pod), forget maps that left the census, and return
    /// what is remembered of the maps whose creating cgroup is gone.
    pub fn update(
        &mut self,
        maps: &[MapRecord],
        paths: &HashMap<u64, String>,
    ) -> super::IdMap<RememberedCreator> {
        let mut gone = super::IdMap::default();
        let mut live: rustc_hash::FxHashSet<u32> =
            rustc_hash::FxHashSet::with_capacity_and_hasher(maps.len(), Default::default());
        // Each creating cgroup's path is parsed once per update.
        let mut parsed: rustc_hash::FxHashMap<u64, Option<RememberedCreator>> = Default::default();
        for m in maps {
            live.insert(m.id);
            match m.creator {
                Creator::Live(cg) => {
                    let named = parsed.entry(cg).or_insert_with(|| {
                        let path = paths.get(&cg)?;
                        let p = parse_path(path);
                        (!p.container_id.is_empty() || !p.pod_uid.is_empty()).then(|| {
                            RememberedCreator {
                                container_id: p.container_id,
                                pod_uid: p.pod_uid,
                                cgroup_path: path.clone(),
                            }
                        })
                    });
                    if let Some(r) = named {
                        if self.by_map.get(&m.id) != Some(r) {
                            self.by_map.insert(m.id, r.clone());
                        }
                    }
                }
                Creator::Gone(_) => {
                    if let Some(r) = self.by_map.get(&m.id) {
                        gone.insert(m.id, r.clone());
                    }
                }
                _ => {}
            }
        }
        self.by_map.retain(|id, _| live.contains(id));
        gone
    }
}

/// Who created a map, as far as the kernel's accounting and the cgroup
/// paths tell. Empty container / pod strings mean "not a container" (the
/// host, or a path the parser does not recognise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatorIdentity {
    /// Kernfs id of the charged memory cgroup; `None` for the root cgroup.
    pub cgroup_id: Option<u64>,
    /// Its path in the memory hierarchy, where found.
    pub cgroup_path: Option<String>,
    pub container_id: String,
    pub pod_uid: String,
    /// The creating cgroup was removed: the map outlived its creator, and
    /// the cgroup above is the ancestor it is now charged to.
    pub gone: bool,
    /// Gone, and the container and pod are the ones this exporter resolved
    /// while the creating cgroup lived (`remembered_path`).
    pub remembered_path: Option<String>,
}

/// The creator of `m`, or `None` where the kernel does not record it (or
/// the creators part did not run).
pub fn identity(snap: &Snapshot, m: &MapRecord) -> Option<CreatorIdentity> {
    let paths = snap.creator_paths.as_ref()?;
    match m.creator {
        Creator::Unknown => None,
        Creator::Root => Some(CreatorIdentity::default()),
        Creator::Live(id) | Creator::Gone(id) => {
            let path = paths.get(&id).cloned();
            let parsed = path.as_deref().map(parse_path).unwrap_or_default();
            let remembered = snap.remembered_creators.get(&m.id);
            Some(CreatorIdentity {
                cgroup_id: Some(id),
                cgroup_path: path,
                container_id: remembered.map_or(parsed.container_id, |r| r.container_id.clone()),
                pod_uid: remembered.map_or(parsed.pod_uid, |r| r.pod_uid.clone()),
                gone: m.creator.is_gone(),
                remembered_path: remembered.map(|r| r.cgroup_path.clone()),
            })
        }
    }
}

/// The creator series: exact aggregates per (container_id, pod_uid) and of
/// maps whose creator is gone, and per-map identity for maps charged to a
/// non-root cgroup among the `selected` map ids (the renderer's budget; None =
/// per-map series off), by id. Each cgroup path is parsed once.
pub fn render(snap: &Snapshot, selected: Option<&HashSet<u32>>, out: &mut Families) {
    let Some(paths) = snap.creator_paths.as_ref() else {
        return;
    };
    if !snap.maps_ok || !snap.features.map_memcg {
        return;
    }
    let parsed: HashMap<u64, crate::k8s::cgroup::CgroupIdentity> =
        paths.iter().map(|(id, p)| (*id, parse_path(p))).collect();
    let none = crate::k8s::cgroup::CgroupIdentity::default();
    let by_cgroup = |id: Option<u64>| {
        let c = id.and_then(|id| parsed.get(&id)).unwrap_or(&none);
        (c.container_id.as_str(), c.pod_uid.as_str())
    };
    // A gone creator this exporter resolved while it lived is named as it
    // was, not by the ancestor now charged.
    let who = |m: &MapRecord| match snap.remembered_creators.get(&m.id) {
        Some(r) if m.creator.is_gone() => (r.container_id.as_str(), r.pod_uid.as_str()),
        _ => by_cgroup(m.creator.cgroup_id()),
    };
    let mut agg: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    // Maps are summed by creating cgroup first (an integer key; a node has
    // few creators and many maps), then by the container and pod each names.
    let mut by_cgroup_id: rustc_hash::FxHashMap<Option<u64>, (u64, u64)> = Default::default();
    let mut gone = 0u64;
    // (map, cgroup id, gone) of maps charged to a non-root cgroup.
    let mut charged: Vec<(&MapRecord, u64, bool)> = Vec::new();
    let mut memory = snap.memory.cursor();
    for m in &snap.maps {
        if m.creator == Creator::Unknown {
            continue;
        }
        let cg = m.creator.cgroup_id();
        let bytes = memory.get(m.id).copied().unwrap_or(0);
        let e = match snap.remembered_creators.get(&m.id) {
            Some(_) if m.creator.is_gone() => agg.entry(who(m)).or_default(),
            _ => by_cgroup_id.entry(cg).or_default(),
        };
        e.0 += 1;
        e.1 += bytes;
        gone += m.creator.is_gone() as u64;
        if let Some(cg) = cg {
            charged.push((m, cg, m.creator.is_gone()));
        }
    }
    for (cg, (n, bytes)) in by_cgroup_id {
        let e = agg.entry(by_cgroup(cg)).or_default();
        e.0 += n;
        e.1 += bytes;
    }
    out.declare(&defs::CREATOR_MAPS);
    for ((container, pod), (n, bytes)) in &agg {
        let labels = || {
            vec![
                ("container_id", container.to_string()),
                ("pod_uid", pod.to_string()),
            ]
        };
        out.gauge(&defs::CREATOR_MAPS, labels(), *n as f64);
        if !snap.memory.is_empty() {
            out.gauge(&defs::CREATOR_MAPS_MEMORY_BYTES, labels(), *bytes as f64);
        }
    }
    out.gauge(&defs::MAPS_CREATOR_GONE, vec![], gone as f64);
    let Some(selected) = selected else {
        return;
    };
    charged.retain(|(m, _, _)| selected.contains(&m.id));
    if charged.is_empty() {
        return;
    }
    charged.sort_unstable_by_key(|(m, _, _)| m.id);
    // Straight to text (no label vectors): one series per charged map.
    {
        let mut w = out.raw_with_capacity(&defs::MAP_CREATOR_INFO, charged.len() * 180);
        for (m, cg, _) in &charged {
            let (container, pod) = who(m);
            write_creator_info(&mut w, m.id, *cg, container, pod, &[]);
        }
    }
    if charged.iter().any(|(_, _, g)| *g) {
        let mut w = out.raw(&defs::MAP_CREATOR_GONE);
        for (m, _, g) in &charged {
            if *g {
                w.id_int(m.id, 1);
            }
        }
    }
}

/// One creator info sample (`bpfmap_map_creator_info`,
/// `bpfmap_program_creator_info`): the object's id, the kernfs id of the
/// creator's memory cgroup, its container and pod, then `extra` labels.
pub(crate) fn write_creator_info(
    w: &mut crate::metrics::RawSamples<'_>,
    id: u32,
    cgroup_id: u64,
    container_id: &str,
    pod_uid: &str,
    extra: &[(&str, &str)],
) {
    let (mut a, mut b) = (itoa::Buffer::new(), itoa::Buffer::new());
    let base = [
        ("id", a.format(id)),
        ("cgroup_id", b.format(cgroup_id)),
        ("container_id", container_id),
        ("pod_uid", pod_uid),
    ];
    if extra.is_empty() {
        w.labels(&base, 1.0);
    } else {
        let all: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        w.labels(&all, 1.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_memcg_dir_on_v1_host_v1_container_and_v2() {
        let mi_v1 = "30 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                     31 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let cg = "12:pids:/x\n4:memory:/bpfmap/test\n0::/user.slice\n";
        assert_eq!(
            own_memcg_dir(cg, mi_v1),
            Some(PathBuf::from("/sys/fs/cgroup/memory/bpfmap/test"))
        );
        // A container's v1 mount is rooted at its own cgroup.
        let mi_ctr =
            "30 25 0:27 /libpod_parent/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let cg_ctr = "4:memory:/libpod_parent/abc\n";
        assert_eq!(
            own_memcg_dir(cg_ctr, mi_ctr),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // A root that is not a prefix of the path is not ours.
        assert_eq!(own_memcg_dir("4:memory:/libpod_parentx\n", mi_ctr), None);
        let mi_v2 = "30 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_memcg_dir("0::/system.slice/x.service\n", mi_v2),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/x.service"))
        );
        assert_eq!(own_memcg_dir("", mi_v2), None);
    }

    use super::*;
    use crate::census::testutil::map_record;

    const MI: &str = "\
25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn v1_memory_hierarchy_wins_over_unified() {
        assert_eq!(
            memcg_mount(MI),
            Some(MemcgMount {
                root: "/sys/fs/cgroup/memory".into(),
                v1: true
            })
        );
    }

    #[test]
    fn unified_hierarchy_without_v1_memory() {
        let mi = "26 25 0:23 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n\
                  27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            memcg_mount(mi),
            Some(MemcgMount {
                root: "/sys/fs/cgroup x".into(),
                v1: false
            })
        );
        assert_eq!(memcg_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn walk_maps_inodes_to_relative_paths_within_limits() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("kubepods/besteffort/podx");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(t.path().join("kubepods/memory.stat"), "").unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let all = walk(t.path(), WalkLimits::default()).unwrap();
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[&ino(t.path())], "/");
        assert_eq!(all[&ino(&deep)], "/kubepods/besteffort/podx");
        let shallow = walk(
            t.path(),
            WalkLimits {
                max_entries: 100,
                max_depth: 2,
            },
        )
        .unwrap();
        assert_eq!(shallow.len(), 3);
        assert!(!shallow.contains_key(&ino(&deep)));
        let few = walk(
            t.path(),
            WalkLimits {
                max_entries: 2,
                max_depth: 32,
            },
        )
        .unwrap();
        assert_eq!(few.len(), 2);
    }

    #[test]
    fn a_resolved_cgroup_is_still_there_until_removed_or_replaced() {
        let t = tempfile::tempdir().unwrap();
        let pod = t.path().join("kubepods/podx");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(t.path().join("cgroup.procs"), "").unwrap();
        let id = std::fs::metadata(&pod).unwrap().ino();
        let mut r = PathResolver::new(WalkLimits::default(), Some(t.path().to_path_buf()));
        let found = r.resolve(&HashSet::from([id])).unwrap();
        assert_eq!(found[&id], "/kubepods/podx");
        assert_eq!(r.still_there(id, "/kubepods/podx"), Some(true));
        std::fs::remove_dir(&pod).unwrap();
        assert_eq!(r.still_there(id, "/kubepods/podx"), Some(false));
        std::fs::create_dir(&pod).unwrap();
        let again = std::fs::metadata(&pod).unwrap().ino();
        assert_eq!(r.still_there(id, "/kubepods/podx"), Some(again == id));
        assert_eq!(r.still_there(again, "/kubepods/podx"), Some(true));
    }

    #[test]
    fn given_root_prefers_the_v1_memory_hierarchy_and_is_checked() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(given_root(t.path()), t.path());
        assert!(check_root(t.path())
            .unwrap_err()
            .to_string()
            .contains("not a cgroup hierarchy"));
        std::fs::create_dir(t.path().join("memory")).unwrap();
        std::fs::write(t.path().join("memory/memory.usage_in_bytes"), "0").unwrap();
        std::fs::write(t.path().join("memory/cgroup.procs"), "").unwrap();
        assert_eq!(given_root(t.path()), t.path().join("memory"));
        check_root(t.path()).unwrap();
    }

    fn map(id: u32, creator: Creator) -> MapRecord {
        MapRecord {
            value_size: 4,
            creator,
            ..map_record(id)
        }
    }

    const POD: &str = "0b8e6f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const CTR: &str = "3770bdd710afe32f765d2a786a1ec9be82b53f7d11c3078d0359abf802f9db29";

    fn snap() -> Snapshot {
        let mut s = Snapshot {
            maps: vec![
                map(1, Creator::Root),
                map(2, Creator::Live(10)),
                map(3, Creator::Live(10)),
                map(4, Creator::Gone(11)),
                map(5, Creator::Live(99)), // path not found: cgroup id only
                map(6, Creator::Root),
            ],
            maps_ok: true,
            creator_paths: Some(HashMap::from([
                (10, format!("/kubepods/besteffort/pod{POD}/{CTR}")),
                (11, format!("/kubepods/besteffort/pod{POD}")),
            ])),
            ..Default::default()
        };
        s.features.map_memcg = true;
        for (id, b) in [(1, 100), (2, 10), (3, 20), (4, 1000), (5, 5), (6, 1)] {
            s.memory.insert(id, b);
        }
        s
    }

    fn text(f: Families) -> String {
        String::from_utf8(crate::metrics::encode_text(&f.into_proto()).unwrap()).unwrap()
    }

    #[test]
    fn identity_resolves_container_pod_and_gone() {
        let s = snap();
        let id = |i: usize| identity(&s, &s.maps[i]).unwrap();
        assert_eq!(id(0), CreatorIdentity::default());
        assert_eq!(
            (
                id(1).container_id.as_str(),
                id(1).pod_uid.as_str(),
                id(1).gone
            ),
            (CTR, POD, false)
        );
        assert_eq!(
            (
                id(3).container_id.as_str(),
                id(3).pod_uid.as_str(),
                id(3).gone
            ),
            ("", POD, true)
        );
        assert_eq!(
            (id(4).cgroup_id, id(4).cgroup_path.clone(), id(4).pod_uid),
            (Some(99), None, String::new())
        );
        let mut unknown = s.clone();
        unknown.maps[0].creator = Creator::Unknown;
        assert_eq!(identity(&unknown, &unknown.maps[0]), None);
    }

    #[test]
    fn aggregates_are_exact_and_per_map_follows_the_selection() {
        let mut f = Families::new();
        // Map 3 is charged but not selected: its identity is left out, the
        // aggregates still count it.
        render(&snap(), Some(&HashSet::from([1, 2, 4])), &mut f);
        let t = text(f);
        let want_agg = [
            "bpfmap_creator_maps{container_id=\"\",pod_uid=\"\"} 3".to_string(),
            format!("bpfmap_creator_maps{{container_id=\"\",pod_uid=\"{POD}\"}} 1"),
            format!("bpfmap_creator_maps{{container_id=\"{CTR}\",pod_uid=\"{POD}\"}} 2"),
            "bpfmap_creator_maps_memory_bytes{container_id=\"\",pod_uid=\"\"} 106".to_string(),
            format!("bpfmap_creator_maps_memory_bytes{{container_id=\"\",pod_uid=\"{POD}\"}} 1000"),
            format!("bpfmap_creator_maps_memory_bytes{{container_id=\"{CTR}\",pod_uid=\"{POD}\"}} 30"),
            "bpfmap_maps_creator_gone 1".to_string(),
            "bpfmap_map_creator_gone{id=\"4\"} 1".to_string(),
            format!("bpfmap_map_creator_info{{id=\"4\",cgroup_id=\"11\",container_id=\"\",pod_uid=\"{POD}\"}} 1"),
            format!("bpfmap_map_creator_info{{id=\"2\",cgroup_id=\"10\",container_id=\"{CTR}\",pod_uid=\"{POD}\"}} 1"),
        ];
        for w in &want_agg {
            assert!(t.contains(w.as_str()), "missing {w} in\n{t}");
        }
        assert_eq!(t.matches("bpfmap_map_creator_info{").count(), 2, "{t}");
    }

    #[test]
    fn nothing_is_published_where_the_kernel_does_not_record_creators() {
        let mut s = snap();
        s.features.map_memcg = false;
        let mut f = Families::new();
        render(&s, Some(&s.maps.iter().map(|m| m.id).collect()), &mut f);
        assert!(!text(f).contains("creator"));
    }
}

/// This process's memory cgroup usage, user plus kernel memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnUsage {
    /// The cgroup directory read.
    pub dir: PathBuf,
    pub current: u64,
    /// The kernel's own high-water mark since the cgroup was created (v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak`, 5.19+); None where the
    /// kernel keeps none.
    pub peak: Option<u64>,
    /// v1 only: the kernel-memory part of the peak.
    pub kmem_peak: Option<u64>,
}

/// The memory cgroup directory of `/proc/self/cgroup` text under the
/// mounts of `mountinfo` text: the mount of the memory hierarchy whose root
/// is a prefix of our cgroup path (a container sees its own cgroup at the
/// mount point).
pub fn own_memcg_dir(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    });
    let (path, want_v1) = match v1 {
        Some(p) => (p, true),
        None => (
            proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?,
            false,
        ),
    };
    memcg_mounts(mountinfo)
        .filter(|m| m.v1 == want_v1)
        .find_map(|m| {
            let rel = if m.root == "/" {
                Some(path)
            } else {
                path.strip_prefix(m.root.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            }?;
            Some(m.point.join(rel.trim_start_matches('/')))
        })
}

/// This process's memory cgroup usage, where its cgroup is readable.
pub fn own_memory_usage() -> Option<OwnUsage> {
    let dir = own_memcg_dir(
        &std::fs::read_to_string("/proc/self/cgroup").ok()?,
        &std::fs::read_to_string("/proc/self/mountinfo").ok()?,
    )?;
    let num = |f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (current, peak, kmem_peak) = match num("memory.usage_in_bytes") {
        Some(c) => (
            c,
            num("memory.max_usage_in_bytes"),
            num("memory.kmem.max_usage_in_bytes"),
        ),
        None => (num("memory.current")?, num("memory.peak"), None),
    };
    Some(OwnUsage {
        dir,
        current,
        peak,
        kmem_peak,
    })
}
