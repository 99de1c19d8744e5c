//! The records shared with bpf/lifecycle.bpf.c (bpf/lifecycle.h), decoded
//! with the shared reader; their sizes are checked at compile time against
//! the types the skeleton generates from the object's BTF. Pure: no I/O.
use crate::bpf::records::{Rec, RecordError};
use crate::metrics::label::comm_label;

const _: () = {
    use super::skel::types;
    assert!(std::mem::size_of::<types::count_key>() == COUNT_KEY_SIZE);
    assert!(std::mem::size_of::<types::create_rec>() == CREATE_REC_SIZE);
    assert!(std::mem::size_of::<types::load_rec>() == PROG_REC_SIZE);
    assert!(std::mem::size_of::<types::origin_rec>() == ORIGIN_REC_SIZE);
    assert!(std::mem::size_of::<types::overflow_val>() == OVERFLOW_SLOTS * 8);
};

/// Size of `struct count_key`.
pub const COUNT_KEY_SIZE: usize = 40;
/// Size of `struct create_rec`.
pub const CREATE_REC_SIZE: usize = 80;
/// Size of `struct load_rec`.
pub const PROG_REC_SIZE: usize = 56;
/// `LC_STACK_DEPTH`: frames an origin record holds at most.
pub const STACK_DEPTH: usize = 48;
/// `LC_PATH_LEN`.
const PATH_LEN: usize = 128;
/// Size of `struct origin_rec` (its largest record).
pub const ORIGIN_REC_SIZE: usize = ORIGIN_HEADER + STACK_DEPTH * 40;
/// Offset of `origin_rec.ips`: a record is this header and the frames
/// walked only.
pub const ORIGIN_HEADER: usize = 200;
/// `LC_ORIGIN_SEEN`: (process, stack) pairs whose build ids were sent.
pub const ORIGIN_SEEN: usize = 4096;
/// `LC_PROG_RING`: program load record slots (program id modulo this).
pub const PROG_RING: u32 = 8192;
/// `LC_RING`: creation record slots (map id modulo this).
pub const RING: u32 = 32768;
/// `LC_SLOTS`: per-process counter slots by default (the `slots` hash maps
/// a `count_key` to its index in the per-CPU `counts` array).
pub const SLOTS: u32 = 16384;
/// `LC_ARGS` and `LC_OVERFLOW_SLOTS`.
pub const ARGS: usize = 256;
pub const OVERFLOW_SLOTS: usize = 5 * ARGS;

pub const KIND_CREATE: u16 = 1;
pub const KIND_SYSCALL: u16 = 2;
pub const KIND_INC: u16 = 3;
pub const KIND_DEC: u16 = 4;

/// `LC_LOST_*`: indexes of the `lost` per-CPU array.
pub const LOST_LOG_RING: u32 = 0;
pub const LOST_UNREADABLE: u32 = 1;
pub const LOST_ORIGIN_RING: u32 = 2;

/// The process a kernel counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub comm: String,
    /// 0 unless the pid label is on.
    pub tgid: u32,
    pub cgroup_id: u64,
    /// Kernfs id of the process's memory cgroup (0 = unknown): the cgroup
    /// its maps are charged to, which the census resolves too.
    pub memcg_id: u64,
}

/// What a kernel counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Create { map_type: u32 },
    Syscall { cmd: u32, error: bool },
    Inc,
    Dec,
}

impl Kind {
    pub fn from_raw(kind: u16, arg: u16) -> Option<Kind> {
        Some(match kind {
            KIND_CREATE => Kind::Create {
                map_type: arg as u32,
            },
            KIND_SYSCALL => Kind::Syscall {
                cmd: (arg >> 1) as u32,
                error: arg & 1 == 1,
            },
            KIND_INC => Kind::Inc,
            KIND_DEC => Kind::Dec,
            _ => return None,
        })
    }
}

/// `struct count_key`.
pub fn decode_count_key(b: &[u8]) -> Result<(ProcKey, Option<Kind>), RecordError> {
    let r = Rec::exact("count_key", b, COUNT_KEY_SIZE)?;
    let key = ProcKey {
        cgroup_id: r.u64(0),
        tgid: r.u32(8),
        comm: comm_label(r.cstr(16, 16)),
        memcg_id: r.u64(32),
    };
    Ok((key, Kind::from_raw(r.u16(12), r.u16(14))))
}

/// A `slots` hash value: the key's index in the per-CPU `counts` array
/// of `n` slots.
pub fn decode_slot(b: &[u8], n: u32) -> Result<u32, RecordError> {
    match Rec::exact("slot", b, 4)?.u32(0) {
        s if s < n => Ok(s),
        s => Err(RecordError::Range {
            what: "slot",
            value: s as u64,
        }),
    }
}

/// The overflow counters (one array value of OVERFLOW_SLOTS u64s) as kinds.
pub fn decode_overflow(b: &[u8]) -> Result<Vec<(Kind, u64)>, RecordError> {
    let r = Rec::exact("overflow", b, OVERFLOW_SLOTS * 8)?;
    let mut out = Vec::new();
    for i in 0..OVERFLOW_SLOTS {
        let n = r.u64(i * 8);
        if n == 0 {
            continue;
        }
        if let Some(k) = Kind::from_raw((i / ARGS) as u16, (i % ARGS) as u16) {
            out.push((k, n));
        }
    }
    Ok(out)
}

/// `struct create_rec`: one map creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRec {
    pub create_ns: u64,
    pub cgroup_id: u64,
    pub map_ptr: u64,
    pub id: u32,
    pub tgid: u32,
    pub pid: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub comm: String,
    /// As [`ProcKey::memcg_id`].
    pub memcg_id: u64,
}

pub fn decode_create_rec(b: &[u8]) -> Result<CreateRec, RecordError> {
    let b = Rec::exact("create_rec", b, CREATE_REC_SIZE)?;
    Ok(CreateRec {
        create_ns: b.u64(0),
        cgroup_id: b.u64(8),
        map_ptr: b.u64(16),
        id: b.u32(24),
        tgid: b.u32(28),
        pid: b.u32(32),
        map_type: b.u32(36),
        key_size: b.u32(40),
        value_size: b.u32(44),
        max_entries: b.u32(48),
        map_flags: b.u32(52),
        comm: comm_label(b.cstr(56, 16)),
        memcg_id: b.u64(72),
    })
}

/// One program load as the lifecycle probes recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRecord {
    /// CLOCK_BOOTTIME ns.
    pub load_ns: u64,
    /// cgroup v2 id of the loading task.
    pub cgroup_id: u64,
    /// Kernfs id of the loading task's memory cgroup (0 = unknown).
    pub memcg_id: u64,
    pub id: u32,
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
}

/// `struct load_rec`: one program load, as the census's loader table keeps
/// it.
pub fn decode_prog_rec(b: &[u8]) -> Result<LoadRecord, RecordError> {
    let b = Rec::exact("load_rec", b, PROG_REC_SIZE)?;
    Ok(LoadRecord {
        load_ns: b.u64(0),
        cgroup_id: b.u64(8),
        memcg_id: b.u64(16),
        id: b.u32(24),
        tgid: b.u32(28),
        pid: b.u32(32),
        comm: comm_label(b.cstr(40, 16)),
    })
}

/// What the kernel made of one frame in build-id mode
/// (`struct bpf_stack_build_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelFrame {
    /// The build id of the file mapped there and the file offset.
    BuildId { build_id: [u8; 20], offset: u64 },
    /// No build id (anonymous memory, or the kernel could not read it).
    Ip,
}

/// `struct origin_rec`: the user stack of one bpf() call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRec {
    pub ns: u64,
    pub file_ptr: u64,
    pub tgid: u32,
    pub pid: u32,
    pub cmd: u32,
    pub fd: i32,
    pub obj_id: u32,
    /// `BPFMAP_OBJ_*` (0 map, 1 program, 2 link), -1 unknown.
    pub obj_kind: i32,
    pub comm: String,
    /// OBJ_PIN and OBJ_GET: the pathname the caller gave.
    pub path: String,
    /// Of tgid, the process's start time and `ips` (0: no frames): the
    /// key of the (process, stack) pairs whose build ids were sent.
    pub stack_hash: u64,
    /// The user ip, then the return addresses of the frame-pointer walk,
    /// innermost first; Err: the capture's negative length.
    pub ips: Result<Vec<u64>, i32>,
    /// Build-id frames (empty when not asked); Err: bpf_get_stack's error.
    pub kernel_frames: Result<Vec<KernelFrame>, i32>,
}

pub fn decode_origin_rec(b: &[u8]) -> Result<OriginRec, RecordError> {
    let head = b.get(..ORIGIN_HEADER).ok_or(RecordError::Length {
        what: "origin_rec",
        len: b.len(),
        want: ORIGIN_HEADER,
    })?;
    let h = Rec::exact("origin_rec", head, ORIGIN_HEADER)?;
    let len = |off: usize| h.u32(off) as i32;
    let (ips_len, bids_len) = (len(40), len(44));
    let walked = |l: i32, each: usize| if l > 0 { l as usize / each } else { 0 };
    let (n_ips, n_bids) = (walked(ips_len, 8), walked(bids_len, 32));
    if n_ips > STACK_DEPTH || n_bids > STACK_DEPTH {
        return Err(RecordError::Range {
            what: "origin_rec frames",
            value: n_ips.max(n_bids) as u64,
        });
    }
    let bids_off = ORIGIN_HEADER + n_ips * 8;
    let r = Rec::exact("origin_rec", b, bids_off + n_bids * 32)?;
    let ips = if ips_len < 0 {
        Err(ips_len)
    } else {
        Ok((0..n_ips).map(|i| r.u64(ORIGIN_HEADER + i * 8)).collect())
    };
    let kernel_frames = if bids_len < 0 {
        Err(bids_len)
    } else {
        Ok((0..n_bids)
            .map(|i| {
                let o = bids_off + i * 32;
                match r.u32(o) {
                    1 => KernelFrame::BuildId {
                        build_id: r.bytes(o + 4, 20).try_into().expect("20 bytes"),
                        offset: r.u64(o + 24),
                    },
                    _ => KernelFrame::Ip,
                }
            })
            .collect())
    };
    Ok(OriginRec {
        ns: r.u64(0),
        file_ptr: r.u64(8),
        tgid: r.u32(16),
        pid: r.u32(20),
        cmd: r.u32(24),
        fd: r.u32(28) as i32,
        obj_id: r.u32(32),
        obj_kind: r.u32(36) as i32,
        comm: comm_label(r.cstr(48, 16)),
        path: String::from_utf8_lossy(r.cstr(64, PATH_LEN)).into_owned(),
        stack_hash: r.u64(192),
        ips,
        kernel_frames,
    })
}

/// bpf() commands counted by `bpfmap_map_syscalls_total`, as `cmd` labels.
pub fn cmd_name(cmd: u32) -> String {
    match cmd {
        0 => "map_create",
        1 => "map_lookup_elem",
        2 => "map_update_elem",
        3 => "map_delete_elem",
        4 => "map_get_next_key",
        5 => "prog_load",
        6 => "obj_pin",
        7 => "obj_get",
        13 => "prog_get_fd_by_id",
        14 => "map_get_fd_by_id",
        21 => "map_lookup_and_delete_elem",
        22 => "map_freeze",
        24 => "map_lookup_batch",
        25 => "map_lookup_and_delete_batch",
        26 => "map_update_batch",
        27 => "map_delete_batch",
        28 => "link_create",
        n => return format!("cmd_{n}"),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::records::sum_percpu;

    /// An origin record of `ips` walked frames and `bids` build-id frames,
    /// sent with those frames only.
    fn origin_bytes(ips: &[u64], bids: &[Option<([u8; 20], u64)>]) -> Vec<u8> {
        let mut b = vec![0u8; ORIGIN_HEADER];
        b[16..20].copy_from_slice(&4242u32.to_le_bytes());
        b[40..44].copy_from_slice(&((ips.len() * 8) as u32).to_le_bytes());
        b[44..48].copy_from_slice(&((bids.len() * 32) as u32).to_le_bytes());
        b[48..53].copy_from_slice(b"agent");
        b[192..200].copy_from_slice(&0xfeedu64.to_le_bytes());
        for ip in ips {
            b.extend_from_slice(&ip.to_le_bytes());
        }
        for f in bids {
            let mut e = [0u8; 32];
            if let Some((id, off)) = f {
                e[0..4].copy_from_slice(&1u32.to_le_bytes());
                e[4..24].copy_from_slice(id);
                e[24..32].copy_from_slice(&off.to_le_bytes());
            }
            b.extend_from_slice(&e);
        }
        b
    }

    #[test]
    fn origin_rec_carries_the_walked_frames_only() {
        let b = origin_bytes(&[0x1000, 0x2000, 0x3000], &[Some(([7; 20], 0x40)), None]);
        assert_eq!(b.len(), ORIGIN_HEADER + 3 * 8 + 2 * 32);
        let r = decode_origin_rec(&b).unwrap();
        assert_eq!(r.tgid, 4242);
        assert_eq!(r.comm, "agent");
        assert_eq!(r.stack_hash, 0xfeed);
        assert_eq!(r.ips, Ok(vec![0x1000, 0x2000, 0x3000]));
        assert_eq!(
            r.kernel_frames,
            Ok(vec![
                KernelFrame::BuildId {
                    build_id: [7; 20],
                    offset: 0x40
                },
                KernelFrame::Ip
            ])
        );
        let raw = decode_origin_rec(&origin_bytes(&[0x1000], &[])).unwrap();
        assert_eq!(raw.kernel_frames, Ok(vec![]));
        // A record shorter or longer than its lengths say is refused.
        assert!(decode_origin_rec(&b[..b.len() - 1]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(decode_origin_rec(&long).is_err());
        assert!(decode_origin_rec(&b[..ORIGIN_HEADER - 1]).is_err());
        let mut deep = origin_bytes(&[], &[]);
        deep[40..44].copy_from_slice(&((STACK_DEPTH as u32 + 1) * 8).to_le_bytes());
        assert!(decode_origin_rec(&deep).is_err());
    }

    #[test]
    fn prog_rec_round_trip() {
        let mut b = vec![0u8; PROG_REC_SIZE];
        b[0..8].copy_from_slice(&5_000u64.to_le_bytes());
        b[8..16].copy_from_slice(&77u64.to_le_bytes());
        b[16..24].copy_from_slice(&9001u64.to_le_bytes());
        b[24..28].copy_from_slice(&812u32.to_le_bytes());
        b[28..32].copy_from_slice(&40u32.to_le_bytes());
        b[32..36].copy_from_slice(&41u32.to_le_bytes());
        b[40..44].copy_from_slice(b"tc\0x");
        let r = decode_prog_rec(&b).unwrap();
        assert_eq!(
            (r.load_ns, r.cgroup_id, r.memcg_id, r.id, r.tgid, r.pid),
            (5_000, 77, 9001, 812, 40, 41)
        );
        assert_eq!(r.comm, "tc");
        assert!(decode_prog_rec(&b[..55]).is_err());
    }

    #[test]
    fn count_key_round_trip() {
        let mut b = vec![0u8; 40];
        b[0..8].copy_from_slice(&77u64.to_le_bytes());
        b[32..40].copy_from_slice(&9001u64.to_le_bytes());
        b[8..12].copy_from_slice(&42u32.to_le_bytes());
        b[12..14].copy_from_slice(&KIND_SYSCALL.to_le_bytes());
        b[14..16].copy_from_slice(&((14u16 << 1) | 1).to_le_bytes());
        b[16..20].copy_from_slice(b"bash");
        let (k, kind) = decode_count_key(&b).unwrap();
        assert_eq!(
            k,
            ProcKey {
                comm: "bash".into(),
                tgid: 42,
                cgroup_id: 77,
                memcg_id: 9001,
            }
        );
        assert_eq!(
            kind,
            Some(Kind::Syscall {
                cmd: 14,
                error: true
            })
        );
        assert!(decode_count_key(&b[..39]).is_err());
    }

    #[test]
    fn slots_are_u32_indexes_below_the_slot_count() {
        assert_eq!(decode_slot(&7u32.to_le_bytes(), SLOTS), Ok(7));
        assert_eq!(
            decode_slot(&(SLOTS - 1).to_le_bytes(), SLOTS),
            Ok(SLOTS - 1)
        );
        let e = decode_slot(&SLOTS.to_le_bytes(), SLOTS).unwrap_err();
        assert_eq!(e.to_string(), "slot: value 16384 out of range");
        assert!(decode_slot(&8u32.to_le_bytes(), 8).is_err());
        assert!(decode_slot(&[0u8; 8], SLOTS).is_err());
    }

    #[test]
    fn create_rec_fields() {
        let mut b = vec![0u8; 80];
        b[0..8].copy_from_slice(&5u64.to_le_bytes());
        b[24..28].copy_from_slice(&9u32.to_le_bytes());
        b[36..40].copy_from_slice(&1u32.to_le_bytes());
        b[56..72].copy_from_slice(b"exactly16bytes!!");
        b[72..80].copy_from_slice(&4242u64.to_le_bytes());
        let r = decode_create_rec(&b).unwrap();
        assert_eq!((r.create_ns, r.id, r.map_type, r.memcg_id), (5, 9, 1, 4242));
        assert_eq!(r.comm, "exactly16bytes!!");
    }

    #[test]
    fn overflow_slots_map_to_kinds() {
        let mut b = vec![0u8; OVERFLOW_SLOTS * 8];
        let i = KIND_CREATE as usize * ARGS + 2;
        b[i * 8..i * 8 + 8].copy_from_slice(&3u64.to_le_bytes());
        let i = KIND_DEC as usize * ARGS;
        b[i * 8..i * 8 + 8].copy_from_slice(&4u64.to_le_bytes());
        assert_eq!(
            decode_overflow(&b).unwrap(),
            vec![(Kind::Create { map_type: 2 }, 3), (Kind::Dec, 4)]
        );
    }

    #[test]
    fn percpu_sum_and_names() {
        assert_eq!(
            sum_percpu(&[1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec()]),
            3
        );
        assert_eq!(cmd_name(14), "map_get_fd_by_id");
        assert_eq!(cmd_name(99), "cmd_99");
    }
}
