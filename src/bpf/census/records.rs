//! The records that bpf/census.bpf.c writes with bpf_seq_write(), decoded
//! with the shared reader. Layouts mirror bpf/census.h, whose static
//! asserts hold the C side to these sizes. Pure code, unit-tested.
use crate::bpf::records::{stream, RecordError};

pub const MAP_REC_SIZE: usize = 136;
pub const FILE_REC_SIZE: usize = 80;
pub const PROG_REC_SIZE: usize = 336;
pub const URING_REC_SIZE: usize = 64;
pub const LINK_REC_SIZE: usize = 112;

/// One live link as the `iter/bpf_link` program saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub id: u32,
    /// `enum bpf_link_type`.
    pub link_type: u32,
    /// The program the link holds (0 for none).
    pub prog_id: u32,
    /// An iterator link bound to a map: that map's id.
    pub iter_map_id: Option<u32>,
    /// A tracing link to a program: that program's id (the link holds it).
    pub tgt_prog_id: Option<u32>,
    /// A cgroup link: the cgroup's id (kernfs id, the inode number of its
    /// directory) and the attach type.
    pub cgroup: Option<(u64, u32)>,
    /// A perf event link: its `struct perf_event`, whose `prog` holds one
    /// more reference on the program while the link lives.
    pub perf_event: Option<u64>,
    /// What the link is attached to, as far as this kernel tells.
    pub target: LinkTarget,
}

/// What a link is attached to: each field is `None` where the kernel does
/// not tell it (this link type has no such target, or this kernel's
/// structs do not hold it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    /// `enum bpf_attach_type`.
    pub attach_type: Option<u32>,
    /// An xdp, tcx or netkit link's device.
    pub device: Option<LinkDevice>,
    /// The network namespace (inode) of that device, of a netns link, or
    /// of a netfilter link.
    pub netns: Option<u32>,
    /// A tracing link's attach point: the BTF object id (1 is vmlinux; a
    /// program's id when attached to a program) and the BTF id in it.
    pub trampoline: Option<(u32, u32)>,
    /// A struct_ops link's map.
    pub map_id: Option<u32>,
    pub netfilter: Option<NetfilterHook>,
    /// A raw tracepoint link's tracepoint.
    pub tracepoint: Option<String>,
    /// The link's target is gone (its device unregistered, its namespace
    /// freed) or it was detached (BPF_LINK_DETACH): it still holds its
    /// program, which runs nowhere.
    pub detached: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkDevice {
    pub ifindex: u32,
    /// The name when the link was read (`None` where not read).
    pub name: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetfilterHook {
    /// Protocol family (`NFPROTO_*`).
    pub pf: u32,
    pub hooknum: u32,
    pub priority: i32,
    /// The link turned on IP defragmentation (`BPF_F_NETFILTER_IP_DEFRAG`).
    pub defrag: bool,
}

/// `BPF_LINK_TYPE_ITER`: a template for iterator instances, attached to
/// nothing.
pub const LINK_TYPE_ITER: u32 = 4;
/// `BPF_LINK_TYPE_NETNS`: a program attached to a network namespace.
pub const LINK_TYPE_NETNS: u32 = 5;
/// `BPF_LINK_TYPE_XDP`: an XDP program attached to a device.
pub const LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_PERF_EVENT`: a program attached to a perf event.
pub const LINK_TYPE_PERF_EVENT: u32 = 7;

impl LinkRecord {
    /// An iterator link; every other type attaches its program somewhere.
    pub fn is_iter(&self) -> bool {
        self.link_type == LINK_TYPE_ITER
    }

    /// The map this link holds a reference on: an iterator link's map, or
    /// a struct_ops link's map while it is attached (the kernel drops that
    /// reference when the link is detached or its map replaced).
    pub fn held_map_id(&self) -> Option<u32> {
        self.iter_map_id.or(self.target.map_id).filter(|&m| m != 0)
    }

    /// Attached in the kernel: not an iterator link, and its target was not
    /// read as gone or detached.
    pub fn is_attached(&self) -> bool {
        !self.is_iter() && !self.target.detached
    }
}

/// `BPFMAP_LINK_*` flags of `link_rec.target` (bpf/census.h).
mod link_flags {
    pub const ATTACH_TYPE: u32 = 1;
    pub const DEVICE: u32 = 2;
    pub const NETNS: u32 = 4;
    pub const TRAMPOLINE: u32 = 8;
    pub const MAP: u32 = 16;
    pub const NETFILTER: u32 = 32;
    pub const DETACHED: u32 = 64;
    pub const TP_NAME: u32 = 128;
}

fn decode_target(b: &crate::bpf::records::Rec<'_>) -> LinkTarget {
    use link_flags::*;
    let f = b.u32(40);
    let has = |bit: u32| f & bit != 0;
    let detached = has(DETACHED);
    let name = String::from_utf8_lossy(b.cstr(80, 32)).into_owned();
    LinkTarget {
        attach_type: has(ATTACH_TYPE).then(|| b.u32(20)),
        device: (has(DEVICE) && !detached).then(|| LinkDevice {
            ifindex: b.u32(44),
            name: (!name.is_empty()).then(|| name.clone()),
        }),
        netns: ((has(DEVICE) || has(NETNS) || has(NETFILTER)) && b.u32(48) != 0).then(|| b.u32(48)),
        trampoline: has(TRAMPOLINE).then(|| (b.u32(52), b.u32(56))),
        map_id: (has(MAP) && !detached).then(|| b.u32(60)),
        netfilter: has(NETFILTER).then(|| NetfilterHook {
            pf: b.u32(64),
            hooknum: b.u32(68),
            priority: b.u32(72) as i32,
            defrag: b.u32(76) != 0,
        }),
        tracepoint: has(TP_NAME).then_some(name),
        detached,
    }
}

/// A program a sockmap or sockhash slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockmapSlot {
    pub map_id: u32,
    /// 0 msg_parser, 1 stream_parser, 2 stream_verdict, 3 skb_verdict.
    pub slot: u32,
    pub prog_id: u32,
    /// The sockmap link that set it (0: BPF_PROG_ATTACH).
    pub link_id: u32,
}

/// The sockmap slots `iter/bpf_map` output lists (the same buffer
/// [`decode_maps`] reads).
pub fn decode_sockmap_slots(buf: &[u8]) -> Result<Vec<SockmapSlot>, RecordError> {
    let mut out = Vec::new();
    for b in stream("iter/bpf_map output", buf, MAP_REC_SIZE)? {
        for slot in 0..4u32 {
            let prog_id = b.u32(104 + 4 * slot as usize);
            if prog_id != 0 {
                out.push(SockmapSlot {
                    map_id: b.u32(40),
                    slot,
                    prog_id,
                    link_id: b.u32(120 + 4 * slot as usize),
                });
            }
        }
    }
    Ok(out)
}

/// Decode `iter/bpf_link` output.
pub fn decode_links(buf: &[u8]) -> Result<Vec<LinkRecord>, RecordError> {
    Ok(stream("iter/bpf_link output", buf, LINK_REC_SIZE)?
        .map(|b| {
            let map = b.u32(12);
            let tgt = b.u32(16);
            let cgroup = b.u64(24);
            LinkRecord {
                id: b.u32(0),
                link_type: b.u32(4),
                prog_id: b.u32(8),
                iter_map_id: (map != 0).then_some(map),
                tgt_prog_id: (tgt != 0).then_some(tgt),
                cgroup: (cgroup != 0).then_some((cgroup, b.u32(20))),
                perf_event: Some(b.u64(32)).filter(|&p| p != 0),
                target: decode_target(&b),
            }
        })
        .collect())
}
/// The maps a program record lists at most (the kernel's MAX_USED_MAPS).
pub const PROG_MAX_MAPS: usize = 64;
pub const INFLIGHT_REC_SIZE: usize = 32;

/// One live map as the `iter/bpf_map` program saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRecord {
    pub map_ptr: u64,
    /// True refcount: the raw value minus the iterator cursor's own reference.
    pub refcnt: i64,
    pub usercnt: i64,
    /// Live elements (hash family, kernel 6.6+); `None` where unknown.
    pub elem_count: Option<i64>,
    pub map_extra: u64,
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub frozen: bool,
    pub is_outer: bool,
    pub name: String,
    /// The memory cgroup the map is charged to: its creator's.
    pub creator: Creator,
}

/// A map's creator as the kernel's memory accounting records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Creator {
    /// No memcg accounting of maps on this kernel (before 5.11, no CONFIG_MEMCG).
    #[default]
    Unknown,
    /// Charged to no cgroup: created from the root cgroup (the host).
    Root,
    /// Charged to the creating cgroup, which still exists (its kernfs id).
    Live(u64),
    /// The creating cgroup was removed; the id is the ancestor now charged
    /// on 5.19+, the removed cgroup itself on 5.11-5.18.
    Gone(u64),
}

impl Creator {
    fn decode(id: u64, state: u32) -> Creator {
        match state {
            1 => Creator::Root,
            2 => Creator::Live(id),
            3 => Creator::Gone(id),
            _ => Creator::Unknown,
        }
    }

    /// The kernfs id of the charged cgroup, if any.
    pub fn cgroup_id(&self) -> Option<u64> {
        match *self {
            Creator::Live(id) | Creator::Gone(id) => Some(id),
            _ => None,
        }
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, Creator::Gone(_))
    }
}

/// One map file found in a task's fd table (`fd = Some`) or behind a vma.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub file_ptr: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub fd: u32,
    pub map_id: u32,
    /// Raw comm bytes up to the first NUL; may be any bytes, not only UTF-8.
    pub comm: Vec<u8>,
    /// The mapped range `[vm_start, vm_end)` of vma records (0 for fds).
    pub vm_start: u64,
    pub vm_end: u64,
    /// Socket-owner records (`map_id` 0): the inode of the socket this fd
    /// refers to, a receiver of files in flight. 0 for map files.
    pub sock_ino: u64,
}

impl FileRecord {
    /// Whether this is an fd of a receiving socket, not of a map file.
    pub fn is_socket(&self) -> bool {
        self.map_id == 0 && self.sock_ino != 0
    }
}

/// One file held by an SCM_RIGHTS message in a unix socket's receive queue
/// (`iter/unix`), or, with `file_ptr` 0, a socket whose walk was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightRecord {
    pub file_ptr: u64,
    /// Inode of the socket whose receive queue holds the file (0: a socket
    /// with no inode).
    pub sock_ino: u64,
    /// A unix socket file in flight: that socket's inode (its own queue may
    /// hold more files). 0 for map files.
    pub inner_ino: u64,
    /// A map file: its map id. 0 for socket files and program references.
    pub map_id: u32,
    /// A program reference in flight: a program file, or what a socket or
    /// perf event file keeps.
    pub prog: Option<InflightProg>,
    /// The socket's queue held more messages or files than one walk reads.
    pub truncated: bool,
}

/// A program reference held by a file in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflightProg {
    /// `None` for a program file; else what the socket or perf event
    /// file keeps.
    pub attach: Option<AttachKind>,
    pub prog_id: u32,
    /// The kernel object holding the reference (0 for a program file).
    pub obj: u64,
    /// A perf event with inherited child events.
    pub children: bool,
}

/// What keeps a program reference inside a socket or perf event file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttachKind {
    /// `event->prog` of a perf event.
    PerfEvent,
    /// `sk->sk_filter->prog`: one per `struct sk_filter`.
    SockFilter,
    /// `sk->sk_reuseport_cb->prog`: one per reuseport group.
    Reuseport,
}

impl AttachKind {
    fn from_obj_kind(k: u32) -> Option<AttachKind> {
        match k {
            4 => Some(AttachKind::PerfEvent),
            5 => Some(AttachKind::SockFilter),
            6 => Some(AttachKind::Reuseport),
            _ => None,
        }
    }
}

/// `BPFMAP_INFLIGHT_*` flags of program references.
const INFLIGHT_PROG: u32 = 2;
const INFLIGHT_SOCK_FILTER: u32 = 4;
const INFLIGHT_REUSEPORT: u32 = 8;
const INFLIGHT_PERF: u32 = 16;
const INFLIGHT_CHILDREN: u32 = 32;

/// Decode `iter/unix` output (bpf/inflight.bpf.c).
pub fn decode_inflight(buf: &[u8]) -> Result<Vec<InflightRecord>, RecordError> {
    Ok(stream("iter/unix output", buf, INFLIGHT_REC_SIZE)?
        .map(|b| {
            let flags = b.u32(28);
            let attach = if flags & INFLIGHT_PERF != 0 {
                Some(Some(AttachKind::PerfEvent))
            } else if flags & INFLIGHT_SOCK_FILTER != 0 {
                Some(Some(AttachKind::SockFilter))
            } else if flags & INFLIGHT_REUSEPORT != 0 {
                Some(Some(AttachKind::Reuseport))
            } else if flags & INFLIGHT_PROG != 0 {
                Some(None)
            } else {
                None
            };
            let prog = attach.map(|attach| InflightProg {
                attach,
                prog_id: b.u32(24),
                obj: b.u64(16),
                children: flags & INFLIGHT_CHILDREN != 0,
            });
            InflightRecord {
                file_ptr: b.u64(0),
                sock_ino: b.u64(8),
                inner_ino: if prog.is_some() { 0 } else { b.u64(16) },
                map_id: if prog.is_some() { 0 } else { b.u32(24) },
                prog,
                truncated: flags & 1 != 0,
            }
        })
        .collect())
}

/// Decode `iter/bpf_map` output. The iterator's cursor holds one reference on
/// the map it is visiting, so one is subtracted from the raw refcount.
#[cfg(any(test, feature = "testing"))]
pub fn decode_maps(buf: &[u8]) -> Result<Vec<MapRecord>, RecordError> {
    decode_maps_into(buf, Vec::new())
}

/// As [`decode_maps`], into `spare`'s memory (its records are dropped
/// first).
pub fn decode_maps_into(
    buf: &[u8],
    mut spare: Vec<MapRecord>,
) -> Result<Vec<MapRecord>, RecordError> {
    spare.clear();
    spare.extend(stream("iter/bpf_map output", buf, MAP_REC_SIZE)?.map(|b| {
        let elem = b.i64(24);
        MapRecord {
            map_ptr: b.u64(0),
            refcnt: b.i64(8) - 1,
            usercnt: b.i64(16),
            elem_count: (elem >= 0).then_some(elem),
            map_extra: b.u64(32),
            id: b.u32(40),
            map_type: b.u32(44),
            key_size: b.u32(48),
            value_size: b.u32(52),
            max_entries: b.u32(56),
            map_flags: b.u32(60),
            frozen: b.u32(64) != 0,
            is_outer: b.u32(68) != 0,
            name: String::from_utf8_lossy(b.cstr(72, 16)).into_owned(),
            creator: Creator::decode(b.u64(88), b.u32(96)),
        }
    }));
    Ok(spare)
}

/// The kind of BPF object behind a program-or-link file (`file_rec.obj_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Program,
    Link,
}

/// A program or link file in a task's fd table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    pub kind: ObjectKind,
    /// The program's or link's id.
    pub id: u32,
    pub file_ptr: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub fd: u32,
    pub comm: Vec<u8>,
}

/// An io_uring's fd in a task's fd table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingFd {
    pub tgid: u32,
    pub fd: u32,
    pub file_ptr: u64,
}

/// A program reference a socket or perf event file in a task's fd table
/// keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachFile {
    pub kind: AttachKind,
    pub prog_id: u32,
    /// The kernel object holding the reference: the perf event, the
    /// `sk_filter`, the reuseport group (one reference each, however many
    /// files reach it).
    pub obj: u64,
    pub file_ptr: u64,
    pub tgid: u32,
    pub fd: u32,
    /// A perf event's `attr.type`; a socket's family | type << 16.
    pub attr: u32,
    /// A perf event's `attr.config`.
    pub config: u64,
    /// A perf event with inherited child events (each may hold the
    /// program too).
    pub children: bool,
}

/// One task walk's output: map files (and receiving sockets) apart from
/// program and link files, the io_uring fds seen, and the program
/// references socket and perf event files keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFiles {
    pub maps: Vec<FileRecord>,
    pub objects: Vec<ObjectFile>,
    pub rings: Vec<RingFd>,
    pub attached: Vec<AttachFile>,
}

/// Decode `iter/task_file` or `iter/task_vma` output.
#[cfg(any(test, feature = "testing"))]
pub fn decode_files(buf: &[u8]) -> Result<TaskFiles, RecordError> {
    decode_files_into(buf, Vec::new())
}

/// As [`decode_files`], with the map files in `spare`'s memory (its
/// records are dropped first).
pub fn decode_files_into(buf: &[u8], mut spare: Vec<FileRecord>) -> Result<TaskFiles, RecordError> {
    // Most records of a walk are map files: room for every record, so the
    // vector is never regrown and copied (room left unused is never
    // touched, so never faulted in).
    spare.clear();
    spare.reserve_exact(buf.len() / FILE_REC_SIZE);
    let mut out = TaskFiles {
        maps: spare,
        ..Default::default()
    };
    for b in stream("iter/task_file output", buf, FILE_REC_SIZE)? {
        let kind = match b.u32(72) {
            0 => None,
            1 => Some(ObjectKind::Program),
            2 => Some(ObjectKind::Link),
            3 => {
                out.rings.push(RingFd {
                    tgid: b.u32(16),
                    fd: b.u32(24),
                    file_ptr: b.u64(0),
                });
                continue;
            }
            k @ 4..=6 => {
                out.attached.push(AttachFile {
                    kind: AttachKind::from_obj_kind(k).expect("4..=6"),
                    prog_id: b.u32(28),
                    obj: b.u64(48),
                    file_ptr: b.u64(0),
                    tgid: b.u32(16),
                    fd: b.u32(24),
                    attr: b.u32(76),
                    config: b.u64(56),
                    children: b.u64(64) & 1 != 0,
                });
                continue;
            }
            k => {
                return Err(RecordError::Range {
                    what: "iter/task_file output: object kind",
                    value: k as u64,
                })
            }
        };
        match kind {
            None => out.maps.push(FileRecord {
                file_ptr: b.u64(0),
                cgroup_id: b.u64(8),
                tgid: b.u32(16),
                pid: b.u32(20),
                fd: b.u32(24),
                map_id: b.u32(28),
                comm: b.cstr(32, 16).to_vec(),
                vm_start: b.u64(48),
                vm_end: b.u64(56),
                sock_ino: b.u64(64),
            }),
            Some(kind) => out.objects.push(ObjectFile {
                kind,
                id: b.u32(28),
                file_ptr: b.u64(0),
                cgroup_id: b.u64(8),
                tgid: b.u32(16),
                pid: b.u32(20),
                fd: b.u32(24),
                comm: b.cstr(32, 16).to_vec(),
            }),
        }
    }
    Ok(out)
}

/// What an io_uring registered-file slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingObject {
    Map,
    Program,
    Link,
    /// A socket or perf event file keeping a program (its first
    /// reference's kind; not resolved further).
    Attached(AttachKind),
}

/// One BPF object file in an io_uring's registered-file table, seen through
/// a task holding the ring's fd (bpf/uring.bpf.c), or with `object` None, a
/// ring whose table one walk did not read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringRecord {
    pub ring_ptr: u64,
    pub file_ptr: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    /// The ring's fd in that task.
    pub fd: u32,
    pub object: Option<(RingObject, u32)>,
    pub comm: Vec<u8>,
    /// Summaries: the ring's table size.
    pub slots: u32,
}

/// Decode io_uring table output (bpf/uring.bpf.c).
pub fn decode_uring(buf: &[u8]) -> Result<Vec<UringRecord>, RecordError> {
    let mut out = Vec::new();
    for b in stream("iter/task_file io_uring output", buf, URING_REC_SIZE)? {
        let file_ptr = b.u64(8);
        let kind = b.u32(36);
        let object = if file_ptr == 0 {
            None
        } else {
            let k = match kind {
                0 => RingObject::Map,
                1 => RingObject::Program,
                2 => RingObject::Link,
                k @ 4..=6 => RingObject::Attached(AttachKind::from_obj_kind(k).expect("4..=6")),
                k => {
                    return Err(RecordError::Range {
                        what: "iter/task_file io_uring output: object kind",
                        value: k as u64,
                    })
                }
            };
            Some((k, b.u32(32)))
        };
        out.push(UringRecord {
            ring_ptr: b.u64(0),
            file_ptr,
            cgroup_id: b.u64(16),
            tgid: b.u32(24),
            fd: b.u32(28),
            object,
            comm: b.cstr(40, 16).to_vec(),
            slots: b.u32(56),
        });
    }
    Ok(out)
}

/// One live program as the `iter/bpf_prog` program saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgRecord {
    pub prog_ptr: u64,
    /// True refcount: the raw value minus the iterator cursor's own reference.
    pub refcnt: i64,
    /// CLOCK_BOOTTIME nanoseconds at load.
    pub load_time_ns: u64,
    /// Bytes charged, as fdinfo `memlock` reports them (pages times the
    /// page size).
    pub memlock: u64,
    pub id: u32,
    pub prog_type: u32,
    pub expected_attach_type: u32,
    /// The maps it uses, as many as the kernel lists (`used_map_cnt`).
    pub used_map_cnt: u32,
    pub tag: [u8; 8],
    pub name: String,
    /// The ids of the maps it uses (the first [`PROG_MAX_MAPS`]).
    pub map_ids: Vec<u32>,
    /// The program it was loaded against and still holds (`dst_prog`:
    /// freplace, fentry/fexit on a program, until attached).
    pub dst_prog_id: Option<u32>,
}

impl ProgRecord {
    /// The tag as bpftool prints it (16 hex digits).
    pub fn tag_hex(&self) -> String {
        self.tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Decode `iter/bpf_prog` output. The iterator's cursor holds one
/// reference on the program it is visiting, so one is subtracted.
pub fn decode_progs(buf: &[u8], page_size: u64) -> Result<Vec<ProgRecord>, RecordError> {
    Ok(stream("iter/bpf_prog output", buf, PROG_REC_SIZE)?
        .map(|b| {
            let used_map_cnt = b.u32(44);
            let n = (used_map_cnt as usize).min(PROG_MAX_MAPS);
            ProgRecord {
                prog_ptr: b.u64(0),
                refcnt: b.i64(8) - 1,
                load_time_ns: b.u64(16),
                memlock: b.u64(24) * page_size,
                id: b.u32(32),
                prog_type: b.u32(36),
                expected_attach_type: b.u32(40),
                used_map_cnt,
                tag: b.u64(48).to_le_bytes(),
                name: String::from_utf8_lossy(b.cstr(56, 16)).into_owned(),
                // A zero id ends the list (a concurrent bind the walk missed).
                map_ids: (0..n)
                    .map(|i| b.u32(72 + 4 * i))
                    .take_while(|&id| id != 0)
                    .collect(),
                dst_prog_id: Some(b.u32(328)).filter(|&id| id != 0),
            }
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encode a map record the way the BPF program lays it out (test helper).
    pub(crate) fn encode_map(r: &MapRecord, raw_refcnt: i64) -> Vec<u8> {
        let mut b = vec![0u8; MAP_REC_SIZE];
        b[0..8].copy_from_slice(&r.map_ptr.to_le_bytes());
        b[8..16].copy_from_slice(&raw_refcnt.to_le_bytes());
        b[16..24].copy_from_slice(&r.usercnt.to_le_bytes());
        b[24..32].copy_from_slice(&r.elem_count.unwrap_or(-1).to_le_bytes());
        b[32..40].copy_from_slice(&r.map_extra.to_le_bytes());
        for (i, v) in [
            r.id,
            r.map_type,
            r.key_size,
            r.value_size,
            r.max_entries,
            r.map_flags,
            r.frozen as u32,
            r.is_outer as u32,
        ]
        .iter()
        .enumerate()
        {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[72..72 + r.name.len()].copy_from_slice(r.name.as_bytes());
        let (id, state) = match r.creator {
            Creator::Unknown => (0, 0u32),
            Creator::Root => (0, 1),
            Creator::Live(id) => (id, 2),
            Creator::Gone(id) => (id, 3),
        };
        b[88..96].copy_from_slice(&id.to_le_bytes());
        b[96..100].copy_from_slice(&state.to_le_bytes());
        b
    }

    fn sample_map() -> MapRecord {
        MapRecord {
            map_ptr: 0xffff_8880_0000_1000,
            refcnt: 3,
            usercnt: 2,
            elem_count: Some(7),
            map_extra: 0,
            id: 42,
            map_type: 1,
            key_size: 4,
            value_size: 8,
            max_entries: 1024,
            map_flags: 1,
            frozen: true,
            is_outer: false,
            name: "cilium_ct4_glob".into(),
            creator: Creator::Live(4711),
        }
    }

    #[test]
    fn map_record_round_trip_subtracts_cursor_reference() {
        let want = sample_map();
        let buf = encode_map(&want, 4);
        let got = decode_maps(&buf).unwrap();
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn decoding_into_a_used_vector_keeps_only_the_new_records() {
        let old = vec![sample_map(); 5];
        let mut m = sample_map();
        m.id = 43;
        let got = decode_maps_into(&encode_map(&m, 1), old).unwrap();
        assert_eq!(got, vec![MapRecord { refcnt: 0, ..m }]);
        assert!(decode_maps_into(&[], got).unwrap().is_empty());
        let files = decode_files(&[]).unwrap().maps;
        let stale = FileRecord {
            file_ptr: 1,
            cgroup_id: 1,
            tgid: 1,
            pid: 1,
            fd: 3,
            map_id: 9,
            comm: b"old".to_vec(),
            vm_start: 0,
            vm_end: 0,
            sock_ino: 0,
        };
        let got = decode_files_into(&[], vec![stale; 3]).unwrap();
        assert_eq!(got.maps, files);
    }

    #[test]
    fn unknown_elem_count_decodes_to_none() {
        let mut m = sample_map();
        m.elem_count = None;
        let got = decode_maps(&encode_map(&m, 1)).unwrap();
        assert_eq!(got[0].elem_count, None);
        assert_eq!(got[0].refcnt, 0);
    }

    #[test]
    fn full_length_name_without_nul() {
        let mut m = sample_map();
        m.name = "abcdefghijklmnop".into(); // 16 bytes, no NUL in the record
        let got = decode_maps(&encode_map(&m, 2)).unwrap();
        assert_eq!(got[0].name, "abcdefghijklmnop");
    }

    #[test]
    fn truncated_buffer_is_an_error_naming_the_cause() {
        let mut buf = encode_map(&sample_map(), 2);
        buf.pop();
        let err = decode_maps(&buf).unwrap_err();
        assert_eq!(
            err,
            RecordError::Truncated {
                what: "iter/bpf_map output",
                len: MAP_REC_SIZE - 1,
                rec: MAP_REC_SIZE
            }
        );
        assert!(err.to_string().contains("record layout"));
    }

    #[test]
    fn creator_states_round_trip() {
        for c in [
            Creator::Unknown,
            Creator::Root,
            Creator::Live(1 << 40),
            Creator::Gone(77),
        ] {
            let mut m = sample_map();
            m.creator = c;
            assert_eq!(decode_maps(&encode_map(&m, 1)).unwrap()[0].creator, c);
        }
        assert_eq!(Creator::Gone(77).cgroup_id(), Some(77));
        assert_eq!(Creator::Root.cgroup_id(), None);
        assert!(Creator::Gone(1).is_gone() && !Creator::Live(1).is_gone());
    }

    #[test]
    fn inflight_records_decode() {
        let mut b = vec![0u8; 2 * INFLIGHT_REC_SIZE];
        b[0..8].copy_from_slice(&0xf11eu64.to_le_bytes());
        b[8..16].copy_from_slice(&4242u64.to_le_bytes());
        b[24..28].copy_from_slice(&17u32.to_le_bytes());
        b[40..48].copy_from_slice(&99u64.to_le_bytes());
        b[60..64].copy_from_slice(&1u32.to_le_bytes());
        let got = decode_inflight(&b).unwrap();
        assert_eq!(
            got,
            vec![
                InflightRecord {
                    file_ptr: 0xf11e,
                    sock_ino: 4242,
                    inner_ino: 0,
                    map_id: 17,
                    prog: None,
                    truncated: false
                },
                InflightRecord {
                    file_ptr: 0,
                    sock_ino: 99,
                    inner_ino: 0,
                    map_id: 0,
                    prog: None,
                    truncated: true
                }
            ]
        );
        assert!(decode_inflight(&b[..31]).is_err());
        // A socket filter in flight (flags SOCK_FILTER | UNSEEN) and a
        // program file (PROG): the program id is not a map id.
        let mut b = vec![0u8; 2 * INFLIGHT_REC_SIZE];
        b[0..8].copy_from_slice(&0xf00u64.to_le_bytes());
        b[16..24].copy_from_slice(&0xabcu64.to_le_bytes());
        b[24..28].copy_from_slice(&5u32.to_le_bytes());
        b[28..32].copy_from_slice(&(4u32 | 32).to_le_bytes());
        b[32..40].copy_from_slice(&0xf01u64.to_le_bytes());
        b[56..60].copy_from_slice(&6u32.to_le_bytes());
        b[60..64].copy_from_slice(&2u32.to_le_bytes());
        let got = decode_inflight(&b).unwrap();
        assert_eq!((got[0].map_id, got[0].inner_ino, got[1].map_id), (0, 0, 0));
        assert_eq!(
            got[0].prog,
            Some(InflightProg {
                attach: Some(AttachKind::SockFilter),
                prog_id: 5,
                obj: 0xabc,
                children: true
            })
        );
        assert_eq!(
            got[1].prog,
            Some(InflightProg {
                attach: None,
                prog_id: 6,
                obj: 0,
                children: false
            })
        );
    }

    #[test]
    fn file_record_decodes_non_utf8_comm() {
        let mut b = vec![0u8; FILE_REC_SIZE];
        b[0..8].copy_from_slice(&0xdeadu64.to_le_bytes());
        b[8..16].copy_from_slice(&77u64.to_le_bytes());
        b[16..20].copy_from_slice(&100u32.to_le_bytes());
        b[20..24].copy_from_slice(&101u32.to_le_bytes());
        b[24..28].copy_from_slice(&5u32.to_le_bytes());
        b[28..32].copy_from_slice(&9u32.to_le_bytes());
        b[32..36].copy_from_slice(&[0xff, b'"', b'\n', b'\\']);
        b[48..56].copy_from_slice(&0x7f00u64.to_le_bytes());
        b[56..64].copy_from_slice(&0x8f00u64.to_le_bytes());
        b[64..72].copy_from_slice(&0x4242u64.to_le_bytes());
        let got = decode_files(&b).unwrap();
        assert!(got.objects.is_empty());
        assert_eq!(
            got.maps,
            vec![FileRecord {
                file_ptr: 0xdead,
                cgroup_id: 77,
                tgid: 100,
                pid: 101,
                fd: 5,
                map_id: 9,
                comm: vec![0xff, b'"', b'\n', b'\\'],
                vm_start: 0x7f00,
                vm_end: 0x8f00,
                sock_ino: 0x4242,
            }]
        );
    }

    #[test]
    fn program_and_link_files_decode_apart_from_map_files() {
        let mut b = vec![0u8; 3 * FILE_REC_SIZE];
        for (i, (kind, id)) in [(1u32, 31u32), (2, 32), (0, 33)].into_iter().enumerate() {
            let r = &mut b[i * FILE_REC_SIZE..(i + 1) * FILE_REC_SIZE];
            r[0..8].copy_from_slice(&(0x100 + i as u64).to_le_bytes());
            r[16..20].copy_from_slice(&7u32.to_le_bytes());
            r[28..32].copy_from_slice(&id.to_le_bytes());
            r[72..76].copy_from_slice(&kind.to_le_bytes());
        }
        let got = decode_files(&b).unwrap();
        assert_eq!(got.maps.iter().map(|f| f.map_id).collect::<Vec<_>>(), [33]);
        let objs: Vec<_> = got
            .objects
            .iter()
            .map(|o| (o.kind, o.id, o.file_ptr))
            .collect();
        assert_eq!(
            objs,
            [
                (ObjectKind::Program, 31, 0x100),
                (ObjectKind::Link, 32, 0x101)
            ]
        );
        // A kind this build does not know is a layout disagreement.
        b[72..76].copy_from_slice(&9u32.to_le_bytes());
        assert!(decode_files(&b)
            .unwrap_err()
            .to_string()
            .contains("object kind"));
    }

    #[test]
    fn attachment_records_decode_apart_from_files() {
        let mut b = vec![0u8; 2 * FILE_REC_SIZE];
        for (i, kind) in [4u32, 5].into_iter().enumerate() {
            let r = &mut b[i * FILE_REC_SIZE..(i + 1) * FILE_REC_SIZE];
            r[0..8].copy_from_slice(&(0x100 + i as u64).to_le_bytes());
            r[16..20].copy_from_slice(&7u32.to_le_bytes());
            r[24..28].copy_from_slice(&(3 + i as u32).to_le_bytes());
            r[28..32].copy_from_slice(&41u32.to_le_bytes());
            r[48..56].copy_from_slice(&(0xe00 + i as u64).to_le_bytes());
            r[56..64].copy_from_slice(&99u64.to_le_bytes());
            r[64..72].copy_from_slice(&(i as u64 ^ 1).to_le_bytes());
            r[72..76].copy_from_slice(&kind.to_le_bytes());
            r[76..80].copy_from_slice(&2u32.to_le_bytes());
        }
        let got = decode_files(&b).unwrap();
        assert!(got.maps.is_empty() && got.objects.is_empty());
        assert_eq!(
            got.attached[0],
            AttachFile {
                kind: AttachKind::PerfEvent,
                prog_id: 41,
                obj: 0xe00,
                file_ptr: 0x100,
                tgid: 7,
                fd: 3,
                attr: 2,
                config: 99,
                children: true,
            }
        );
        assert_eq!(
            (
                got.attached[1].kind,
                got.attached[1].obj,
                got.attached[1].children
            ),
            (AttachKind::SockFilter, 0xe01, false)
        );
    }

    #[test]
    fn program_records_decode_with_their_maps() {
        let mut b = vec![0u8; PROG_REC_SIZE];
        b[8..16].copy_from_slice(&3i64.to_le_bytes());
        b[16..24].copy_from_slice(&5_000_000_000u64.to_le_bytes());
        b[24..32].copy_from_slice(&2u64.to_le_bytes());
        b[32..36].copy_from_slice(&520u32.to_le_bytes());
        b[36..40].copy_from_slice(&1u32.to_le_bytes());
        b[44..48].copy_from_slice(&3u32.to_le_bytes());
        b[48..56].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        b[56..63].copy_from_slice(b"dbgprog");
        for (i, id) in [11u32, 12, 13].into_iter().enumerate() {
            b[72 + 4 * i..76 + 4 * i].copy_from_slice(&id.to_le_bytes());
        }
        let got = decode_progs(&b, 4096).unwrap();
        assert_eq!(got.len(), 1);
        let p = &got[0];
        assert_eq!((p.id, p.prog_type, p.refcnt, p.memlock), (520, 1, 2, 8192));
        assert_eq!(p.name, "dbgprog");
        assert_eq!(p.tag_hex(), "deadbeef00010203");
        assert_eq!(p.map_ids, [11, 12, 13]);
        // More maps than a record lists: the list stops at its capacity.
        b[44..48].copy_from_slice(&100u32.to_le_bytes());
        for i in 0..PROG_MAX_MAPS {
            b[72 + 4 * i..76 + 4 * i].copy_from_slice(&(1 + i as u32).to_le_bytes());
        }
        let got = decode_progs(&b, 4096).unwrap();
        assert_eq!(
            (got[0].used_map_cnt, got[0].map_ids.len()),
            (100, PROG_MAX_MAPS)
        );
        assert!(decode_progs(&b[1..], 4096).is_err());
    }

    #[test]
    fn link_records_decode_and_tell_iterator_links() {
        let mut b = vec![0u8; 4 * LINK_REC_SIZE];
        let put = |b: &mut Vec<u8>, rec: usize, words: &[u32]| {
            for (i, v) in words.iter().enumerate() {
                let at = rec * LINK_REC_SIZE + 4 * i;
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        };
        put(&mut b, 0, &[7, LINK_TYPE_ITER, 70, 700]);
        // A tracing link to program 90.
        put(&mut b, 1, &[8, 2, 80, 0, 90]);
        // A cgroup link: cgroup id 0x1_0000_0005, attach type 1.
        put(&mut b, 2, &[9, 3, 81, 0, 0, 1, 5, 1]);
        // A perf event link on the event at 0xe0.
        put(
            &mut b,
            3,
            &[10, LINK_TYPE_PERF_EVENT, 82, 0, 0, 0, 0, 0, 0xe0],
        );
        let got = decode_links(&b).unwrap();
        assert_eq!((got[0].perf_event, got[3].perf_event), (None, Some(0xe0)));
        assert_eq!(
            (
                got[0].id,
                got[0].prog_id,
                got[0].iter_map_id,
                got[0].is_iter()
            ),
            (7, 70, Some(700), true)
        );
        assert_eq!(
            (
                got[1].id,
                got[1].prog_id,
                got[1].iter_map_id,
                got[1].is_iter(),
                got[1].tgt_prog_id,
                got[1].cgroup,
            ),
            (8, 80, None, false, Some(90), None)
        );
        assert_eq!(got[2].tgt_prog_id, None);
        assert_eq!(got[2].cgroup, Some((0x1_0000_0005, 1)));
        assert!(decode_links(&b[..39]).is_err());
        assert!(decode_links(&b[..LINK_REC_SIZE - 1]).is_err());
        assert_eq!(got[2].target, LinkTarget::default());
    }

    #[test]
    fn link_targets_decode_by_their_flags() {
        let mut b = vec![0u8; 4 * LINK_REC_SIZE];
        let put = |b: &mut Vec<u8>, rec: usize, at: usize, v: u32| {
            let at = rec * LINK_REC_SIZE + at;
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        // An xdp link on "veth0" (ifindex 5, netns 4026532000).
        put(&mut b, 0, 4, 6);
        put(&mut b, 0, 40, 2);
        put(&mut b, 0, 44, 5);
        put(&mut b, 0, 48, 4026532000);
        b[80..85].copy_from_slice(b"veth0");
        // A tcx link whose device is gone, attach type 46 (tcx_ingress).
        put(&mut b, 1, 4, 11);
        put(&mut b, 1, 20, 46);
        put(&mut b, 1, 40, 1 | 2 | 64);
        // A tracing link on vmlinux BTF id 777, attach type 24 (fentry).
        put(&mut b, 2, 4, 2);
        put(&mut b, 2, 20, 24);
        put(&mut b, 2, 40, 1 | 8);
        put(&mut b, 2, 52, 1);
        put(&mut b, 2, 56, 777);
        // A netfilter link: pf 2, hook 1, priority -100, defrag.
        put(&mut b, 3, 4, 10);
        put(&mut b, 3, 40, 32);
        put(&mut b, 3, 48, 4026531840);
        put(&mut b, 3, 64, 2);
        put(&mut b, 3, 68, 1);
        put(&mut b, 3, 72, (-100i32) as u32);
        put(&mut b, 3, 76, 1);
        let got = decode_links(&b).unwrap();
        assert_eq!(
            got[0].target,
            LinkTarget {
                device: Some(LinkDevice {
                    ifindex: 5,
                    name: Some("veth0".into())
                }),
                netns: Some(4026532000),
                ..Default::default()
            }
        );
        assert!(got[0].is_attached());
        assert_eq!(
            got[1].target,
            LinkTarget {
                attach_type: Some(46),
                detached: true,
                ..Default::default()
            }
        );
        assert!(!got[1].is_attached());
        assert_eq!(got[2].target.trampoline, Some((1, 777)));
        assert_eq!(got[2].target.attach_type, Some(24));
        assert_eq!(
            got[3].target.netfilter,
            Some(NetfilterHook {
                pf: 2,
                hooknum: 1,
                priority: -100,
                defrag: true
            })
        );
        assert_eq!(got[3].target.netns, Some(4026531840));
    }

    #[test]
    fn sockmap_slots_decode_from_map_records() {
        let mut b = vec![0u8; 2 * MAP_REC_SIZE];
        b[40..44].copy_from_slice(&5u32.to_le_bytes());
        // Slot 2 (stream_verdict): program 50, set by link 6.
        b[112..116].copy_from_slice(&50u32.to_le_bytes());
        b[128..132].copy_from_slice(&6u32.to_le_bytes());
        // The second map holds nothing.
        b[MAP_REC_SIZE + 40..MAP_REC_SIZE + 44].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            decode_sockmap_slots(&b).unwrap(),
            [SockmapSlot {
                map_id: 5,
                slot: 2,
                prog_id: 50,
                link_id: 6
            }]
        );
    }

    #[test]
    fn empty_output_is_no_records() {
        assert!(decode_maps(&[]).unwrap().is_empty());
        assert_eq!(decode_files(&[]).unwrap(), TaskFiles::default());
        assert!(decode_progs(&[], 4096).unwrap().is_empty());
    }
}
