//! Files in flight: map files held by SCM_RIGHTS messages that nobody has
//! received yet, found in unix sockets' receive queues by `iter/unix`
//! (5.17+), and the process that owns each receiving socket.
//!
//! Invariants:
//! - a map file is one `struct file` however many fd tables and messages
//!   hold it, so a file already in an fd table or behind a vma is no extra
//!   holder; an in-flight file counts once however many messages carry it;
//! - a unix socket in flight stays in its namespace's socket table until its
//!   last file reference goes, so iter/unix visits it and reports its queue;
//!   a file inside it is received by whoever owns the socket that holds the
//!   in-flight socket (followed up to [`MAX_CHAIN`] levels);
//! - an iter/unix walk sees one network namespace, the one the iterator was
//!   created in: every namespace a process is in is walked from a thread
//!   moved into it ([`walk`]); one that cannot be entered makes the in-flight
//!   source incomplete, and the counts it could explain are withheld.
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::IdMap;
use crate::bpf::census::{FileRecord, InflightRecord};
use crate::bpf::inflight::{self as prog, Inflight};
use crate::sys;

/// Sockets followed from a file's queue to a socket some process owns.
pub const MAX_CHAIN: usize = 8;

/// The process owning a receiving socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub tgid: u32,
    pub comm: Vec<u8>,
    pub cgroup_id: u64,
}

/// One map file in flight that no fd table or vma holds: one holder of kind
/// `inflight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightFile {
    pub file_ptr: u64,
    pub map_id: u32,
    /// The socket whose receive queue holds the file.
    pub queue_ino: u64,
    /// The socket a process owns that will receive it: `queue_ino` itself,
    /// or the socket holding the in-flight socket(s) in `via`. 0 when no
    /// owner was found (a socket with no inode, a chain in flight only).
    pub receiver_ino: u64,
    /// In-flight unix sockets between the file and the receiving socket,
    /// innermost first (`via[0] == queue_ino` when non-empty).
    pub via: Vec<u64>,
    /// The processes with an fd of `receiver_ino` (forks share one socket).
    pub receivers: Vec<Receiver>,
}

/// The sockets whose owners the task walk must name: every queue holding a
/// map file, and every queue holding (transitively) an in-flight socket that
/// holds one.
pub fn receiver_sockets(recs: &[InflightRecord]) -> Vec<u64> {
    let mut want: FxHashSet<u64> = recs
        .iter()
        .filter(|r| r.file_ptr != 0 && r.map_id != 0 && r.sock_ino != 0)
        .map(|r| r.sock_ino)
        .collect();
    for _ in 0..MAX_CHAIN {
        let more: Vec<u64> = recs
            .iter()
            .filter(|r| r.inner_ino != 0 && r.sock_ino != 0)
            .filter(|r| want.contains(&r.inner_ino) && !want.contains(&r.sock_ino))
            .map(|r| r.sock_ino)
            .collect();
        if more.is_empty() {
            break;
        }
        want.extend(more);
    }
    let mut v: Vec<u64> = want.into_iter().collect();
    v.sort_unstable();
    v
}

/// The in-flight map files no fd table or vma holds, each with its receiver.
/// `sockets` are the task walk's socket-owner records; `files` and `vmas`
/// the map files it found in fd tables and behind vmas.
pub fn resolve(
    recs: &[InflightRecord],
    sockets: &[FileRecord],
    files: &[FileRecord],
    vmas: &[FileRecord],
) -> Vec<InflightFile> {
    let held: FxHashSet<u64> = files.iter().chain(vmas).map(|f| f.file_ptr).collect();
    // socket inode -> owning processes (threads and dups fold by tgid).
    let mut owners: FxHashMap<u64, BTreeMap<u32, Receiver>> = FxHashMap::default();
    for s in sockets.iter().filter(|s| s.is_socket()) {
        let e = owners.entry(s.sock_ino).or_default();
        let r = e.entry(s.tgid).or_insert_with(|| Receiver {
            tgid: s.tgid,
            comm: s.comm.clone(),
            cgroup_id: s.cgroup_id,
        });
        if s.pid == s.tgid {
            r.comm = s.comm.clone();
        }
    }
    // in-flight socket inode -> the socket whose queue holds it.
    let mut carried_by: FxHashMap<u64, u64> = FxHashMap::default();
    for r in recs.iter().filter(|r| r.inner_ino != 0 && r.sock_ino != 0) {
        carried_by.entry(r.inner_ino).or_insert(r.sock_ino);
    }
    let mut seen = FxHashSet::default();
    let mut out = Vec::new();
    for r in recs.iter().filter(|r| r.file_ptr != 0 && r.map_id != 0) {
        if held.contains(&r.file_ptr) || !seen.insert(r.file_ptr) {
            continue;
        }
        let mut sock = r.sock_ino;
        let mut via = Vec::new();
        let mut receivers = Vec::new();
        let mut receiver_ino = 0;
        for _ in 0..=MAX_CHAIN {
            if sock == 0 {
                break;
            }
            if let Some(o) = owners.get(&sock) {
                receiver_ino = sock;
                receivers = o.values().cloned().collect();
                break;
            }
            match carried_by.get(&sock) {
                Some(&outer) if !via.contains(&sock) => {
                    via.push(sock);
                    sock = outer;
                }
                _ => break,
            }
        }
        if receiver_ino == 0 {
            via.clear();
        }
        out.push(InflightFile {
            file_ptr: r.file_ptr,
            map_id: r.map_id,
            queue_ino: r.sock_ino,
            receiver_ino,
            via,
            receivers,
        });
    }
    out
}

/// When each in-flight file was first seen, kept across scrapes: a file
/// that stays in the same socket's queue ages; one received (or sent again
/// to another socket) starts over.
#[derive(Debug, Default)]
pub struct Ages {
    first: FxHashMap<(u32, u64, u64), Instant>,
}

impl Ages {
    /// Record this scrape's in-flight files; returns, per map id, how long
    /// its oldest in-flight file has been in flight as far as this process
    /// has seen.
    pub fn update(&mut self, files: &[InflightFile], now: Instant) -> IdMap<Duration> {
        let live: FxHashSet<(u32, u64, u64)> = files
            .iter()
            .map(|f| (f.map_id, f.file_ptr, f.queue_ino))
            .collect();
        self.first.retain(|k, _| live.contains(k));
        let mut oldest: IdMap<Duration> = IdMap::default();
        for k in live {
            let t = *self.first.entry(k).or_insert(now);
            let age = now.saturating_duration_since(t);
            let e = oldest.entry(k.0).or_default();
            *e = (*e).max(age);
        }
        oldest
    }
}

/// The network namespaces processes are in, found from `/proc/<pid>/ns/net`.
#[derive(Debug, Default)]
pub struct NetnsDiscovery {
    /// pid -> its namespace's inode (None: the link is not readable).
    by_pid: FxHashMap<u32, Option<u64>>,
    last_full: Option<Instant>,
}

/// One scrape's namespaces.
#[derive(Debug, Default, Clone)]
pub struct Namespaces {
    /// Every other namespace, with the processes in it (any of them can be
    /// entered through).
    pub others: BTreeMap<u64, Vec<u32>>,
    /// Processes whose namespace link could not be read (ptrace access is
    /// refused, as for an init holding capabilities the exporter lacks).
    pub unknown: Vec<u32>,
}

impl NetnsDiscovery {
    /// How often every process's namespace is read again (new processes are
    /// read on the scrape they first appear in).
    pub const RESCAN: Duration = Duration::from_secs(10);

    pub fn discover(&mut self, proc_root: &Path) -> std::io::Result<Namespaces> {
        let own = std::fs::metadata(proc_root.join("thread-self/ns/net"))?.ino();
        let full = self.last_full.is_none_or(|t| t.elapsed() >= Self::RESCAN);
        if full {
            self.last_full = Some(Instant::now());
        }
        let mut live = FxHashSet::default();
        for ent in std::fs::read_dir(proc_root)?.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            live.insert(pid);
            if !full && self.by_pid.contains_key(&pid) {
                continue;
            }
            match std::fs::metadata(ent.path().join("ns/net")) {
                Ok(md) => {
                    self.by_pid.insert(pid, Some(md.ino()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // gone meanwhile
                Err(_) => {
                    self.by_pid.insert(pid, None);
                }
            }
        }
        self.by_pid.retain(|pid, _| live.contains(pid));
        let mut ns = Namespaces::default();
        for (&pid, ino) in &self.by_pid {
            match ino {
                Some(i) if *i == own => {}
                Some(i) => ns.others.entry(*i).or_default().push(pid),
                None => ns.unknown.push(pid),
            }
        }
        for v in ns.others.values_mut() {
            v.sort_unstable();
        }
        ns.unknown.sort_unstable();
        Ok(ns)
    }
}

/// Socket inodes listed in a `/proc/<pid>/net/unix` text (column 7).
pub fn unix_inodes(text: &str) -> Vec<u64> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
        .collect()
}

/// The namespaces of processes whose namespace link is unreadable, told
/// apart by the unix sockets `/proc/<pid>/net/unix` lists (readable without
/// ptrace access): a namespace with no unix socket has nothing in flight; one
/// whose sockets a known namespace lists is that namespace. Returns how many
/// namespaces are left that no walk covers.
pub fn unknown_namespaces(proc_root: &Path, ns: &Namespaces) -> usize {
    if ns.unknown.is_empty() {
        return 0;
    }
    let read = |pid: &str| {
        std::fs::read_to_string(proc_root.join(pid).join("net/unix"))
            .map(|t| unix_inodes(&t))
            .ok()
    };
    let mut known: Option<FxHashSet<u64>> = None;
    let mut uncovered: FxHashSet<u64> = FxHashSet::default();
    for pid in &ns.unknown {
        let Some(inos) = read(&pid.to_string()) else {
            continue; // gone meanwhile
        };
        let Some(&first) = inos.first() else {
            continue; // no unix socket: nothing in flight there
        };
        let k = known.get_or_insert_with(|| {
            let mut s: FxHashSet<u64> = read("thread-self")
                .unwrap_or_default()
                .into_iter()
                .collect();
            for pids in ns.others.values() {
                if let Some(p) = pids.first() {
                    s.extend(read(&p.to_string()).unwrap_or_default());
                }
            }
            s
        });
        if !k.contains(&first) {
            uncovered.insert(first);
        }
    }
    uncovered.len()
}

/// What one in-flight walk of every namespace found.
#[derive(Debug, Default, Clone)]
pub struct Walk {
    pub records: Vec<InflightRecord>,
    /// Namespaces walked (the own one included).
    pub walked: u32,
    /// Namespaces that exist but could not be walked.
    pub unreachable: u32,
    /// A socket's queue held more than one walk reads, or a socket's records
    /// did not fit the kernel's iterator buffer.
    pub truncated: bool,
}

impl Walk {
    pub fn complete(&self) -> bool {
        self.unreachable == 0 && !self.truncated
    }
}

/// Walk the own namespace on this thread and every other one from a thread
/// moved into it.
pub fn walk(
    p: &Inflight,
    ns: &Namespaces,
    unknown_uncovered: usize,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Walk> {
    let mut w = Walk {
        unreachable: unknown_uncovered as u32,
        ..Default::default()
    };
    let lost_before = p.lost_writes();
    w.records = prog::read(p.open()?, buf)?;
    w.walked = 1;
    if !ns.others.is_empty() {
        let (files, unreachable) = std::thread::scope(|s| {
            s.spawn(|| open_in_namespaces(p, &ns.others))
                .join()
                .unwrap_or_else(|_| (Vec::new(), ns.others.len() as u32))
        });
        w.unreachable += unreachable;
        for f in files {
            w.records.extend(prog::read(f, buf)?);
            w.walked += 1;
        }
    }
    w.truncated = w.records.iter().any(|r| r.truncated) || p.lost_writes() != lost_before;
    Ok(w)
}

/// Runs on a thread of its own: enter each namespace (through any of its
/// processes), create an iterator there, come back.
fn open_in_namespaces(p: &Inflight, others: &BTreeMap<u64, Vec<u32>>) -> (Vec<std::fs::File>, u32) {
    let Ok(home) = std::fs::File::open("/proc/thread-self/ns/net") else {
        return (Vec::new(), others.len() as u32);
    };
    let mut files = Vec::new();
    let mut unreachable = 0;
    for (ino, pids) in others {
        let mut opened = None;
        for pid in pids {
            let Ok(f) = std::fs::File::open(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            // The process may have moved since discovery.
            if f.metadata().map(|m| m.ino()).ok() != Some(*ino) {
                continue;
            }
            opened = Some(f);
            break;
        }
        let Some(nsf) = opened else {
            unreachable += 1;
            continue;
        };
        if let Err(e) = sys::setns_net(nsf.as_fd()) {
            tracing::debug!(netns = ino, error = %e, "entering network namespace");
            unreachable += 1;
            continue;
        }
        match p.open() {
            Ok(f) => files.push(f),
            Err(_) => unreachable += 1,
        }
        if sys::setns_net(home.as_fd()).is_err() {
            // This thread ends here; the namespaces left are not walked.
            unreachable += others.len() as u32 - files.len() as u32 - unreachable;
            break;
        }
    }
    (files, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(file_ptr: u64, sock: u64, inner: u64, map_id: u32) -> InflightRecord {
        InflightRecord {
            file_ptr,
            sock_ino: sock,
            inner_ino: inner,
            map_id,
            prog: None,
            truncated: false,
        }
    }

    fn owner(tgid: u32, pid: u32, sock: u64, comm: &[u8]) -> FileRecord {
        FileRecord {
            file_ptr: 0x5000 + sock,
            cgroup_id: 9,
            tgid,
            pid,
            fd: 3,
            map_id: 0,
            comm: comm.to_vec(),
            vm_start: 0,
            vm_end: 0,
            sock_ino: sock,
        }
    }

    fn mapfile(ptr: u64, id: u32) -> FileRecord {
        FileRecord {
            map_id: id,
            sock_ino: 0,
            file_ptr: ptr,
            ..owner(1, 1, 0, b"x")
        }
    }

    #[test]
    fn direct_receiver_is_named() {
        let recs = vec![rec(0xa, 100, 0, 7)];
        assert_eq!(receiver_sockets(&recs), vec![100]);
        let got = resolve(
            &recs,
            &[owner(42, 43, 100, b"worker"), owner(42, 42, 100, b"recv")],
            &[],
            &[],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].map_id, got[0].receiver_ino, got[0].queue_ino),
            (7, 100, 100)
        );
        assert!(got[0].via.is_empty());
        assert_eq!(got[0].receivers.len(), 1);
        assert_eq!(got[0].receivers[0].comm, b"recv".to_vec(), "leader's comm");
    }

    #[test]
    fn file_inside_an_in_flight_socket_is_received_by_the_outer_owner() {
        // Map file in socket 200's queue; socket 200 is in flight in 100's
        // queue; 100 is owned by pid 5.
        let recs = vec![rec(0xb, 200, 0, 8), rec(0x200, 100, 200, 0)];
        assert_eq!(receiver_sockets(&recs), vec![100, 200]);
        let got = resolve(&recs, &[owner(5, 5, 100, b"outer")], &[], &[]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].queue_ino, got[0].receiver_ino), (200, 100));
        assert_eq!(got[0].via, vec![200]);
        assert_eq!(got[0].receivers[0].tgid, 5);
    }

    #[test]
    fn files_held_elsewhere_or_sent_twice_count_once() {
        // 0xc is also in an fd table (the sender kept it): no extra holder.
        // 0xd was sent twice: one file.
        let recs = vec![rec(0xc, 1, 0, 3), rec(0xd, 1, 0, 3), rec(0xd, 2, 0, 3)];
        let got = resolve(&recs, &[], &[mapfile(0xc, 3)], &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].file_ptr, 0xd);
        assert_eq!(got[0].receiver_ino, 0, "no owner found");
        let got = resolve(&recs, &[], &[], &[mapfile(0xd, 3)]);
        assert_eq!(
            got.iter().map(|f| f.file_ptr).collect::<Vec<_>>(),
            vec![0xc]
        );
    }

    #[test]
    fn a_cycle_of_sockets_in_flight_ends() {
        // 10 carries 20, 20 carries 10 (the unix GC's case), no owner.
        let recs = vec![
            rec(0xe, 10, 0, 4),
            rec(0x10, 20, 10, 0),
            rec(0x20, 10, 20, 0),
        ];
        let got = resolve(&recs, &[], &[], &[]);
        assert_eq!((got[0].receiver_ino, got[0].via.len()), (0, 0));
        assert_eq!(receiver_sockets(&recs), vec![10, 20]);
    }

    #[test]
    fn ages_grow_while_a_file_stays_and_restart_when_it_moves() {
        let t0 = Instant::now();
        let mut a = Ages::default();
        let f = |sock| InflightFile {
            file_ptr: 0xa,
            map_id: 7,
            queue_ino: sock,
            receiver_ino: sock,
            via: vec![],
            receivers: vec![],
        };
        assert_eq!(a.update(&[f(1)], t0)[&7], Duration::ZERO);
        assert_eq!(
            a.update(&[f(1)], t0 + Duration::from_secs(30))[&7],
            Duration::from_secs(30)
        );
        // Received, then sent to another socket: a new stay.
        assert_eq!(
            a.update(&[f(2)], t0 + Duration::from_secs(40))[&7],
            Duration::ZERO
        );
        assert!(a.update(&[], t0 + Duration::from_secs(50)).is_empty());
        assert!(a.first.is_empty());
    }

    #[test]
    fn proc_net_unix_inodes_parse() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000097cdad24: 00000003 00000000 00000000 0001 03 37200\n\
                 000000008b000adc: 00010000 00000000 00010000 0001 01   633 /run/x.sock\n";
        assert_eq!(unix_inodes(t), vec![37200, 633]);
    }
}
