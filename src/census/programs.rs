//! The programs part: every live program (`iter/bpf_prog`), what it uses
//! and what keeps it alive. Pure code (the walks feed it), unit-tested
//! without root.
//!
//! Kernel facts this follows (each holds one reference on the program, as
//! `bpf_prog_inc` / `bpf_prog_get` in kernel/bpf/syscall.c take them):
//! - a program *file* ("bpf-prog" anon inode), however many fds share it,
//!   in an fd table, in flight (SCM_RIGHTS) or only in an io_uring table;
//! - a bpffs pin (an inode);
//! - a link (`bpf_link_init` keeps the program the link was created with);
//! - a `prog_array` slot (tail calls: `prog_fd_array_get_ptr`);
//! - another program: an `freplace`/fentry program loaded against it
//!   (`aux->dst_prog`) until it is attached, and a tracing link to it
//!   (`tgt_prog`);
//! - the attachments the kernel keeps without a link ([`ProgHolderKind`]'s
//!   attachment kinds). Which of them can hold a program depends on its
//!   type ([`attach_kinds`]): an XDP program can be held by a device or a
//!   devmap entry, never by a cgroup. A program's unexplained count is
//!   exact when every source that can hold a program of its type was read
//!   completely; otherwise only a count its found holders already explain
//!   (zero) is published.
use std::collections::{BTreeMap, HashSet};

use super::IdMap;
use crate::bpf::census::{ObjectFile, ObjectKind, ProgRecord};

/// What explains a program reference: the `kind` label of
/// `bpfmap_program_holders`. Kinds that maps also have keep the maps' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProgHolderKind {
    /// A `struct file` of the program in some fd table.
    File,
    /// A bpffs pin (an inode).
    Pin,
    /// A link created with the program.
    Link,
    /// A `prog_array` slot holding the program (a tail-call target).
    ProgArray,
    /// A program file held only by io_uring registered-file tables.
    IoUring,
    /// A program file in flight only (an unreceived SCM_RIGHTS message).
    Inflight,
    /// Another program loaded against it (`dst_prog`), or a tracing link
    /// attached to it (`tgt_prog`).
    Program,
    /// XDP on a network device, without a link (one per mode).
    Xdp,
    /// A tc classifier (`cls_bpf`) or action (`act_bpf`).
    Tc,
    /// A tcx hook of a device, attached without a link.
    Tcx,
    /// A netkit device's hook, attached without a link.
    Netkit,
    /// A network namespace's flow dissector, attached without a link.
    FlowDissector,
    /// A cgroup hook, attached without a link.
    Cgroup,
    /// A perf event (kprobe, tracepoint, perf counter) set by ioctl.
    PerfEvent,
    /// A socket filter (`SO_ATTACH_BPF`).
    Socket,
    /// A reuseport group's selector (`SO_ATTACH_REUSEPORT_EBPF`).
    Reuseport,
    /// A sockmap or sockhash's parser, verdict or msg program.
    Sockmap,
    /// A devmap, devmap_hash or cpumap entry's program.
    Devmap,
    /// A struct_ops map's member.
    StructOps,
}

impl ProgHolderKind {
    /// Every kind, in label order; [`ProgHolders::counts`] is indexed by it.
    pub const ALL: [ProgHolderKind; 19] = [
        ProgHolderKind::File,
        ProgHolderKind::Pin,
        ProgHolderKind::Link,
        ProgHolderKind::ProgArray,
        ProgHolderKind::IoUring,
        ProgHolderKind::Inflight,
        ProgHolderKind::Program,
        ProgHolderKind::Xdp,
        ProgHolderKind::Tc,
        ProgHolderKind::Tcx,
        ProgHolderKind::Netkit,
        ProgHolderKind::FlowDissector,
        ProgHolderKind::Cgroup,
        ProgHolderKind::PerfEvent,
        ProgHolderKind::Socket,
        ProgHolderKind::Reuseport,
        ProgHolderKind::Sockmap,
        ProgHolderKind::Devmap,
        ProgHolderKind::StructOps,
    ];

    /// Kinds every program can be held by, whatever its type.
    pub const BASE: [ProgHolderKind; 7] = [
        ProgHolderKind::File,
        ProgHolderKind::Pin,
        ProgHolderKind::Link,
        ProgHolderKind::ProgArray,
        ProgHolderKind::IoUring,
        ProgHolderKind::Inflight,
        ProgHolderKind::Program,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            ProgHolderKind::File => "file",
            ProgHolderKind::Pin => "pin",
            ProgHolderKind::Link => "link",
            ProgHolderKind::ProgArray => "prog_array",
            ProgHolderKind::IoUring => "io_uring",
            ProgHolderKind::Inflight => "inflight",
            ProgHolderKind::Program => "program",
            ProgHolderKind::Xdp => "xdp",
            ProgHolderKind::Tc => "tc",
            ProgHolderKind::Tcx => "tcx",
            ProgHolderKind::Netkit => "netkit",
            ProgHolderKind::FlowDissector => "flow_dissector",
            ProgHolderKind::Cgroup => "cgroup",
            ProgHolderKind::PerfEvent => "perf_event",
            ProgHolderKind::Socket => "socket",
            ProgHolderKind::Reuseport => "reuseport",
            ProgHolderKind::Sockmap => "sockmap",
            ProgHolderKind::Devmap => "devmap",
            ProgHolderKind::StructOps => "struct_ops",
        }
    }

    /// The `source` label of `bpfmap_program_holder_source_complete` for
    /// this kind: the census walk that reads it.
    pub const fn source(self) -> &'static str {
        match self {
            ProgHolderKind::File => "files",
            ProgHolderKind::Pin => "pins",
            ProgHolderKind::Link => "links",
            ProgHolderKind::ProgArray => "programs",
            ProgHolderKind::IoUring => "io_uring",
            ProgHolderKind::Program => "program_targets",
            k => k.label(),
        }
    }

    /// Whether this kind is an attachment the kernel keeps without a link
    /// (as opposed to a file, pin, link, slot or program).
    pub fn is_attachment(self) -> bool {
        !Self::BASE.contains(&self)
    }
}

/// Sources that can hold programs of some types and that no walk of this
/// build reads: published as `bpfmap_program_holder_source_complete{source}
/// 0`. A program of a type they can hold never gets a positive unexplained
/// count.
pub const UNREAD_SOURCES: &[&str] = &["xt_bpf", "tun", "lwt", "lirc"];

/// The attachment kinds that can hold a program of `prog_type` (uapi `enum
/// bpf_prog_type`), and the unread sources that can: which hooks accept
/// which program types is fixed by the kernel (each attach path checks the
/// type). Types that attach only through links (tracing, LSM, raw
/// tracepoints, sk_lookup, netfilter, syscall) need no attachment kind.
/// A type this build does not know names the source `unknown_type`.
pub fn attach_kinds(prog_type: u32) -> (&'static [ProgHolderKind], &'static [&'static str]) {
    use ProgHolderKind::*;
    match prog_type {
        // socket_filter: sockets, reuseport groups, iptables' xt_bpf, tun.
        1 => (&[Socket, Reuseport], &["xt_bpf", "tun"]),
        // kprobe, tracepoint, perf_event: perf events set by ioctl.
        2 | 5 | 7 => (&[PerfEvent], &[]),
        // sched_cls: tc classifiers, tcx, netkit.
        3 => (&[Tc, Tcx, Netkit], &[]),
        // sched_act: tc actions.
        4 => (&[Tc], &[]),
        // xdp: devices, devmap and cpumap entries.
        6 => (&[Xdp, Devmap], &[]),
        // cgroup_skb, cgroup_sock, sock_ops, cgroup_device,
        // cgroup_sock_addr, cgroup_sysctl, cgroup_sockopt, and lsm (lsm_cgroup).
        8 | 9 | 13 | 15 | 18 | 23 | 25 | 29 => (&[Cgroup], &[]),
        // lwt_in, lwt_out, lwt_xmit, lwt_seg6local: routes.
        10 | 11 | 12 | 19 => (&[], &["lwt"]),
        // sk_skb, sk_msg.
        14 | 16 => (&[Sockmap], &[]),
        // raw_tracepoint(_writable), tracing, ext, sk_lookup, syscall,
        // netfilter: links only.
        17 | 24 | 26 | 28 | 30 | 31 | 32 => (&[], &[]),
        20 => (&[], &["lirc"]),
        21 => (&[Reuseport], &[]),
        22 => (&[FlowDissector], &[]),
        27 => (&[StructOps], &[]),
        _ => (&[], &["unknown_type"]),
    }
}

/// Who keeps an attachment alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttachedBy {
    /// The kernel object it is attached to (a device, a cgroup, a network
    /// namespace): a live root while the attachment exists.
    Kernel,
    /// A file (a socket, a perf event) in this process's fd table.
    Process(u32),
    /// A file in flight.
    Inflight,
    /// A map (sockmap, devmap, cpumap, struct_ops).
    Map(u32),
    /// A link (a tracing link to the program).
    Link(u32),
    /// A program (loaded against it, not yet attached).
    Program(u32),
}

/// One program reference held by something other than the program's
/// files, pins, links and tail-call slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub prog_id: u32,
    pub kind: ProgHolderKind,
    /// What keeps the attachment itself alive (at least one entry).
    pub held_by: Vec<AttachedBy>,
    /// Where it is attached, as one line: `eth0 (ifindex 2, netns
    /// 4026531840) mode drv`, `cgroup /sys/fs/cgroup/x ingress`.
    pub target: String,
}

/// What one attachment reader found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachSource {
    pub found: Vec<Attachment>,
    /// Every attachment of this kind on the node was seen. When false,
    /// `incomplete` says why (one line).
    pub complete: bool,
    pub incomplete: Option<String>,
}

/// Holder counts for one program, indexed by [`ProgHolderKind`]; `None`
/// where the source is off or failed this scrape. Compact, as a map's
/// [`super::Holders`]: counts saturate at u32::MAX.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProgHolders {
    pub counts: [Option<u32>; ProgHolderKind::ALL.len()],
    /// Every source that can hold a program of this type was read
    /// completely.
    pub exact: bool,
    /// References the kernel released between the census and the
    /// confirming re-read.
    pub settled: i64,
}

impl ProgHolders {
    pub fn get(&self, k: ProgHolderKind) -> Option<u64> {
        self.counts[k as usize].map(u64::from)
    }

    /// Every kind with its count.
    pub fn iter(&self) -> impl Iterator<Item = (ProgHolderKind, Option<u64>)> + '_ {
        ProgHolderKind::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// The holders found (a lower bound of the refcount's explanation).
    pub fn known_sum(&self) -> i64 {
        self.counts.iter().flatten().map(|&c| c as i64).sum()
    }

    /// refcount minus every holder, when that is known.
    ///
    /// Invariant: a number is returned only when it is exact. Holders found
    /// are real, so when they explain the whole refcount nothing is
    /// unexplained (`Some(0)`). Otherwise the count is published only when
    /// every source that can hold a program of this type was read
    /// completely ([`ProgHolders::exact`]); else it is withheld.
    pub fn unexplained(&self, refcnt: i64) -> Option<i64> {
        let sum = self.known_sum() + self.settled;
        if sum >= refcnt {
            return Some(0);
        }
        self.exact.then_some(refcnt - sum)
    }

    /// Held by pins and nothing else found: the file, link, tail-call and
    /// io_uring sources ran and saw none, and no other holder was found.
    /// An unread source may still hold it where not [`ProgHolders::exact`].
    pub fn pins_only(&self) -> bool {
        use ProgHolderKind::*;
        self.get(Pin).unwrap_or(0) > 0
            && [File, Link, ProgArray, IoUring]
                .iter()
                .all(|&k| self.get(k) == Some(0))
            && self.iter().all(|(k, c)| k == Pin || c.unwrap_or(0) == 0)
    }
}

/// What one scrape's walks found about program holders; each field is
/// `None` when its source was off or failed.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Program files in fd tables (iter/task_file).
    pub files: Option<Vec<ObjectFile>>,
    /// For each pinned program inode (deduplicated by (dev, ino)): its id.
    pub pins: Option<Vec<u32>>,
    /// For each link: the id of its program.
    pub links: Option<Vec<u32>>,
    /// For each `prog_array` slot: the id of the program it holds.
    pub slots: Option<Vec<u32>>,
    /// For each program file in an io_uring table: (file address, program
    /// id), with repeats.
    pub io_uring: Option<Vec<(u64, u32)>>,
    /// Program files in flight: (file address, program id), with repeats.
    pub inflight: Option<Vec<(u64, u32)>>,
    /// Program references held by other programs and tracing links.
    pub targets: Option<Vec<Attachment>>,
    /// Attachment readers' findings, by kind; a kind absent was not read
    /// (off, failed, or not available on this kernel).
    pub attach: BTreeMap<ProgHolderKind, AttachSource>,
    /// Kinds whose source saw only part of the node this scrape.
    pub incomplete: Vec<ProgHolderKind>,
}

impl Observed {
    /// Whether `kind`'s source ran (its counts are numbers, maybe lower
    /// bounds).
    pub fn known(&self, k: ProgHolderKind) -> bool {
        match k {
            ProgHolderKind::File => self.files.is_some(),
            ProgHolderKind::Pin => self.pins.is_some(),
            ProgHolderKind::Link => self.links.is_some(),
            ProgHolderKind::ProgArray => self.slots.is_some(),
            ProgHolderKind::IoUring => self.files.is_some() && self.io_uring.is_some(),
            ProgHolderKind::Inflight => self.files.is_some() && self.inflight.is_some(),
            ProgHolderKind::Program => self.targets.is_some(),
            k => self.attach.contains_key(&k),
        }
    }

    /// Whether `kind`'s source ran and saw the whole node.
    pub fn complete(&self, k: ProgHolderKind) -> bool {
        self.known(k)
            && !self.incomplete.contains(&k)
            && self.attach.get(&k).is_none_or(|s| s.complete)
    }

    /// Every attachment and program-held reference found, in one list
    /// (indexes into it name attachment roots).
    pub fn attachments(&self) -> Vec<Attachment> {
        self.targets
            .iter()
            .flatten()
            .chain(self.attach.values().flat_map(|s| s.found.iter()))
            .cloned()
            .collect()
    }
}

/// Per-program holder counts for every program in `progs`.
pub fn holders(progs: &[ProgRecord], obs: &Observed) -> IdMap<ProgHolders> {
    let zero = ProgHolders {
        counts: ProgHolderKind::ALL.map(|k| obs.known(k).then_some(0)),
        ..Default::default()
    };
    let base_exact = ProgHolderKind::BASE.iter().all(|&k| obs.complete(k));
    let mut out: IdMap<ProgHolders> = progs
        .iter()
        .map(|p| {
            let (kinds, unread) = attach_kinds(p.prog_type);
            let exact = base_exact && unread.is_empty() && kinds.iter().all(|&k| obs.complete(k));
            (
                p.id,
                ProgHolders {
                    exact,
                    ..zero.clone()
                },
            )
        })
        .collect();
    let mut add = |kind: ProgHolderKind, id: u32| {
        if let Some(Some(c)) = out.get_mut(&id).map(|h| h.counts[kind as usize].as_mut()) {
            *c = c.saturating_add(1);
        }
    };
    // Distinct files: dup, fork and SCM_RIGHTS share one struct file.
    let mut seen = rustc_hash::FxHashSet::default();
    for f in obs.files.iter().flatten() {
        if f.kind == ObjectKind::Program && seen.insert(f.file_ptr) {
            add(ProgHolderKind::File, f.id);
        }
    }
    // Files only rings or messages in flight hold (in no fd table), once
    // each.
    for (kind, held) in [
        (ProgHolderKind::IoUring, &obs.io_uring),
        (ProgHolderKind::Inflight, &obs.inflight),
    ] {
        for &(ptr, id) in held.iter().flatten() {
            if seen.insert(ptr) {
                add(kind, id);
            }
        }
    }
    for (kind, ids) in [
        (ProgHolderKind::Pin, &obs.pins),
        (ProgHolderKind::Link, &obs.links),
        (ProgHolderKind::ProgArray, &obs.slots),
    ] {
        for &id in ids.iter().flatten() {
            add(kind, id);
        }
    }
    for a in obs
        .targets
        .iter()
        .flatten()
        .chain(obs.attach.values().flat_map(|s| s.found.iter()))
    {
        add(a.kind, a.prog_id);
    }
    out
}

/// Programs whose every file holder is a proven peer (another instance of
/// this exporter, by executable: see the census): that instance's own, as
/// for maps.
pub fn peer_programs(
    files: &[ObjectFile],
    peers: &rustc_hash::FxHashSet<u32>,
    me: u32,
) -> HashSet<u32> {
    let mut peer: IdMap<bool> = IdMap::default();
    for f in files.iter().filter(|f| f.kind == ObjectKind::Program) {
        let is_peer = f.tgid != me && peers.contains(&f.tgid);
        *peer.entry(f.id).or_insert(true) &= is_peer;
    }
    peer.into_iter()
        .filter(|(_, p)| *p)
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn prog(id: u32, refcnt: i64, maps: &[u32]) -> ProgRecord {
        ProgRecord {
            prog_ptr: 0xffff_0000 + id as u64,
            refcnt,
            load_time_ns: 0,
            memlock: 4096,
            id,
            prog_type: 1,
            expected_attach_type: 0,
            used_map_cnt: maps.len() as u32,
            tag: [0; 8],
            name: format!("p{id}"),
            map_ids: maps.to_vec(),
            dst_prog_id: None,
        }
    }

    fn file(ptr: u64, id: u32, tgid: u32, comm: &[u8]) -> ObjectFile {
        ObjectFile {
            kind: ObjectKind::Program,
            id,
            file_ptr: ptr,
            cgroup_id: 0,
            tgid,
            pid: tgid,
            fd: 3,
            comm: comm.to_vec(),
        }
    }

    #[test]
    fn holders_count_distinct_files_pins_links_and_slots() {
        let progs = [prog(1, 5, &[]), prog(2, 1, &[])];
        let mut link_file = file(0x30, 1, 10, b"x");
        link_file.kind = ObjectKind::Link;
        let obs = Observed {
            // One file shared by two fds (dup), one more file; link files
            // are not program files.
            files: Some(vec![
                file(0x10, 1, 10, b"x"),
                file(0x10, 1, 11, b"x"),
                file(0x20, 1, 10, b"x"),
                link_file,
            ]),
            pins: Some(vec![1, 2]),
            links: Some(vec![1]),
            slots: Some(vec![1, 99]),
            io_uring: Some(vec![(0x20, 1), (0x40, 2), (0x40, 2)]),
            ..Default::default()
        };
        let h = holders(&progs, &obs);
        let one = &h[&1];
        // A ring holding a file also in an fd table adds nothing; program 2's
        // file is in a ring only (twice): one holder.
        assert_eq!(one.get(ProgHolderKind::IoUring), Some(0));
        assert_eq!(h[&2].get(ProgHolderKind::IoUring), Some(1));
        assert_eq!(one.get(ProgHolderKind::File), Some(2));
        assert_eq!(one.get(ProgHolderKind::Pin), Some(1));
        assert_eq!(one.get(ProgHolderKind::Link), Some(1));
        assert_eq!(one.get(ProgHolderKind::ProgArray), Some(1));
        assert_eq!(one.unexplained(5), Some(0));
        assert!(!one.pins_only());
        assert!(!h[&2].pins_only());
        assert_eq!(h[&2].unexplained(1), Some(0));
    }

    #[test]
    fn an_unexplained_program_reference_is_withheld_never_guessed() {
        let progs = [prog(1, 3, &[])];
        let obs = Observed {
            files: Some(vec![file(0x10, 1, 10, b"x")]),
            pins: Some(vec![]),
            links: Some(vec![]),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
            ..Default::default()
        };
        // Two references beyond one file: an attachment this build cannot
        // read may hold them.
        assert_eq!(holders(&progs, &obs)[&1].unexplained(3), None);
        // A source that failed reads unknown, not zero.
        let obs = Observed { pins: None, ..obs };
        let h = &holders(&progs, &obs)[&1];
        assert_eq!(h.get(ProgHolderKind::Pin), None);
        assert!(!h.pins_only());
    }

    fn all_read() -> Observed {
        let mut attach = BTreeMap::new();
        for k in ProgHolderKind::ALL
            .into_iter()
            .filter(|k| k.is_attachment())
        {
            attach.insert(
                k,
                AttachSource {
                    complete: true,
                    ..Default::default()
                },
            );
        }
        Observed {
            files: Some(vec![]),
            pins: Some(vec![]),
            links: Some(vec![]),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
            inflight: Some(vec![]),
            targets: Some(vec![]),
            attach,
            incomplete: vec![],
        }
    }

    fn xdp_on(prog_id: u32, ifindex: u32) -> Attachment {
        Attachment {
            prog_id,
            kind: ProgHolderKind::Xdp,
            held_by: vec![AttachedBy::Kernel],
            target: format!("ifindex {ifindex}"),
        }
    }

    #[test]
    fn a_count_is_exact_only_when_every_source_of_the_type_was_read() {
        let mut xdp = prog(1, 3, &[]);
        xdp.prog_type = 6;
        let mut obs = all_read();
        obs.attach
            .get_mut(&ProgHolderKind::Xdp)
            .unwrap()
            .found
            .push(xdp_on(1, 2));
        obs.pins = Some(vec![1]);
        // Pin and device explain 2 of 3: the third is unexplained, exactly.
        let h = &holders(&[xdp.clone()], &obs)[&1];
        assert_eq!(h.get(ProgHolderKind::Xdp), Some(1));
        assert_eq!(h.unexplained(3), Some(1));
        assert!(!h.pins_only());
        // A device source that saw only part of the node withholds it...
        let mut part = obs.clone();
        part.attach.get_mut(&ProgHolderKind::Xdp).unwrap().complete = false;
        assert_eq!(holders(&[xdp.clone()], &part)[&1].unexplained(3), None);
        // ...and so does an unread devmap source, which XDP programs can be
        // held by; a cgroup source, which cannot hold them, does not.
        let mut no_devmap = obs.clone();
        no_devmap.attach.remove(&ProgHolderKind::Devmap);
        assert_eq!(holders(&[xdp.clone()], &no_devmap)[&1].unexplained(3), None);
        let mut no_cgroup = obs.clone();
        no_cgroup.attach.remove(&ProgHolderKind::Cgroup);
        assert_eq!(holders(&[xdp], &no_cgroup)[&1].unexplained(3), Some(1));
        // A type an unread source can hold (socket filters: xt_bpf) is never
        // given a positive count.
        let mut filter = prog(2, 2, &[]);
        filter.prog_type = 1;
        assert_eq!(holders(&[filter], &obs)[&2].unexplained(2), None);
        // A references settled meanwhile are not unexplained.
        let mut tracing = prog(3, 2, &[]);
        tracing.prog_type = 26;
        let mut h = holders(&[tracing], &obs)[&3].clone();
        assert_eq!(h.unexplained(2), Some(2));
        h.settled = 2;
        assert_eq!(h.unexplained(2), Some(0));
    }

    #[test]
    fn pins_only_means_no_other_holder_was_found() {
        let mut obs = all_read();
        obs.pins = Some(vec![1, 2]);
        obs.attach
            .get_mut(&ProgHolderKind::Xdp)
            .unwrap()
            .found
            .push(xdp_on(2, 1));
        let h = holders(&[prog(1, 1, &[]), prog(2, 2, &[])], &obs);
        assert!(h[&1].pins_only());
        assert!(!h[&2].pins_only());
    }

    #[test]
    fn peer_programs_are_the_ones_only_peers_hold() {
        let files = [
            file(1, 7, 100, b"bpfmap-exporter"),
            file(2, 8, 100, b"bpfmap-exporter"),
            file(3, 8, 200, b"agent"),
            file(4, 9, 1, b"bpfmap-exporter"),
        ];
        // Program 9 is held by this process (pid 1): its own, not a peer's.
        let peers = rustc_hash::FxHashSet::from_iter([100]);
        assert_eq!(peer_programs(&files, &peers, 1), HashSet::from([7]));
        // A process named like the exporter but not proven one is no peer.
        assert!(peer_programs(&files, &Default::default(), 1).is_empty());
    }
}
