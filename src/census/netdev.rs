//! The netdev part: programs the kernel keeps attached to network devices
//! and network namespaces without a link (XDP per mode, tc `cls_bpf`
//! filters and `act_bpf` actions, tcx and netkit hooks, the flow
//! dissector), in every network namespace of the node.
//!
//! Namespaces are found from every process's `/proc/<pid>/ns/net` and every
//! nsfs bind mount (`ip netns` keeps namespaces no process is in that way)
//! of every mount namespace, deduplicated by inode. Only when the kernel's
//! list (below) names one not found so, the search goes on, stopping as
//! soon as none is left: threads' `ns/net`, namespace files in fd tables
//! (`net:[ino]` links, opened through `/proc/<pid>/fd/<n>`), then sockets
//! (every socket holds its namespace; `pidfd_getfd` and `SIOCGSKNS` open
//! it, at most `Limits::max_socket_probes` a scrape). Where each was found
//! is tried first on the next scrape. A namespace file opened from a
//! socket is closed when the scrape ends: the exporter keeps no namespace
//! alive. Each is entered by a
//! dedicated thread of this part (never a census or runtime thread): netlink
//! sockets stay bound to the namespace they were made in, and tcx and netkit
//! queries name devices by ifindex in the caller's namespace.
//!
//! Exactness: a kind's source is complete only when every network
//! namespace of the node was read whole. The node's namespaces are counted
//! by the kernel's own list (`net_namespace_list`, walked by the census
//! iterator); one that exists and was not read (held only by a file in
//! flight or a kernel object, unreadable, cut by a limit) makes the source
//! incomplete, with the reason.
//!
//! Attachments through links are the links' holders already: XDP programs
//! a link attached (`BPF_LINK_TYPE_XDP`, matched by program and ifindex),
//! tcx and netkit entries with a link id, flow dissector programs of a
//! netns link, are left out.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMessage, TcActionMessageAttribute, TcActionOption,
    TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::programs::{AttachSource, AttachedBy, Attachment, ProgHolderKind};
use crate::bpf::census::records::{LINK_TYPE_NETNS, LINK_TYPE_XDP};
use crate::bpf::census::LinkRecord;
use crate::sys;

/// `enum bpf_attach_type` values this part queries.
const BPF_FLOW_DISSECTOR: u32 = 17;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_NETKIT_PRIMARY: u32 = 54;
const BPF_NETKIT_PEER: u32 = 55;
/// `act_bpf` attributes (uapi `linux/tc_act/tc_bpf.h`).
const TCA_ACT_BPF_PARMS: u16 = 2;
const TCA_ACT_BPF_ID: u16 = 9;
/// The clsact / ingress qdisc's handle major and its two block parents.
const TC_H_INGRESS_MAJ: u16 = 0xffff;
const TC_H_MIN_INGRESS: u16 = 0xfff2;
const TC_H_MIN_EGRESS: u16 = 0xfff3;

/// The most programs one hook query returns (tcx and netkit hooks hold at
/// most 64, `bpf_mprog`'s limit; a flow dissector one).
const QUERY_MAX: u32 = 64;

/// Bounds of one scrape's read.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Network namespaces read per scrape.
    pub max_netns: usize,
    /// Devices read per namespace.
    pub max_devices: usize,
    /// tc objects (qdiscs, classes, filters, actions) read per namespace.
    pub max_tc_objects: usize,
    /// Wall time for the whole read; namespaces not read by then make the
    /// sources incomplete.
    pub budget: Duration,
    /// How long one netlink read may block.
    pub recv_timeout: Duration,
    /// Sockets opened per scrape to find namespaces that only a socket
    /// holds (only while the kernel's list names one not found otherwise).
    pub max_socket_probes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_netns: 4096,
            max_devices: 4096,
            max_tc_objects: 65536,
            budget: Duration::from_secs(10),
            recv_timeout: Duration::from_secs(2),
            max_socket_probes: 4096,
        }
    }
}

/// Which hooks the running kernel has, from its BTF (`enum
/// bpf_attach_type` names each): a kernel without tcx (before 6.6) or
/// netkit (before 6.7) has no such attachment to read.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    pub tcx: bool,
    pub netkit: bool,
}

impl Hooks {
    /// Read from `/sys/kernel/btf/vmlinux` (its string section names every
    /// enumerator). `None` when the kernel's BTF is not readable.
    pub fn detect() -> Option<Hooks> {
        let btf = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
        let has = |name: &[u8]| {
            let mut z = name.to_vec();
            z.push(0);
            btf.windows(z.len() + 1)
                .any(|w| w[0] == 0 && w[1..] == z[..])
        };
        Some(Hooks {
            tcx: has(b"BPF_TCX_INGRESS"),
            netkit: has(b"BPF_NETKIT_PRIMARY"),
        })
    }
}

/// How to open one namespace.
#[derive(Debug, Clone)]
enum Opener {
    Process(u32),
    /// An nsfs bind mount, through a process of its mount namespace.
    Mount(PathBuf),
    /// A path under /proc that names it: a thread's `ns/net`, or a
    /// namespace file in a process's fd table.
    Proc(PathBuf),
    /// Its file, opened from a socket of a process (`SIOCGSKNS`): held for
    /// the scrape that found it, never longer.
    Held(Arc<OwnedFd>),
}

impl Opener {
    fn open(&self) -> Option<File> {
        match self {
            Opener::Process(pid) => File::open(format!("/proc/{pid}/ns/net")).ok(),
            Opener::Mount(p) | Opener::Proc(p) => File::open(p).ok(),
            Opener::Held(fd) => fd.try_clone().ok().map(File::from),
        }
    }
}

/// Where a namespace that no process's leader is in and no mount names was
/// last found: tried first on the next scrape, so a node with such a
/// namespace does not walk every fd table each time.
#[derive(Debug, Clone)]
enum Hint {
    Proc(PathBuf),
    Socket { pid: u32, fd: i32, sock: u64 },
}

/// What the search beyond processes and mounts found and could not do.
#[derive(Debug, Default)]
struct Reached {
    openers: Vec<(u64, Opener)>,
    /// Processes whose fd table or threads could not be read.
    unreadable: usize,
    /// Sockets whose namespace could not be opened, with the first error.
    denied: usize,
    first_denial: Option<String>,
    /// Sockets left unexamined by the probe limit or the time budget.
    unprobed: usize,
}

/// `net:[ino]` or `socket:[ino]`, the targets of fd links.
fn fd_link_ino(target: &str, prefix: &str) -> Option<u64> {
    target
        .strip_prefix(prefix)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Open the network namespace of socket `fd` of process `pidfd`.
fn socket_ns(pidfd: &OwnedFd, fd: i32) -> std::io::Result<(u64, OwnedFd)> {
    let sock = sys::pidfd_getfd(pidfd.as_fd(), fd)?;
    let ns = sys::socket_netns(sock.as_fd())?;
    let ino = File::from(ns.try_clone()?).metadata()?.ino();
    Ok((ino, ns))
}

/// Find the namespaces of `missing` that a thread other than a process's
/// leader is in, that a process holds as a namespace file (its fd link
/// reads `net:[ino]`, or `/` when opened through a bind mount since
/// detached), or that a
/// socket in a process's fd table belongs to. Hints are tried first; the
/// fd tables are walked only for what they did not find, and sockets are
/// opened (`pidfd_getfd`, `SIOCGSKNS`) only for what the walk did not
/// find, at most `max_probes` of them.
fn reach(
    proc_root: &Path,
    missing: &mut BTreeSet<u64>,
    hints: &mut BTreeMap<u64, Hint>,
    max_probes: usize,
    deadline: Instant,
) -> Reached {
    let mut r = Reached::default();
    let old = std::mem::take(hints);
    let mut hit =
        |ino: u64, op: Opener, hint: Hint, r: &mut Reached, missing: &mut BTreeSet<u64>| {
            missing.remove(&ino);
            r.openers.push((ino, op));
            hints.insert(ino, hint);
        };
    for (ino, h) in old {
        if !missing.contains(&ino) {
            continue;
        }
        match &h {
            Hint::Proc(p) => {
                if std::fs::metadata(p).is_ok_and(|m| m.ino() == ino) {
                    hit(ino, Opener::Proc(p.clone()), h, &mut r, missing);
                }
            }
            Hint::Socket { pid, fd, sock } => {
                let link = proc_root.join(format!("{pid}/fd/{fd}"));
                let same = std::fs::read_link(&link)
                    .ok()
                    .and_then(|t| fd_link_ino(t.to_str()?, "socket"))
                    == Some(*sock);
                if !same {
                    continue;
                }
                let Ok(pidfd) = sys::pidfd_open(*pid) else {
                    continue;
                };
                if let Ok((i, ns)) = socket_ns(&pidfd, *fd) {
                    if i == ino {
                        hit(ino, Opener::Held(Arc::new(ns)), h, &mut r, missing);
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return r;
    }
    // Threads and fd tables: (pid, fd, socket inode) of every socket, each
    // socket once.
    let nsfs_dev = std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.dev());
    let mut sockets: Vec<(u32, i32, u64)> = Vec::new();
    let mut seen_sock: BTreeSet<u64> = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        r.unreadable += 1;
        return r;
    };
    for ent in dir.flatten() {
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let pdir = ent.path();
        let mut unreadable = false;
        match std::fs::read_dir(pdir.join("task")) {
            Ok(tasks) => {
                for t in tasks.flatten() {
                    if t.file_name().to_str() == Some(&pid.to_string()) {
                        continue;
                    }
                    let p = t.path().join("ns/net");
                    match std::fs::metadata(&p) {
                        Ok(m) if missing.contains(&m.ino()) => hit(
                            m.ino(),
                            Opener::Proc(p.clone()),
                            Hint::Proc(p),
                            &mut r,
                            missing,
                        ),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => unreadable = true,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => unreadable = true,
        }
        match std::fs::read_dir(pdir.join("fd")) {
            Ok(fds) => {
                for f in fds.flatten() {
                    let Some(fd) = f.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
                    else {
                        continue;
                    };
                    let Ok(t) = std::fs::read_link(f.path()) else {
                        continue; // closed meanwhile
                    };
                    let Some(t) = t.to_str() else { continue };
                    if let Some(ino) = fd_link_ino(t, "net") {
                        if missing.contains(&ino) {
                            let p = f.path();
                            hit(ino, Opener::Proc(p.clone()), Hint::Proc(p), &mut r, missing);
                        }
                    } else if t == "/" {
                        // A namespace file opened through a bind mount
                        // that is gone reads as the root of a detached
                        // mount.
                        if let Ok(m) = std::fs::metadata(f.path()) {
                            if Some(m.dev()) == nsfs_dev && missing.contains(&m.ino()) {
                                let p = f.path();
                                hit(
                                    m.ino(),
                                    Opener::Proc(p.clone()),
                                    Hint::Proc(p),
                                    &mut r,
                                    missing,
                                );
                            }
                        }
                    } else if let Some(s) = fd_link_ino(t, "socket") {
                        if seen_sock.insert(s) {
                            sockets.push((pid, fd, s));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => unreadable = true,
        }
        r.unreadable += usize::from(unreadable);
    }
    if missing.is_empty() {
        return r;
    }
    // Sockets, each opened for a moment to ask its namespace.
    let mut pidfd: Option<(u32, std::io::Result<OwnedFd>)> = None;
    for (n, (pid, fd, sock)) in sockets.iter().enumerate() {
        if missing.is_empty() {
            break;
        }
        if n >= max_probes || Instant::now() >= deadline {
            r.unprobed = sockets.len() - n;
            break;
        }
        if pidfd.as_ref().is_none_or(|(p, _)| p != pid) {
            pidfd = Some((*pid, sys::pidfd_open(*pid)));
        }
        let res = match &pidfd {
            Some((_, Ok(pfd))) => socket_ns(pfd, *fd),
            Some((_, Err(e))) => Err(std::io::Error::from(e.kind())),
            None => continue,
        };
        match res {
            Ok((ino, ns)) => {
                if missing.contains(&ino) {
                    let h = Hint::Socket {
                        pid: *pid,
                        fd: *fd,
                        sock: *sock,
                    };
                    hit(ino, Opener::Held(Arc::new(ns)), h, &mut r, missing);
                }
            }
            // The process or the fd went meanwhile.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::EBADF)) => {}
            Err(e) => {
                r.denied += 1;
                r.first_denial
                    .get_or_insert_with(|| format!("socket of pid {pid} fd {fd}: {e}"));
            }
        }
    }
    r
}

/// The namespaces found, by inode, with the ways to open each.
#[derive(Debug, Default)]
struct Found {
    by_ino: BTreeMap<u64, Vec<Opener>>,
    /// Processes whose namespace could not be read.
    unreadable: usize,
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// nsfs mounts of network namespaces in one mountinfo text: (inode, mount
/// point).
pub fn netns_mounts(mountinfo: &str) -> Vec<(u64, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? != "nsfs" {
                return None;
            }
            let mut f = pre.split_whitespace();
            let root = f.nth(3)?;
            let point = f.next()?;
            let ino = root
                .strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((ino, unescape(point)))
        })
        .collect()
}

/// What a process's namespaces were when it was last read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its `/proc/<pid>` directory's inode: a new process with a reused
    /// pid has another, and is read afresh.
    dir_ino: u64,
    /// Its network namespace; None when the link is unreadable.
    net: Option<u64>,
    mnt: Option<u64>,
}

/// Every process's network and mount namespaces, kept between scrapes: a
/// scrape stats only the processes it has not seen, and every process
/// again each `RESCAN`. A process that moved to another namespace since
/// (setns, unshare) is told by its effects: a namespace on the kernel's
/// list that the kept view does not name, or one none of its openers
/// opens (each open is checked against the inode), makes the scrape
/// read every process again before it reads any namespace's attachments.
#[derive(Debug, Default)]
struct ProcNamespaces {
    by_pid: rustc_hash::FxHashMap<u32, Seen>,
    /// Mount namespace -> the nsfs mounts its mountinfo lists, at most
    /// `MAX_KEPT_MOUNTS` in all (`kept_mounts`).
    mounts: rustc_hash::FxHashMap<u64, Vec<(u64, String)>>,
    kept_mounts: usize,
    last_full: Option<Instant>,
}

/// nsfs mounts kept between scrapes, over every mount namespace.
const MAX_KEPT_MOUNTS: usize = 16384;

impl ProcNamespaces {
    const RESCAN: Duration = Duration::from_secs(10);

    /// Whether the next discovery must read every process again.
    fn due(&self) -> bool {
        self.last_full.is_none_or(|t| t.elapsed() >= Self::RESCAN)
    }

    /// The namespaces of every process under `proc_root`, and the nsfs
    /// mounts of every mount namespace. `full` reads every process and
    /// mountinfo again; otherwise only processes not seen before.
    fn discover(&mut self, proc_root: &Path, full: bool) -> std::io::Result<Found> {
        use std::os::unix::fs::DirEntryExt;
        if full {
            self.last_full = Some(Instant::now());
            self.mounts.clear();
            self.kept_mounts = 0;
        }
        let mut found = Found::default();
        let mut live = rustc_hash::FxHashSet::default();
        let mut mnt_live = rustc_hash::FxHashSet::default();
        for ent in std::fs::read_dir(proc_root)?.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let dir = ent.path();
            let dir_ino = ent.ino();
            let seen = match self.by_pid.get(&pid) {
                Some(s) if !full && s.dir_ino == dir_ino => *s,
                _ => {
                    let net = match std::fs::metadata(dir.join("ns/net")) {
                        Ok(md) => Some(md.ino()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(_) => None,
                    };
                    let mnt = std::fs::metadata(dir.join("ns/mnt")).ok().map(|m| m.ino());
                    let s = Seen { dir_ino, net, mnt };
                    self.by_pid.insert(pid, s);
                    s
                }
            };
            live.insert(pid);
            match seen.net {
                Some(ino) => found
                    .by_ino
                    .entry(ino)
                    .or_default()
                    .push(Opener::Process(pid)),
                None => found.unreadable += 1,
            }
            // nsfs mounts, once per mount namespace.
            let Some(mnt) = seen.mnt else { continue };
            if !mnt_live.insert(mnt) {
                continue;
            }
            let read;
            let mounts = match self.mounts.get(&mnt) {
                Some(m) => m,
                None => {
                    let Ok(text) = std::fs::read_to_string(dir.join("mountinfo")) else {
                        mnt_live.remove(&mnt);
                        continue;
                    };
                    let list = netns_mounts(&text);
                    // Kept only within the bound: a namespace with more
                    // nsfs mounts is read again each scrape instead.
                    if self.kept_mounts + list.len() <= MAX_KEPT_MOUNTS {
                        self.kept_mounts += list.len();
                        self.mounts.entry(mnt).or_insert(list)
                    } else {
                        read = list;
                        &read
                    }
                }
            };
            for (ino, point) in mounts.iter() {
                let p = dir.join("root").join(point.trim_start_matches('/'));
                let v = found.by_ino.entry(*ino).or_default();
                if v.len() < 8 {
                    v.push(Opener::Mount(p));
                }
            }
        }
        self.by_pid.retain(|pid, _| live.contains(pid));
        self.mounts.retain(|m, _| mnt_live.contains(m));
        self.kept_mounts = self.mounts.values().map(Vec::len).sum();
        for v in found.by_ino.values_mut() {
            v.truncate(8);
        }
        Ok(found)
    }
}

/// What one read of the node found.
#[derive(Debug, Default)]
pub struct Observation {
    pub sources: BTreeMap<ProgHolderKind, AttachSource>,
}

/// An XDP attachment netlink reports (with or without a link).
#[derive(Debug, Clone)]
struct XdpSeen {
    prog_id: u32,
    ifindex: u32,
    mode: &'static str,
    target: String,
}

/// One namespace's findings.
#[derive(Debug, Default)]
struct NsRead {
    xdp: Vec<XdpSeen>,
    tc: Vec<Attachment>,
    tcx: Vec<Attachment>,
    netkit: Vec<Attachment>,
    flow: Vec<u32>,
    /// Why part of it was not read.
    cut: Option<String>,
}

/// The part's state between scrapes.
#[derive(Default)]
pub struct NetdevPart {
    hooks: Option<Option<Hooks>>,
    /// The kernel's namespace list walk; `Err` keeps why it did not load.
    list: Option<Result<crate::bpf::netns::NetnsList, String>>,
    /// Whether the kernel has the XDP dispatcher, once known (a fact of
    /// the running kernel's text, read from /proc/kallsyms once).
    dispatcher: Option<bool>,
    /// Where the namespaces only threads, fds or sockets hold were found.
    hints: BTreeMap<u64, Hint>,
    /// Every process's namespaces, kept between scrapes.
    procs: ProcNamespaces,
}

impl NetdevPart {
    /// Load the namespace list walk when the part is on; its objects are
    /// the exporter's own.
    pub fn load(
        opts: &super::CensusOpts,
        own_ids: &mut Vec<u32>,
        own_progs: &mut Vec<u32>,
    ) -> NetdevPart {
        let list = opts.parts.on("netdev").then(|| {
            match crate::bpf::netns::NetnsList::load(opts.btf_path.as_deref()) {
                Ok(l) => {
                    own_ids.extend_from_slice(l.own_map_ids());
                    own_progs.extend_from_slice(l.own_prog_ids());
                    Ok(l)
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "network namespace list walk not loaded: attachments of devices and namespaces read as incomplete");
                    Err(format!("{e:#}"))
                }
            }
        });
        NetdevPart {
            list,
            ..Default::default()
        }
    }

    /// Read every namespace. `links` is the link census of this scrape,
    /// when it was read whole: only its XDP and netns links are then
    /// queried, instead of every link of the node.
    pub fn observe(
        &mut self,
        limits: &Limits,
        links: Option<&[LinkRecord]>,
    ) -> anyhow::Result<Observation> {
        let hooks = *self.hooks.get_or_insert_with(Hooks::detect);
        let listed = match &self.list {
            Some(Ok(l)) => l.list().context("walking net_namespace_list")?,
            _ => None,
        };
        let all_netns = listed.as_deref();
        let deadline = Instant::now() + limits.budget;
        let xdp_links = xdp_and_netns_links(links).context("reading XDP and netns links")?;
        let proc_root = Path::new("/proc");
        // Without the kernel's list a kept view could miss a namespace
        // unnoticed: every process is read each scrape then.
        let mut full = self.procs.due() || all_netns.is_none();
        let (found, reached, reads) = loop {
            let mut found = self
                .procs
                .discover(proc_root, full)
                .context("reading /proc/*/ns/net")?;
            // Namespaces on the kernel's list that no process's leader is
            // in and no mount names: looked for in threads, fd tables and
            // sockets (only then, so a node without such a namespace pays
            // nothing), once every process has been read this scrape.
            let mut reached = Reached::default();
            if let Some(all) = all_netns {
                let mut missing: BTreeSet<u64> = all
                    .iter()
                    .filter(|i| !found.by_ino.contains_key(i))
                    .copied()
                    .collect();
                if !missing.is_empty() && !full {
                    full = true;
                    continue;
                }
                if missing.is_empty() {
                    self.hints.clear();
                } else {
                    reached = reach(
                        proc_root,
                        &mut missing,
                        &mut self.hints,
                        limits.max_socket_probes,
                        deadline,
                    );
                    for (ino, op) in std::mem::take(&mut reached.openers) {
                        found.by_ino.entry(ino).or_default().push(op);
                    }
                }
            }
            let todo: Vec<(u64, Vec<Opener>)> = found
                .by_ino
                .iter()
                .take(limits.max_netns)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let lim = limits.clone();
            let reads: Vec<(u64, Result<NsRead, String>)> = std::thread::scope(|s| {
                s.spawn(move || read_all(&todo, hooks, &lim, deadline))
                    .join()
                    .unwrap_or_default()
            });
            // A kept opener that opens another namespace now: read every
            // process again, then the namespaces.
            let unopened = reads
                .iter()
                .any(|(_, r)| matches!(r, Err(e) if e.as_str() == NO_OPENER));
            if unopened && !full {
                full = true;
                continue;
            }
            break (found, reached, reads);
        };
        let mut problems: Vec<String> = Vec::new();
        if found.by_ino.len() > limits.max_netns {
            problems.push(format!(
                "{} network namespaces found, {} read (limit {})",
                found.by_ino.len(),
                limits.max_netns,
                limits.max_netns
            ));
        }
        for (ino, r) in &reads {
            match r {
                Err(e) => problems.push(format!("netns {ino}: {e}")),
                Ok(n) => {
                    if let Some(c) = &n.cut {
                        problems.push(format!("netns {ino}: {c}"));
                    }
                }
            }
        }
        if reads.len() < found.by_ino.len().min(limits.max_netns) {
            problems.push(format!(
                "{} network namespaces not reached within {:?}",
                found.by_ino.len().min(limits.max_netns) - reads.len(),
                limits.budget
            ));
        }
        match all_netns {
            None => problems.push(match &self.list {
                Some(Err(e)) => format!("the node's network namespaces cannot be listed (the list walk did not load: {e}): one only a socket or a file holds would be missed"),
                _ => "the node's network namespace list was longer than one walk reads".into(),
            }),
            Some(all) => {
                let missed = all.iter().filter(|i| !found.by_ino.contains_key(i)).count();
                if missed > 0 {
                    let mut why = format!(
                        "{missed} network namespaces that no process or thread is in, no mount names and no fd table holds (as a namespace file or a socket) are not read: held by a file in flight or in a kernel object, or being freed"
                    );
                    if reached.unreadable > 0 {
                        why += &format!(
                            "; {} processes' fd tables or threads are unreadable (CAP_SYS_PTRACE reads them)",
                            reached.unreadable
                        );
                    }
                    if let Some(e) = &reached.first_denial {
                        why += &format!(
                            "; {} sockets' namespaces could not be opened (first: {e}; CAP_SYS_PTRACE and CAP_NET_ADMIN open them)",
                            reached.denied
                        );
                    }
                    if reached.unprobed > 0 {
                        why += &format!(
                            "; {} sockets not examined (at most {} per scrape, within the time budget)",
                            reached.unprobed, limits.max_socket_probes
                        );
                    }
                    problems.push(why);
                }
            }
        }
        if found.unreadable > 0 && all_netns.is_none() {
            problems.push(format!(
                "{} processes' network namespaces are unreadable",
                found.unreadable
            ));
        }
        let mut obs = Observation::default();
        let mut xdp_links = xdp_links;
        let mut dispatched: BTreeSet<u32> = BTreeSet::new();
        let mut sources: BTreeMap<ProgHolderKind, Vec<Attachment>> = BTreeMap::new();
        for (ino, r) in reads {
            let Ok(n) = r else { continue };
            for x in n.xdp {
                if x.mode != "hw" {
                    dispatched.insert(x.prog_id);
                }
                let xdp = sources.entry(ProgHolderKind::Xdp).or_default();
                // The driver's reference (`dev_xdp_install`), link or not.
                xdp.push(kernel_held(
                    x.prog_id,
                    ProgHolderKind::Xdp,
                    format!("{} (the driver's reference)", x.target),
                ));
                // The device's own (`xdp_state[mode].prog`), unless a link
                // holds it instead.
                if let Some(c) = xdp_links.xdp.get_mut(&(x.prog_id, x.ifindex)) {
                    if *c > 0 {
                        *c -= 1;
                        continue;
                    }
                }
                xdp.push(kernel_held(x.prog_id, ProgHolderKind::Xdp, x.target));
            }
            sources.entry(ProgHolderKind::Tc).or_default().extend(n.tc);
            sources
                .entry(ProgHolderKind::Tcx)
                .or_default()
                .extend(n.tcx);
            sources
                .entry(ProgHolderKind::Netkit)
                .or_default()
                .extend(n.netkit);
            // The flow dissector, less a netns link's program.
            for id in n.flow {
                if let Some(c) = xdp_links.netns.get_mut(&(ino, id)) {
                    if *c > 0 {
                        *c -= 1;
                        continue;
                    }
                }
                sources
                    .entry(ProgHolderKind::FlowDissector)
                    .or_default()
                    .push(kernel_held(
                        id,
                        ProgHolderKind::FlowDissector,
                        format!("flow_dissector of netns {ino}"),
                    ));
            }
        }
        // The XDP dispatcher holds one reference on each distinct program
        // attached in a non-offload mode, while it has a free slot.
        let mut xdp_problems = Vec::new();
        if !dispatched.is_empty() {
            if self.dispatcher.is_none() {
                self.dispatcher = xdp_dispatcher();
            }
            match self.dispatcher {
                Some(true) if dispatched.len() <= XDP_DISPATCHER_SLOTS => {
                    for id in dispatched {
                        sources.entry(ProgHolderKind::Xdp).or_default().push(kernel_held(
                            id,
                            ProgHolderKind::Xdp,
                            "the XDP dispatcher (one reference per attached program)".into(),
                        ));
                    }
                }
                Some(true) => xdp_problems.push(format!(
                    "{} distinct XDP programs attached, more than the dispatcher's {XDP_DISPATCHER_SLOTS} slots: which it holds is unknown",
                    dispatched.len()
                )),
                Some(false) => {}
                None => xdp_problems.push("/proc/kallsyms is unreadable: whether the kernel has the XDP dispatcher is unknown".into()),
            }
        }
        let complete = problems.is_empty();
        let reason = (!complete).then(|| problems.join("; "));
        for k in [
            ProgHolderKind::Xdp,
            ProgHolderKind::Tc,
            ProgHolderKind::Tcx,
            ProgHolderKind::Netkit,
            ProgHolderKind::FlowDissector,
        ] {
            let found = sources.remove(&k).unwrap_or_default();
            let absent = match k {
                ProgHolderKind::Tcx => hooks.is_some_and(|h| !h.tcx),
                ProgHolderKind::Netkit => hooks.is_some_and(|h| !h.netkit),
                _ => false,
            };
            let (complete, incomplete) = if absent {
                (true, None)
            } else if hooks.is_none() && matches!(k, ProgHolderKind::Tcx | ProgHolderKind::Netkit) {
                (
                    false,
                    Some(
                        "the kernel's BTF is unreadable: whether it has this hook is unknown"
                            .to_string(),
                    ),
                )
            } else if k == ProgHolderKind::Xdp && !xdp_problems.is_empty() {
                let mut all = problems.clone();
                all.extend(xdp_problems.iter().cloned());
                (false, Some(all.join("; ")))
            } else {
                (complete, reason.clone())
            };
            obs.sources.insert(
                k,
                AttachSource {
                    found,
                    complete,
                    incomplete,
                },
            );
        }
        Ok(obs)
    }
}

/// `BPF_DISPATCHER_MAX`: the XDP dispatcher's program slots.
const XDP_DISPATCHER_SLOTS: usize = 48;

/// Whether the kernel has the XDP dispatcher (`bpf_prog_change_xdp` takes
/// a reference on each program it dispatches to; built with the JIT).
fn xdp_dispatcher() -> Option<bool> {
    use std::io::BufRead;
    let f = std::io::BufReader::new(File::open("/proc/kallsyms").ok()?);
    let mut any = false;
    for l in f.lines() {
        let l = l.ok()?;
        any = true;
        if l.split_whitespace().nth(2) == Some("bpf_dispatcher_xdp_func") {
            return Some(true);
        }
    }
    any.then_some(false)
}

fn kernel_held(prog_id: u32, kind: ProgHolderKind, target: String) -> Attachment {
    Attachment {
        prog_id,
        kind,
        held_by: vec![AttachedBy::Kernel],
        target,
    }
}

/// XDP links by (program, ifindex), and netns links' programs by
/// namespace.
#[derive(Debug, Default)]
struct LinkFacts {
    xdp: BTreeMap<(u32, u32), u32>,
    netns: BTreeMap<(u64, u32), u32>,
}

fn xdp_and_netns_links(links: Option<&[LinkRecord]>) -> anyhow::Result<LinkFacts> {
    use libbpf_rs::query::{LinkInfo, LinkTypeInfo};
    let mut out = LinkFacts::default();
    let ids = match links {
        Some(l) => l
            .iter()
            .filter(|l| matches!(l.link_type, LINK_TYPE_XDP | LINK_TYPE_NETNS))
            .map(|l| l.id)
            .collect(),
        None => sys::all_link_ids().context("BPF_LINK_GET_NEXT_ID")?,
    };
    for id in ids {
        let fd = match sys::link_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("BPF_LINK_GET_FD_BY_ID {id}")),
        };
        let info = LinkInfo::from_fd(fd.as_fd())
            .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD of link {id}"))?;
        match info.info {
            LinkTypeInfo::Xdp(x) => *out.xdp.entry((info.prog_id, x.ifindex)).or_default() += 1,
            LinkTypeInfo::NetNs(n)
                if matches!(n.attach_type, libbpf_rs::ProgramAttachType::FlowDissector) =>
            {
                *out.netns.entry((n.ino as u64, info.prog_id)).or_default() += 1
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Why a namespace was not read when none of its openers opens it.
const NO_OPENER: &str = "no way to open it (its processes and mounts are gone or unreadable)";

/// Runs on a thread of its own: enter each namespace, read it, come back.
fn read_all(
    todo: &[(u64, Vec<Opener>)],
    hooks: Option<Hooks>,
    limits: &Limits,
    deadline: Instant,
) -> Vec<(u64, Result<NsRead, String>)> {
    let mut out = Vec::new();
    let Ok(home) = File::open("/proc/thread-self/ns/net") else {
        return out;
    };
    for (ino, openers) in todo {
        if Instant::now() >= deadline {
            break;
        }
        let nsf = openers.iter().find_map(|o| {
            let f = o.open()?;
            (f.metadata().ok()?.ino() == *ino).then_some(f)
        });
        let Some(nsf) = nsf else {
            out.push((*ino, Err(NO_OPENER.into())));
            continue;
        };
        if let Err(e) = sys::setns_net(nsf.as_fd()) {
            out.push((*ino, Err(format!("entering it: {e}"))));
            continue;
        }
        let r = read_ns(*ino, &nsf, hooks, limits, deadline).map_err(|e| format!("{e:#}"));
        out.push((*ino, r));
        if sys::setns_net(home.as_fd()).is_err() {
            // This thread ends here; the namespaces left are not read.
            break;
        }
    }
    out
}

/// A NETLINK_ROUTE socket of the calling thread's namespace.
struct Nl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Nl {
    fn new(timeout: Duration, deadline: Instant) -> anyhow::Result<Nl> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        sock.bind_auto().context("binding a netlink socket")?;
        sock.connect(&SocketAddr::new(0, 0))
            .context("connecting a netlink socket")?;
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .context("SO_RCVTIMEO on a netlink socket")?;
        Ok(Nl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(1 << 16),
            deadline,
        })
    }

    /// Send a dump request and hand every reply to `f` (false: stop
    /// reading after this batch, the caller's limit was reached).
    fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(RouteNetlinkMessage) -> bool,
    ) -> anyhow::Result<bool> {
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock
            .send(&out, 0)
            .context("sending a netlink request")?;
        let mut more = true;
        loop {
            if Instant::now() >= self.deadline {
                anyhow::bail!("the read's time budget ran out");
            }
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .context("reading a netlink reply")?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| anyhow::anyhow!("decoding a netlink reply: {e}"))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(more),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(std::io::Error::from_raw_os_error(-code.get()))
                                .context("netlink error");
                        }
                        return Ok(more);
                    }
                    NetlinkPayload::InnerMessage(m) if more => more = f(m),
                    _ => {}
                }
            }
        }
    }
}

fn handle_str(h: TcHandle) -> String {
    format!("{:x}:{:x}", h.major, h.minor)
}

/// One namespace, from a thread in it.
fn read_ns(
    ino: u64,
    nsf: &File,
    hooks: Option<Hooks>,
    limits: &Limits,
    deadline: Instant,
) -> anyhow::Result<NsRead> {
    let mut r = NsRead::default();
    let mut nl = Nl::new(limits.recv_timeout, deadline)?;
    // Devices, with XDP programs per mode.
    let mut devs: Vec<(u32, String, bool)> = Vec::new();
    let mut over = false;
    let max = limits.max_devices;
    nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), |m| {
        let RouteNetlinkMessage::NewLink(l) = m else {
            return true;
        };
        if devs.len() >= max {
            over = true;
            return false;
        }
        let ifindex = l.header.index;
        let mut name = String::new();
        let mut netkit = false;
        let mut xdp = Vec::new();
        for a in l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = n,
                LinkAttribute::LinkInfo(infos) => {
                    netkit = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Netkit)));
                }
                LinkAttribute::Xdp(x) => xdp = x,
                _ => {}
            }
        }
        for x in xdp {
            let (mode, id) = match x {
                LinkXdp::DrvProgId(id) => ("drv", id),
                LinkXdp::SkbProgId(id) => ("skb", id),
                LinkXdp::HwProgId(id) => ("hw", id),
                _ => continue,
            };
            if id != 0 {
                r.xdp.push(XdpSeen {
                    prog_id: id,
                    ifindex,
                    mode,
                    target: format!("xdp {mode} on {name} (ifindex {ifindex}, netns {ino})"),
                });
            }
        }
        devs.push((ifindex, name, netkit));
        true
    })
    .context("RTM_GETLINK")?;
    if over {
        r.cut = Some(format!("more than {max} devices"));
    }
    // tcx and netkit hooks.
    for (ifindex, name, netkit) in &devs {
        let mut hooks_here: Vec<(u32, ProgHolderKind, &str)> = Vec::new();
        if hooks.is_some_and(|h| h.tcx) {
            hooks_here.push((BPF_TCX_INGRESS, ProgHolderKind::Tcx, "ingress"));
            hooks_here.push((BPF_TCX_EGRESS, ProgHolderKind::Tcx, "egress"));
        }
        if *netkit && hooks.is_some_and(|h| h.netkit) {
            hooks_here.push((BPF_NETKIT_PRIMARY, ProgHolderKind::Netkit, "primary"));
            hooks_here.push((BPF_NETKIT_PEER, ProgHolderKind::Netkit, "peer"));
        }
        for (at, kind, dir) in hooks_here {
            let (progs, count) = match sys::prog_query(*ifindex as i32, at, QUERY_MAX, true) {
                Ok(r) => r,
                // A netkit pair's hooks are both read through its primary
                // device: the peer device refuses queries (EACCES), and a
                // primary whose peer is gone has no peer hook (ENODEV).
                Err(e)
                    if kind == ProgHolderKind::Netkit
                        && matches!(e.raw_os_error(), Some(libc::EACCES | libc::ENODEV)) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("BPF_PROG_QUERY {} {dir} on {name}", kind.label())
                    })
                }
            };
            if count as usize > progs.len() {
                r.cut = Some(format!(
                    "{} {dir} on {name}: {count} programs, more than read",
                    kind.label()
                ));
            }
            for (prog, link) in progs {
                if link == 0 {
                    let t = format!(
                        "{} {dir} on {name} (ifindex {ifindex}, netns {ino})",
                        kind.label()
                    );
                    let a = kernel_held(prog, kind, t);
                    if kind == ProgHolderKind::Tcx {
                        r.tcx.push(a);
                    } else {
                        r.netkit.push(a);
                    }
                }
            }
        }
    }
    // The flow dissector of the namespace.
    let (progs, _) = sys::prog_query(nsf.as_raw_fd(), BPF_FLOW_DISSECTOR, 1, false)
        .context("BPF_PROG_QUERY flow_dissector")?;
    r.flow = progs.into_iter().map(|p| p.0).collect();
    read_tc(ino, &mut nl, &devs, limits.max_tc_objects, &mut r)?;
    Ok(r)
}

/// tc: every qdisc's and class's filters (all chains; shared blocks once),
/// and every `act_bpf` action of the namespace.
fn read_tc(
    ino: u64,
    nl: &mut Nl,
    devs: &[(u32, String, bool)],
    max: usize,
    r: &mut NsRead,
) -> anyhow::Result<()> {
    let names: BTreeMap<u32, &str> = devs.iter().map(|d| (d.0, d.1.as_str())).collect();
    let mut objects = 0usize;
    let mut over = false;
    // Qdiscs of every device: (ifindex, handle, kind).
    let mut qdiscs: Vec<(u32, TcHandle, String)> = Vec::new();
    nl.dump(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        |m| {
            let RouteNetlinkMessage::NewQueueDiscipline(q) = m else {
                return true;
            };
            objects += 1;
            if objects > max {
                over = true;
                return false;
            }
            let kind = q
                .attributes
                .iter()
                .find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            qdiscs.push((q.header.index as u32, q.header.handle, kind));
            true
        },
    )
    .context("RTM_GETQDISC")?;
    // Filter parents: each qdisc's own block, the ingress/clsact blocks,
    // and every class of a device with a qdisc of its own.
    let mut parents: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut classful: BTreeSet<u32> = BTreeSet::new();
    for (ifindex, h, kind) in &qdiscs {
        if !names.contains_key(ifindex) {
            continue; // a device past the limit
        }
        if h.major == TC_H_INGRESS_MAJ && (kind == "clsact" || kind == "ingress") {
            for min in [TC_H_MIN_INGRESS, TC_H_MIN_EGRESS] {
                parents.insert((
                    *ifindex,
                    u32::from(TcHandle {
                        major: h.major,
                        minor: min,
                    }),
                ));
            }
        } else if h.major != 0 {
            parents.insert((
                *ifindex,
                u32::from(TcHandle {
                    major: h.major,
                    minor: 0,
                }),
            ));
            classful.insert(*ifindex);
        }
    }
    for ifindex in classful {
        let mut req = TcMessage::default();
        req.header.index = ifindex as i32;
        nl.dump(RouteNetlinkMessage::GetTrafficClass(req), |m| {
            let RouteNetlinkMessage::NewTrafficClass(c) = m else {
                return true;
            };
            objects += 1;
            if objects > max {
                over = true;
                return false;
            }
            if c.header.handle.minor != 0 {
                parents.insert((ifindex, u32::from(c.header.handle)));
            }
            true
        })
        .with_context(|| format!("RTM_GETTCLASS on ifindex {ifindex}"))?;
    }
    // Filters; one per (device or block, parent, chain, priority/protocol,
    // handle).
    let mut seen: BTreeSet<(i32, u32, u32, u32, u32)> = BTreeSet::new();
    for (ifindex, parent) in parents {
        let mut req = TcMessage::default();
        req.header.index = ifindex as i32;
        req.header.parent = TcHandle::from(parent);
        let res = nl.dump(RouteNetlinkMessage::GetTrafficFilter(req), |m| {
            let RouteNetlinkMessage::NewTrafficFilter(f) = m else {
                return true;
            };
            objects += 1;
            if objects > max {
                over = true;
                return false;
            }
            let mut chain = 0;
            let mut bpf = false;
            let mut id = None;
            for a in &f.attributes {
                match a {
                    TcAttribute::Kind(k) => bpf = k == "bpf",
                    TcAttribute::Chain(c) => chain = *c,
                    TcAttribute::Options(o) => {
                        for o in o {
                            if let TcOption::Bpf(TcFilterBpfOption::ProgId(p)) = o {
                                id = Some(*p);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let h = &f.header;
            let (Some(id), true) = (id, bpf) else {
                return true;
            };
            if !seen.insert((
                h.index,
                u32::from(h.parent),
                chain,
                h.info,
                u32::from(h.handle),
            )) {
                return true;
            }
            let pref = h.info >> 16;
            let on = if h.index as u32 == u32::MAX {
                format!(
                    "shared block {}",
                    h.parent.major as u32 * 65536 + h.parent.minor as u32
                )
            } else {
                let dev = names.get(&(h.index as u32)).copied().unwrap_or("?");
                format!(
                    "{dev} (ifindex {}, netns {ino}) parent {}",
                    h.index,
                    handle_str(h.parent)
                )
            };
            r.tc.push(kernel_held(
                id,
                ProgHolderKind::Tc,
                format!(
                    "tc filter bpf on {on} chain {chain} pref {pref} handle 0x{:x}{}",
                    (h.handle.major as u32) << 16 | h.handle.minor as u32,
                    if h.index as u32 == u32::MAX {
                        format!(" (netns {ino})")
                    } else {
                        String::new()
                    }
                ),
            ));
            true
        });
        match res {
            Ok(_) => {}
            // The qdisc or class went away, or takes no filters.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    .is_some_and(|c| {
                        c == libc::ENOENT || c == libc::EINVAL || c == libc::EOPNOTSUPP
                    }) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("RTM_GETTFILTER on ifindex {ifindex}"))
            }
        }
    }
    // act_bpf actions, standalone or bound to a filter: one per index.
    let mut req = TcActionMessage::default();
    let mut tab = TcAction::default();
    tab.tab = 1;
    tab.attributes.push(TcActionAttribute::Kind("bpf".into()));
    req.attributes
        .push(TcActionMessageAttribute::Actions(vec![tab]));
    let mut indexes: BTreeSet<u32> = BTreeSet::new();
    let res = nl.dump(RouteNetlinkMessage::GetTrafficAction(req), |m| {
        let RouteNetlinkMessage::NewTrafficAction(a) = m else {
            return true;
        };
        for attr in a.attributes {
            let TcActionMessageAttribute::Actions(acts) = attr else {
                continue;
            };
            for act in acts {
                objects += 1;
                if objects > max {
                    over = true;
                    return false;
                }
                let mut index = None;
                let mut id = None;
                let mut bpf = false;
                for a in act.attributes {
                    match a {
                        TcActionAttribute::Kind(k) => bpf = k == "bpf",
                        TcActionAttribute::Options(opts) => {
                            for o in opts {
                                let TcActionOption::Other(nla) = o else {
                                    continue;
                                };
                                use netlink_packet_core::Nla;
                                let mut v = vec![0u8; nla.value_len()];
                                nla.emit_value(&mut v);
                                match nla.kind() {
                                    TCA_ACT_BPF_ID if v.len() >= 4 => {
                                        id = Some(u32::from_ne_bytes(v[..4].try_into().unwrap()))
                                    }
                                    TCA_ACT_BPF_PARMS if v.len() >= 4 => {
                                        index = Some(u32::from_ne_bytes(v[..4].try_into().unwrap()))
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if let (true, Some(id), Some(index)) = (bpf, id, index) {
                    if indexes.insert(index) {
                        r.tc.push(kernel_held(
                            id,
                            ProgHolderKind::Tc,
                            format!("tc action bpf index {index} (netns {ino})"),
                        ));
                    }
                }
            }
        }
        true
    });
    match res {
        Ok(_) => {}
        // No act_bpf module loaded: no such action exists.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                .is_some_and(|c| c == libc::ENOENT || c == libc::EINVAL) => {}
        Err(e) => return Err(e).context("RTM_GETACTION bpf"),
    }
    if over {
        r.cut = Some(format!("more than {max} tc objects"));
    } else if act_bpf_loaded() {
        // The action dump above is not proven against a kernel that has
        // act_bpf (on 5.10 it found none of the actions that held a
        // program): while the module is loaded, actions may hold programs
        // this read missed, so counts it could explain are withheld.
        r.cut = Some("act_bpf is loaded: its actions are not read reliably by this build".into());
    }
    Ok(())
}

/// Whether the kernel's act_bpf module is loaded (tc loads it with the
/// first bpf action; without it no such action exists).
fn act_bpf_loaded() -> bool {
    Path::new("/sys/module/act_bpf").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process directory as discovery reads it: `ns/net` and `ns/mnt`
    /// (plain files stand in for the namespace links: discovery reads
    /// their inodes) and a mountinfo naming one nsfs mount.
    fn fake_process(root: &Path, pid: u32, nsfs_ino: u64) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(d.join("ns")).unwrap();
        std::fs::write(d.join("ns/net"), "").unwrap();
        std::fs::write(d.join("ns/mnt"), "").unwrap();
        std::fs::write(
            d.join("mountinfo"),
            format!("1 0 0:4 net:[{nsfs_ino}] /run/netns/x rw - nsfs nsfs rw\n"),
        )
        .unwrap();
    }

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    fn process_namespaces(f: &Found) -> BTreeSet<u64> {
        f.by_ino
            .iter()
            .filter(|(_, v)| v.iter().any(|o| matches!(o, Opener::Process(_))))
            .map(|(k, _)| *k)
            .collect()
    }

    #[test]
    fn nsfs_mounts_past_the_bound_are_read_each_time_not_kept() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fake_process(r, 10, 4026532999);
        let lines: String = (0..=MAX_KEPT_MOUNTS as u64)
            .map(|i| {
                format!(
                    "1 0 0:4 net:[{}] /run/netns/n{i} rw - nsfs nsfs rw\n",
                    5_000_000 + i
                )
            })
            .collect();
        std::fs::write(r.join("10/mountinfo"), lines).unwrap();
        let mut p = ProcNamespaces::default();
        for full in [true, false] {
            let f = p.discover(r, full).unwrap();
            // Every mount still names its namespace...
            assert_eq!(
                f.by_ino
                    .values()
                    .filter(|v| matches!(v[..], [Opener::Mount(_)]))
                    .count(),
                MAX_KEPT_MOUNTS + 1
            );
            // ...but none is kept between scrapes.
            assert!(p.mounts.is_empty());
            assert_eq!(p.kept_mounts, 0);
        }
    }

    #[test]
    fn kept_namespaces_are_read_again_for_new_processes_reused_pids_and_full_reads() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fake_process(r, 10, 4026532999);
        let mut p = ProcNamespaces::default();
        assert!(p.due());
        let first = p.discover(r, true).unwrap();
        let net10 = ino(&r.join("10/ns/net"));
        assert_eq!(process_namespaces(&first), BTreeSet::from([net10]));
        assert!(matches!(first.by_ino[&4026532999][..], [Opener::Mount(_)]));
        assert!(!p.due());

        // Process 10 moves (its link now names another inode): the kept
        // view still names the old one until a full read.
        // (Made beside the old one, so the inode cannot be reused.)
        std::fs::write(r.join("10/ns/net.new"), "moved").unwrap();
        std::fs::rename(r.join("10/ns/net.new"), r.join("10/ns/net")).unwrap();
        let moved = ino(&r.join("10/ns/net"));
        assert_ne!(moved, net10);
        // A new process is read at once.
        fake_process(r, 11, 4026532999);
        let net11 = ino(&r.join("11/ns/net"));
        let kept = p.discover(r, false).unwrap();
        assert_eq!(process_namespaces(&kept), BTreeSet::from([net10, net11]));
        let full = p.discover(r, true).unwrap();
        assert_eq!(process_namespaces(&full), BTreeSet::from([moved, net11]));

        // Pid 11 is reused by a new process (a new /proc directory): read
        // again without a full read.
        fake_process(r, 12, 4026532999);
        std::fs::remove_dir_all(r.join("11")).unwrap();
        std::fs::rename(r.join("12"), r.join("11")).unwrap();
        let net11b = ino(&r.join("11/ns/net"));
        assert_ne!(net11b, net11);
        let reused = p.discover(r, false).unwrap();
        assert_eq!(process_namespaces(&reused), BTreeSet::from([moved, net11b]));
        // Gone processes are forgotten.
        std::fs::remove_dir_all(r.join("10")).unwrap();
        let gone = p.discover(r, false).unwrap();
        assert_eq!(process_namespaces(&gone), BTreeSet::from([net11b]));
        assert_eq!(p.by_pid.len(), 1);
    }

    #[test]
    fn fd_links_name_namespaces_and_sockets() {
        assert_eq!(fd_link_ino("net:[4026532281]", "net"), Some(4026532281));
        assert_eq!(fd_link_ino("socket:[5102854]", "socket"), Some(5102854));
        assert_eq!(fd_link_ino("socket:[5102854]", "net"), None);
        assert_eq!(fd_link_ino("/run/netns/a", "net"), None);
        assert_eq!(fd_link_ino("net:[x]", "net"), None);
    }

    #[test]
    fn nsfs_mounts_of_network_namespaces_are_found() {
        let text = "\
36 35 0:4 net:[4026532281] /run/netns/a\\040b rw shared:5 - nsfs nsfs rw
37 35 0:4 mnt:[4026532282] /run/mnt rw - nsfs nsfs rw
38 35 0:22 / /sys rw - sysfs sysfs rw
";
        assert_eq!(
            netns_mounts(text),
            [(4026532281, "/run/netns/a b".to_string())]
        );
    }
}
