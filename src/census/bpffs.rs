//! bpffs inventory: every mounted bpffs (from /proc/self/mountinfo), every
//! pinned object in it, with bounded, symlink-safe walks.
use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fdinfo::{parse_fdinfo, FdInfo, ObjKind};

/// One bpffs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// major:minor of the superblock; mounts with equal `dev` share pins.
    pub dev: String,
    /// The directory of the superblock this mount shows (`/` for the whole
    /// tree; a bind mount of a subdirectory shows only part of it).
    pub root: PathBuf,
}

/// One bpffs superblock to walk, through one of its mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub dev: String,
    /// The `mount` label: the mount point in the exporter's own mount
    /// namespace, or `<mount point>@<dev>` for a superblock mounted only in
    /// other namespaces (two namespaces may mount different bpffs at one path).
    pub label: String,
    /// Where to walk it: the mount point, or `/proc/<pid>/root/<mount point>`.
    pub path: PathBuf,
    /// Only a subdirectory of the superblock is mounted anywhere.
    pub partial: bool,
    /// Other ways in (the same mount seen through other processes' roots),
    /// tried in order when `path` cannot be read: /proc/<pid>/root is refused
    /// for a process with capabilities the exporter lacks (often pid 1).
    pub fallbacks: Vec<PathBuf>,
}

/// How many other processes' roots a superblock mounted only elsewhere keeps
/// as fallbacks.
const MAX_FALLBACKS: usize = 8;

/// Every bpffs superblock on the node from the mount tables of every
/// process (`/proc/<pid>/mountinfo`, readable without ptrace rights),
/// deduplicated by superblock. Mount tables are cached per pid: a scrape
/// reads the exporter's own table, and those of processes it has not seen;
/// every table is reread each [`MountDiscovery::RESCAN`] (processes that
/// change namespace or mount later are found then).
#[derive(Default)]
pub struct MountDiscovery {
    by_pid: rustc_hash::FxHashMap<u32, Vec<Mount>>,
    last_full: Option<std::time::Instant>,
    /// Mount tables read in the last discovery (a cost figure for tests).
    pub tables_read: usize,
}

impl MountDiscovery {
    pub const RESCAN: std::time::Duration = std::time::Duration::from_secs(10);

    /// The superblocks to walk this scrape.
    pub fn discover(&mut self, proc_root: &Path) -> std::io::Result<Vec<Superblock>> {
        let own = parse_mountinfo(&std::fs::read_to_string(proc_root.join("self/mountinfo"))?);
        let full = self.last_full.is_none_or(|t| t.elapsed() >= Self::RESCAN);
        if full {
            self.last_full = Some(std::time::Instant::now());
        }
        let me = std::process::id();
        let mut live = rustc_hash::FxHashSet::default();
        self.tables_read = 1;
        for ent in std::fs::read_dir(proc_root)?.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            live.insert(pid);
            if !full && self.by_pid.contains_key(&pid) {
                continue;
            }
            // A process gone meanwhile has no table (and no mounts to miss).
            if let Ok(t) = std::fs::read_to_string(ent.path().join("mountinfo")) {
                self.tables_read += 1;
                self.by_pid.insert(pid, parse_mountinfo(&t));
            }
        }
        self.by_pid.retain(|pid, _| live.contains(pid));
        Ok(superblocks(&own, &self.by_pid, proc_root))
    }
}

/// One walk target per superblock: a whole-tree mount in the own namespace
/// first, else a whole-tree mount of another process through its root, else
/// a partial one (reported as such).
pub fn superblocks(
    own: &[Mount],
    others: &rustc_hash::FxHashMap<u32, Vec<Mount>>,
    proc_root: &Path,
) -> Vec<Superblock> {
    let mut out: BTreeMap<String, Superblock> = BTreeMap::new();
    fn offer(out: &mut BTreeMap<String, Superblock>, sb: Superblock, proc_root: &Path) {
        match out.get_mut(&sb.dev) {
            Some(cur) if !cur.partial || sb.partial => {
                // The same whole mount through another process: a fallback
                // for a target that is itself reached through /proc.
                if cur.partial == sb.partial
                    && cur.path.starts_with(proc_root)
                    && cur.fallbacks.len() < MAX_FALLBACKS
                    && cur.path != sb.path
                {
                    cur.fallbacks.push(sb.path);
                }
            }
            _ => {
                out.insert(sb.dev.clone(), sb);
            }
        }
    }
    // A mount under a later one of another superblock at the same mount
    // point is hidden (mountinfo lists mounts in mount order; the path
    // reaches the last): labelled `<point>@<dev>`, as a mount seen only
    // elsewhere is, so labels stay one per superblock.
    let top: std::collections::HashMap<&Path, &str> = own
        .iter()
        .map(|m| (m.mount_point.as_path(), m.dev.as_str()))
        .collect();
    for m in own {
        let point = super::names::label_bytes(m.mount_point.as_os_str().as_bytes());
        offer(
            &mut out,
            Superblock {
                dev: m.dev.clone(),
                label: if top[m.mount_point.as_path()] == m.dev {
                    point
                } else {
                    format!("{point}@{}", m.dev)
                },
                path: m.mount_point.clone(),
                partial: m.root != Path::new("/"),
                fallbacks: Vec::new(),
            },
            proc_root,
        );
    }
    let mut pids: Vec<&u32> = others.keys().collect();
    pids.sort_unstable();
    for pid in pids {
        for m in &others[pid] {
            if out
                .get(&m.dev)
                .is_some_and(|c| !c.partial && !c.path.starts_with(proc_root))
            {
                continue;
            }
            let rel = m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point);
            offer(
                &mut out,
                Superblock {
                    dev: m.dev.clone(),
                    label: format!(
                        "{}@{}",
                        super::names::label_bytes(m.mount_point.as_os_str().as_bytes()),
                        m.dev
                    ),
                    path: proc_root.join(pid.to_string()).join("root").join(rel),
                    partial: m.root != Path::new("/"),
                    fallbacks: Vec::new(),
                },
                proc_root,
            );
        }
    }
    out.into_values().collect()
}

/// Undo the octal escapes (`\040` for space, ...) of /proc/*/mountinfo.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push(
                    oct.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// bpffs mounts listed in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            if fstype != "bpf" {
                return None;
            }
            let f: Vec<&str> = pre.split_whitespace().collect();
            Some(Mount {
                mount_point: unescape(f.get(4)?),
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
            })
        })
        .collect()
}

/// One pinned object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub mount: String,
    /// Path relative to the mount point, with a leading '/'.
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub info: FdInfo,
    /// `info` was read from the kernel in this walk (not from [`IdentCache`]);
    /// only then is `info.memlock` current for maps whose memory moves.
    pub fresh: bool,
}

/// What one walk of all mounts found, plus what it had to skip and why.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// Every bpffs superblock on the node, walked once each.
    pub mounts: Vec<Superblock>,
    /// Superblocks whose walk could not start (their mount is not reachable
    /// from the exporter: no CAP_SYS_PTRACE for /proc/<pid>/root, or gone).
    pub unreachable: Vec<String>,
    /// Of those, superblocks whose every way in reaches another bpffs: a
    /// mount hidden under another at the same mount point.
    pub hidden: Vec<String>,
    pub pins: Vec<Pin>,
    /// (mount, reason) -> entries skipped.
    pub skipped: BTreeMap<(String, &'static str), u64>,
}

pub struct WalkLimits {
    pub max_entries: usize,
    pub max_depth: usize,
}

/// The device number of a mountinfo `major:minor`.
fn dev_number(dev: &str) -> Option<u64> {
    let (maj, min) = dev.split_once(':')?;
    Some(libc::makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// Identify a pinned file: BPF_OBJ_GET read-only, then its fdinfo. The fd is
/// closed before returning, so the transient reference is gone.
///
/// Links refuse read-only opens (EINVAL: a link fd has no read-only mode),
/// so an EINVAL is retried with flags 0; that fd is only read for fdinfo and
/// closed at once.
pub fn identify(path: &Path) -> std::io::Result<FdInfo> {
    let fd = match crate::sys::obj_get(path, true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => crate::sys::obj_get(path, false)?,
        r => r?,
    };
    Ok(parse_fdinfo(&crate::sys::fdinfo(&fd)?))
}

/// Identities of pinned inodes from the previous walk. A bpffs inode holds
/// one object for its whole life, so an inode seen again (same device, inode
/// number and ctime) is the same object: the walk then costs one `lstat` per
/// pin instead of BPF_OBJ_GET plus an fdinfo read (BENCHMARKS.md has the
/// cost of each). Entries not seen in a walk are dropped.
#[derive(Default)]
pub struct IdentCache {
    prev: rustc_hash::FxHashMap<(u64, u64, i64, i64), FdInfo>,
    next: rustc_hash::FxHashMap<(u64, u64, i64, i64), FdInfo>,
}

impl IdentCache {
    /// Identify `path` (metadata `md`) from the cache or the kernel; the
    /// flag says whether the kernel was asked.
    pub fn identify(
        &mut self,
        path: &Path,
        md: &std::fs::Metadata,
    ) -> std::io::Result<(FdInfo, bool)> {
        let key = (md.dev(), md.ino(), md.ctime(), md.ctime_nsec());
        let (info, fresh) = match self.prev.remove(&key) {
            Some(info) => (info, false),
            None => (identify(path)?, true),
        };
        self.next.insert(key, info.clone());
        Ok((info, fresh))
    }

    /// End of a walk: what it saw is what the next walk may reuse.
    pub fn finish(&mut self) {
        self.prev = std::mem::take(&mut self.next);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.prev.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.prev.is_empty()
    }
}

/// Identifies one pinned file and says whether it asked the kernel.
pub type Identify<'a> =
    dyn FnMut(&Path, &std::fs::Metadata) -> std::io::Result<(FdInfo, bool)> + 'a;

/// Walk every mount. `ident` identifies one pinned file and says whether it
/// asked the kernel (injected for tests; [`IdentCache::identify`] in use).
pub fn walk(mounts: &[Superblock], limits: &WalkLimits, ident: &mut Identify<'_>) -> Inventory {
    let mut inv = Inventory {
        mounts: mounts.to_vec(),
        ..Default::default()
    };
    for m in mounts {
        let mname = m.label.clone();
        if m.partial {
            *inv.skipped
                .entry((mname.clone(), "partial_mount"))
                .or_insert(0) += 1;
        }
        let mut skip = |reason: &'static str, n: u64| {
            *inv.skipped.entry((mname.clone(), reason)).or_insert(0) += n;
        };
        // Two budgets: objects (entries that may be pins) and directories.
        // Directories and symlinks are all an unprivileged user can make in
        // a bpffs (mode 1777), so they never spend the objects' budget, and
        // the walk is breadth-first: a deep or wide tree of empty
        // directories is reached after the shallow pins beside it. Pins a
        // cut walk misses are inferred from usercount (holders.rs).
        let mut seen = 0usize;
        let mut dirs = 0usize;
        // The first way in that can be read and is this superblock (the
        // walk then stays under it). A mount hidden under another at the
        // same point (bpffs mounted twice) reaches the top one's pins by
        // its path: it is unreachable, never walked as the top one again.
        let want = dev_number(&m.dev);
        let mut hidden = false;
        let root = std::iter::once(&m.path)
            .chain(m.fallbacks.iter())
            .find(|p| {
                let Ok(md) = std::fs::metadata(p) else {
                    return false;
                };
                if want.is_some_and(|d| md.dev() != d) {
                    hidden = true;
                    return false;
                }
                std::fs::read_dir(p).is_ok()
            });
        let Some(root) = root else {
            inv.unreachable.push(mname.clone());
            if hidden {
                inv.hidden.push(mname.clone());
            }
            continue;
        };
        let mut queue: std::collections::VecDeque<(PathBuf, usize)> =
            std::collections::VecDeque::from([(root.clone(), 0)]);
        while let Some((dir, depth)) = queue.pop_front() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(_) if depth == 0 => {
                    inv.unreachable.push(mname.clone());
                    continue;
                }
                Err(_) => {
                    skip("unreadable", 1);
                    continue;
                }
            };
            for ent in rd {
                let Ok(ent) = ent else {
                    skip("unreadable", 1);
                    continue;
                };
                // The entry's type from the directory itself (no stat):
                // directories and symlinks cost no object budget.
                match ent.file_type() {
                    Ok(t) if t.is_symlink() => {
                        skip("symlink", 1);
                        continue;
                    }
                    Ok(t) if t.is_dir() => {
                        dirs += 1;
                        if dirs > limits.max_entries {
                            skip("max_dirs", 1);
                        } else if depth + 1 > limits.max_depth {
                            skip("max_depth", 1);
                        } else {
                            queue.push_back((ent.path(), depth + 1));
                        }
                        continue;
                    }
                    _ => {}
                }
                seen += 1;
                if seen > limits.max_entries {
                    skip("max_entries", 1);
                    continue;
                }
                let p = ent.path();
                let Ok(md) = std::fs::symlink_metadata(&p) else {
                    skip("vanished", 1);
                    continue;
                };
                let ft = md.file_type();
                if want.is_some_and(|d| md.dev() != d) {
                    // Under another mount inside this one: that
                    // superblock is walked on its own.
                    skip("other_mount", 1);
                } else if ft.is_symlink() {
                    skip("symlink", 1);
                } else if ft.is_dir() {
                    // Replaced by a directory since it was listed.
                    skip("vanished", 1);
                } else if ft.is_file() {
                    match ident(&p, &md) {
                        Ok((info, fresh)) => inv.pins.push(Pin {
                            mount: mname.clone(),
                            path: format!(
                                "/{}",
                                super::names::label_bytes(
                                    p.strip_prefix(root).unwrap_or(&p).as_os_str().as_bytes()
                                )
                            ),
                            dev: md.dev(),
                            ino: md.ino(),
                            info,
                            fresh,
                        }),
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            match std::fs::symlink_metadata(&p) {
                                // Still there: the kernel's own preloaded
                                // iterator links (CONFIG_BPF_PRELOAD) refuse
                                // BPF_OBJ_GET with ENOENT.
                                Ok(again) if again.ino() == md.ino() => {
                                    let name = p.file_name().and_then(|n| n.to_str());
                                    if depth == 0 && PRELOADED.contains(&name.unwrap_or("")) {
                                        inv.pins.push(Pin {
                                            mount: mname.clone(),
                                            path: format!("/{}", name.unwrap_or("")),
                                            dev: md.dev(),
                                            ino: md.ino(),
                                            info: FdInfo {
                                                kind: ObjKind::Link,
                                                id: 0,
                                                memlock: None,
                                                map_type: None,
                                            },
                                            fresh: false,
                                        });
                                    } else {
                                        skip("not_bpf_object", 1)
                                    }
                                }
                                _ => skip("vanished", 1),
                            }
                        }
                        Err(e)
                            if e.raw_os_error() == Some(libc::EACCES)
                                || e.raw_os_error() == Some(libc::EPERM) =>
                        {
                            skip("permission_denied", 1)
                        }
                        Err(_) => skip("not_bpf_object", 1),
                    }
                } else {
                    skip("other_file_type", 1);
                }
            }
        }
    }
    inv.pins
        .sort_by(|a, b| (&a.mount, &a.path).cmp(&(&b.mount, &b.path)));
    inv
}

/// The iterator links the kernel pins on every bpffs it mounts
/// (kernel/bpf/preload): they hold no map.
pub const PRELOADED: [&str; 2] = ["maps.debug", "progs.debug"];

/// Skip reasons after which a pinned object may have gone unseen (so pin
/// holders are a lower bound). `symlink` and `other_file_type` are never
/// objects; `vanished` pins took their reference with them.
pub const INCOMPLETE_REASONS: [&str; 7] = [
    "partial_mount",
    "max_entries",
    "max_dirs",
    "max_depth",
    "permission_denied",
    "unreadable",
    "not_bpf_object",
];

impl Inventory {
    /// Whether the walk saw every pinned object of every bpffs.
    pub fn complete(&self) -> bool {
        self.unreachable.is_empty()
            && !self
                .skipped
                .iter()
                .any(|((_, r), n)| *n > 0 && INCOMPLETE_REASONS.contains(r))
    }

    /// Map ids held by pins, one entry per distinct pinned inode (hard links and
    /// bind mounts of one superblock share an inode and hold one reference).
    pub fn map_pin_holders(&self) -> Vec<u32> {
        self.pin_holders(ObjKind::Map)
    }

    /// For each pinned program inode (deduplicated by (dev, ino)): its id.
    pub fn prog_pin_holders(&self) -> Vec<u32> {
        self.pin_holders(ObjKind::Prog)
    }

    fn pin_holders(&self, kind: ObjKind) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        self.pins
            .iter()
            .filter(|p| p.info.kind == kind)
            .filter(|p| seen.insert((p.dev, p.ino)))
            .map(|p| p.info.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: &str = "\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
40 22 0:35 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:14 - bpf bpf rw,mode=700
41 22 0:35 / /var/run/cilium/bpf\\040fs rw,relatime - bpf none rw
42 1 0:50 / /tmp/priv rw - bpf bpf rw
43 1 0:51 / /tmp/nobpf rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_every_bpffs_mount_and_unescapes() {
        let m = parse_mountinfo(MI);
        assert_eq!(
            m,
            vec![
                Mount {
                    mount_point: "/sys/fs/bpf".into(),
                    dev: "0:35".into(),
                    root: "/".into(),
                },
                Mount {
                    mount_point: "/var/run/cilium/bpf fs".into(),
                    dev: "0:35".into(),
                    root: "/".into(),
                },
                Mount {
                    mount_point: "/tmp/priv".into(),
                    dev: "0:50".into(),
                    root: "/".into(),
                },
            ]
        );
    }

    #[test]
    fn superblocks_are_walked_once_preferring_own_whole_mounts() {
        let own = parse_mountinfo(MI);
        let mut others = rustc_hash::FxHashMap::default();
        // pid 7: the host's bpffs again, a private one at a path the own
        // namespace also uses for another bpffs, and a bind of a subdir.
        others.insert(
            7,
            parse_mountinfo(
                "1 0 0:35 / /sys/fs/bpf rw - bpf bpf rw\n\
                 2 0 0:60 / /tmp/priv rw - bpf bpf rw\n\
                 3 0 0:61 /sub /x rw - bpf bpf rw\n",
            ),
        );
        let sbs = superblocks(&own, &others, Path::new("/proc"));
        let got: Vec<(&str, &str, String, bool)> = sbs
            .iter()
            .map(|s| {
                (
                    s.dev.as_str(),
                    s.label.as_str(),
                    s.path.display().to_string(),
                    s.partial,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("0:35", "/sys/fs/bpf", "/sys/fs/bpf".to_string(), false),
                ("0:50", "/tmp/priv", "/tmp/priv".to_string(), false),
                (
                    "0:60",
                    "/tmp/priv@0:60",
                    "/proc/7/root/tmp/priv".to_string(),
                    false
                ),
                ("0:61", "/x@0:61", "/proc/7/root/x".to_string(), true),
            ]
        );
    }

    #[test]
    fn a_mount_seen_only_elsewhere_keeps_other_processes_roots_as_fallbacks() {
        let mut others = rustc_hash::FxHashMap::default();
        for pid in [1u32, 40, 41] {
            others.insert(pid, parse_mountinfo("1 0 0:41 / /run/b rw - bpf bpf rw\n"));
        }
        let sbs = superblocks(&[], &others, Path::new("/proc"));
        assert_eq!(sbs.len(), 1);
        assert_eq!(sbs[0].path, PathBuf::from("/proc/1/root/run/b"));
        assert_eq!(
            sbs[0].fallbacks,
            vec![
                PathBuf::from("/proc/40/root/run/b"),
                PathBuf::from("/proc/41/root/run/b")
            ]
        );
        // The walk goes in through the first root it can read and labels
        // pins relative to it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let sb = Superblock {
            dev: dev_of(dir.path()),
            label: "/run/b@0:41".into(),
            path: PathBuf::from("/nonexistent/refused"),
            partial: false,
            fallbacks: vec![dir.path().to_path_buf()],
        };
        let inv = walk(
            &[sb],
            &WalkLimits {
                max_entries: 10,
                max_depth: 4,
            },
            &mut |_, _| Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        );
        assert!(inv.unreachable.is_empty(), "{:?}", inv.unreachable);
    }

    /// A path's device as mountinfo writes it (`major:minor`).
    fn dev_of(p: &Path) -> String {
        let d = std::fs::metadata(p).unwrap().dev();
        format!("{}:{}", libc::major(d), libc::minor(d))
    }

    #[test]
    fn a_mount_whose_every_way_in_reaches_another_device_is_hidden_not_walked() {
        // bpffs mounted twice at one point: the lower one's path reaches
        // the upper one, whose pins must not be counted as the lower's.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pin"), b"").unwrap();
        let here = dev_of(d.path());
        let other = if here == "0:1" { "0:2" } else { "0:1" };
        let mk = |dev: &str, label: &str| Superblock {
            dev: dev.into(),
            label: label.into(),
            path: d.path().to_path_buf(),
            partial: false,
            fallbacks: vec![],
        };
        let mut ident = |_: &Path, _: &std::fs::Metadata| -> std::io::Result<(FdInfo, bool)> {
            Ok((
                FdInfo {
                    kind: ObjKind::Map,
                    id: 9,
                    memlock: None,
                    map_type: Some(1),
                },
                true,
            ))
        };
        let limits = WalkLimits {
            max_entries: 10,
            max_depth: 4,
        };
        let inv = walk(&[mk(&here, "top"), mk(other, "lower")], &limits, &mut ident);
        let pins: Vec<_> = inv
            .pins
            .iter()
            .map(|p| (p.mount.as_str(), p.path.as_str()))
            .collect();
        assert_eq!(pins, vec![("top", "/pin")]);
        assert_eq!(inv.unreachable, vec!["lower".to_string()]);
        assert_eq!(inv.hidden, vec!["lower".to_string()]);
        assert!(!inv.complete());
    }

    #[test]
    fn a_bpffs_mounted_over_another_labels_the_hidden_one_by_device() {
        let own = parse_mountinfo(
            "45 23 0:40 / /sys/fs/bpf rw - bpf bpf rw\n\
             46 45 0:41 / /sys/fs/bpf rw - bpf bpf rw\n\
             47 46 0:41 / /sys/fs/bpf rw - bpf bpf rw\n",
        );
        let sbs = superblocks(&own, &Default::default(), Path::new("/proc"));
        let got: Vec<(&str, &str)> = sbs
            .iter()
            .map(|s| (s.dev.as_str(), s.label.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![("0:40", "/sys/fs/bpf@0:40"), ("0:41", "/sys/fs/bpf")]
        );
    }

    #[test]
    fn malformed_lines_are_ignored() {
        assert!(parse_mountinfo("garbage\n\n1 2 - bpf\n").is_empty());
    }

    #[test]
    fn walk_is_bounded_and_symlink_safe() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/m1"), b"").unwrap();
        std::fs::write(root.join("a/b/c/m2"), b"").unwrap();
        std::fs::write(root.join("junk"), b"").unwrap();
        std::os::unix::fs::symlink(root, root.join("a/loop")).unwrap();
        let mounts = vec![Superblock {
            dev: dev_of(root),
            label: root.to_string_lossy().into_owned(),
            path: root.to_path_buf(),
            partial: false,
            fallbacks: vec![],
        }];
        let mut ident = |p: &Path, _: &std::fs::Metadata| -> std::io::Result<(FdInfo, bool)> {
            if p.ends_with("junk") {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok((
                FdInfo {
                    kind: ObjKind::Map,
                    id: 9,
                    memlock: Some(4096),
                    map_type: Some(2),
                },
                true,
            ))
        };
        let inv = walk(
            &mounts,
            &WalkLimits {
                max_entries: 100,
                max_depth: 2,
            },
            &mut ident,
        );
        let paths: Vec<_> = inv.pins.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["/a/m1"]);
        let m = root.to_string_lossy().to_string();
        assert_eq!(inv.skipped[&(m.clone(), "symlink")], 1);
        assert_eq!(inv.skipped[&(m.clone(), "max_depth")], 1);
        assert_eq!(inv.skipped[&(m.clone(), "not_bpf_object")], 1);

        // Three directories (a, a/b, a/b/c) against a budget of 2: c is
        // not entered, and m2 is missed.
        let inv = walk(
            &mounts,
            &WalkLimits {
                max_entries: 2,
                max_depth: 10,
            },
            &mut ident,
        );
        assert_eq!(inv.skipped[&(m, "max_dirs")], 1);
        assert!(!inv.complete());
    }

    #[test]
    fn empty_directories_spend_no_object_budget_and_shallow_pins_come_first() {
        // An unprivileged user's tree: 300 empty directories and a 40-deep
        // chain, beside two real pins, one of them at depth 1 after the chain.
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for i in 0..300 {
            std::fs::create_dir(root.join(format!("e{i}"))).unwrap();
        }
        let deep: PathBuf = (0..40).map(|i| format!("d{i}")).collect();
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        std::fs::create_dir(root.join("zz")).unwrap();
        std::fs::write(root.join("pin0"), b"").unwrap();
        std::fs::write(root.join("zz/pin1"), b"").unwrap();
        let mounts = vec![Superblock {
            dev: dev_of(root),
            label: "m".into(),
            path: root.to_path_buf(),
            partial: false,
            fallbacks: vec![],
        }];
        let mut ident = |_: &Path, _: &std::fs::Metadata| -> std::io::Result<(FdInfo, bool)> {
            Ok((
                FdInfo {
                    kind: ObjKind::Map,
                    id: 9,
                    memlock: None,
                    map_type: None,
                },
                true,
            ))
        };
        // 303: fewer than the root's 304 entries, more than its 302
        // directories; the chain's further levels exceed it.
        let inv = walk(
            &mounts,
            &WalkLimits {
                max_entries: 303,
                max_depth: 8,
            },
            &mut ident,
        );
        let paths: Vec<_> = inv.pins.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["/pin0", "/zz/pin1"]);
        assert!(!inv.skipped.contains_key(&("m".into(), "max_entries")));
        // The directories' own budget cuts the chain.
        assert!(inv.skipped[&("m".into(), "max_dirs")] > 0);
        assert!(!inv.complete());
    }

    #[test]
    fn hard_links_and_bind_mounts_hold_one_reference() {
        let info = FdInfo {
            kind: ObjKind::Map,
            id: 5,
            memlock: None,
            map_type: None,
        };
        let pin = |mount: &str, path: &str, ino| Pin {
            mount: mount.into(),
            path: path.into(),
            dev: 35,
            ino,
            info: info.clone(),
            fresh: true,
        };
        let inv = Inventory {
            pins: vec![
                pin("/sys/fs/bpf", "/x", 1),
                pin("/sys/fs/bpf", "/y", 1),
                pin("/alt", "/x", 1),
                pin("/alt", "/z", 2),
            ],
            ..Default::default()
        };
        assert_eq!(inv.map_pin_holders(), vec![5, 5]);
    }

    #[test]
    fn ident_cache_reuses_same_inode_and_forgets_gone_ones() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        let mut cache = IdentCache::default();
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        // Not a BPF object: the kernel is asked and refuses; nothing cached.
        assert!(cache.identify(&a, &md(&a)).is_err());
        cache.finish();
        assert!(cache.is_empty());
        // Seed the cache by hand as a walk that identified `a` would.
        let info = FdInfo {
            kind: ObjKind::Map,
            id: 3,
            memlock: Some(1),
            map_type: Some(1),
        };
        let m = md(&a);
        cache
            .prev
            .insert((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()), info.clone());
        let (got, fresh) = cache.identify(&a, &m).unwrap();
        assert_eq!((got, fresh), (info.clone(), false));
        cache.finish();
        assert_eq!(cache.len(), 1);
        // Another inode is never served from the cache.
        assert!(cache.identify(&b, &md(&b)).is_err());
        // A walk that did not see `a` forgets it.
        cache.finish();
        assert!(cache.is_empty());
    }
}
