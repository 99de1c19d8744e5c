//! Program references held by cgroups, maps and other programs: the
//! `cgroups`, `map_programs` and `program_targets` census parts.
//!
//! Kernel facts this follows:
//! - a cgroup hook attached with BPF_PROG_ATTACH holds its program until
//!   detached or the cgroup is released; BPF_PROG_QUERY without
//!   BPF_F_QUERY_EFFECTIVE lists the programs attached to that very cgroup,
//!   link-attached ones included (a cgroup link holds its program through
//!   the link, not the cgroup);
//! - a removed cgroup lives on (dying) while something references it, with
//!   its programs, and has no directory left to query;
//! - a sockmap or sockhash slot (parser, verdict, msg) holds its program,
//!   whether BPF_PROG_ATTACH or a sockmap link set it (the link holds one
//!   more);
//! - a devmap, devmap_hash or cpumap entry with a program holds it, and a
//!   syscall lookup of the entry returns the program's id;
//! - a program loaded against another (`attach_prog_fd`) holds it until
//!   attached; a tracing link to a program holds it (`tgt_prog`).
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use libbpf_rs::MapCore;

use super::programs::{AttachSource, AttachedBy, Attachment, ProgHolderKind};
use crate::bpf::census::records::SockmapSlot;
use crate::bpf::census::{LinkRecord, MapRecord, ProgRecord};

/// Cgroups one walk queries at most: a user with a delegated subtree can
/// create many; past this the source is incomplete.
pub const MAX_CGROUPS: usize = 100_000;

/// Map entries one scrape looks up at most in devmaps and cpumaps; past
/// this the source is incomplete.
pub const MAX_DEVMAP_LOOKUPS: usize = 1 << 20;

/// Every attach type a program can be attached to a cgroup with (uapi
/// `enum bpf_attach_type`). A kernel that does not know one answers
/// EINVAL, and then nothing can be attached with it there.
pub const CGROUP_ATTACH_TYPES: &[u32] = &[
    0, 1, 2, 3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19, 20, 21, 22, 29, 30, 31, 32, 34, 43, 49,
    50, 51, 52, 53,
];

/// The program type a cgroup attach type takes (the kernel's
/// `attach_type_to_prog_type`), for the types of [`CGROUP_ATTACH_TYPES`].
fn cgroup_attach_prog_type(attach_type: u32) -> Option<u32> {
    Some(match attach_type {
        0 | 1 => 8,                                           // cgroup_skb
        2 | 12 | 13 | 34 => 9,                                // cgroup_sock
        3 => 13,                                              // sock_ops
        6 => 15,                                              // cgroup_device
        8..=11 | 14 | 15 | 19 | 20 | 29..=32 | 49..=53 => 18, // cgroup_sock_addr
        18 => 23,                                             // cgroup_sysctl
        21 | 22 => 25,                                        // cgroup_sockopt
        43 => 29,                                             // lsm (lsm_cgroup)
        _ => return None,
    })
}

/// The cgroup attach types worth querying when the live programs have
/// these types: an attachment holds its program, so a type no live
/// program has is attached nowhere (a program loaded after the census's
/// program walk is not in this census, its holders not asked for).
/// `None` (the programs are unknown) queries every type.
pub fn cgroup_attach_types(prog_types: Option<&HashSet<u32>>) -> Vec<u32> {
    CGROUP_ATTACH_TYPES
        .iter()
        .copied()
        .filter(|&t| match (prog_types, cgroup_attach_prog_type(t)) {
            (None, _) | (_, None) => true,
            (Some(have), Some(pt)) => have.contains(&pt),
        })
        .collect()
}

pub use crate::bpf::query::{attach_type_name, prog_query};

/// The cgroup v2 mount points in `mountinfo`, those whose root reads `/`
/// first. (In a cgroup namespace the host's hierarchy, bind-mounted,
/// reads `/..`-relative: [`hierarchy_root`] tells by its files.)
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    let mut out: Vec<(bool, PathBuf)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let f: Vec<&str> = pre.split_whitespace().collect();
            let point = PathBuf::from(unescape_octal(f.get(4)?));
            (fstype == "cgroup2").then_some((f.get(3) != Some(&"/"), point))
        })
        .collect();
    out.sort_by_key(|(not_root, _)| *not_root);
    out.into_iter().map(|(_, p)| p).collect()
}

/// The first of `mounts` that is the hierarchy's root (it has no
/// cgroup.events, which every other cgroup has), else the first.
pub fn hierarchy_root(mounts: &[PathBuf]) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| !m.join("cgroup.events").exists() && m.join("cgroup.procs").exists())
        .or(mounts.first())
        .cloned()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| c.is_ascii_digit()) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `nr_descendants` and `nr_dying_descendants` of a cgroup.stat file.
pub fn cgroup_stat(text: &str) -> Option<(u64, u64)> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some((get("nr_descendants")?, get("nr_dying_descendants")?))
}

/// One program attached to one cgroup hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProg {
    pub cgroup_id: u64,
    pub path: PathBuf,
    pub attach_type: u32,
    pub prog_id: u32,
}

/// What one cgroup walk saw.
#[derive(Debug, Default)]
pub struct CgroupWalk {
    pub found: Vec<CgroupProg>,
    pub walked: usize,
    /// Why the walk may have missed attachments.
    pub incomplete: Option<String>,
}

/// Query every cgroup under `root` (the hierarchy's root) for each attach
/// type of `types` (see [`cgroup_attach_types`]), at most `max` cgroups.
///
/// Complete only when the cgroups walked (distinct ids) are exactly the
/// root and its `nr_descendants` both before and after the walk, and no
/// dying cgroup exists either time: a cgroup renamed across the walk, or
/// created and removed during it, then shows as a difference.
pub fn walk_cgroups(root: &Path, max: usize, types: &[u32]) -> anyhow::Result<CgroupWalk> {
    if types.is_empty() {
        // No live program can be attached to a cgroup: none is, dying
        // cgroups included.
        return Ok(CgroupWalk::default());
    }
    let stat = || -> anyhow::Result<(u64, u64)> {
        let p = root.join("cgroup.stat");
        let t = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        cgroup_stat(&t).with_context(|| format!("parsing {}", p.display()))
    };
    let before = stat()?;
    let mut w = CgroupWalk::default();
    // The hierarchy's root has no cgroup.events (a namespaced or bind
    // mount of a subtree does).
    if root.join("cgroup.events").exists() {
        w.incomplete = Some(format!(
            "{} is not the root of the cgroup v2 hierarchy (mount it whole)",
            root.display()
        ));
    }
    let mut types: Vec<u32> = types.to_vec();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    let mut cut = false;
    while let Some(dir) = stack.pop() {
        if seen.len() >= max {
            cut = true;
            break;
        }
        let Ok(f) = std::fs::File::open(&dir) else {
            continue; // removed meanwhile: the counts below tell
        };
        let Ok(md) = f.metadata() else { continue };
        if !seen.insert(md.ino()) {
            continue;
        }
        let fd = OwnedFd::from(f);
        let mut i = 0;
        while i < types.len() {
            match prog_query(&fd, types[i]) {
                Ok(ids) => {
                    for prog_id in ids {
                        w.found.push(CgroupProg {
                            cgroup_id: md.ino(),
                            path: dir.clone(),
                            attach_type: types[i],
                            prog_id,
                        });
                    }
                    i += 1;
                }
                // A type this kernel does not know: nothing is attached
                // with it anywhere.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    types.remove(i);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "BPF_PROG_QUERY {} on {}",
                            attach_type_name(types[i]),
                            dir.display()
                        )
                    })
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    w.walked = seen.len();
    let after = stat()?;
    let why = if cut {
        Some(format!("more than {max} cgroups: the walk stopped there"))
    } else if before.1 > 0 || after.1 > 0 {
        Some(format!(
            "{} dying cgroups (removed, still referenced) may hold programs and cannot be queried",
            before.1.max(after.1)
        ))
    } else if before.0 + 1 != w.walked as u64 || after.0 + 1 != w.walked as u64 {
        Some(format!(
            "cgroups changed during the walk ({} walked, {} then {} in cgroup.stat)",
            w.walked,
            before.0 + 1,
            after.0 + 1
        ))
    } else {
        None
    };
    if w.incomplete.is_none() {
        w.incomplete = why;
    }
    Ok(w)
}

/// Cgroup attachments without a link: the walk's programs minus one per
/// cgroup link of the same cgroup, attach type and program.
pub fn cgroup_attachments(walk: CgroupWalk, links: Option<&[LinkRecord]>) -> AttachSource {
    let mut linked: HashMap<(u64, u32, u32), usize> = HashMap::new();
    for l in links.into_iter().flatten() {
        if let Some((cg, at)) = l.cgroup {
            *linked.entry((cg, at, l.prog_id)).or_default() += 1;
        }
    }
    let mut found = Vec::new();
    for c in walk.found {
        if let Some(n) = linked.get_mut(&(c.cgroup_id, c.attach_type, c.prog_id)) {
            if *n > 0 {
                *n -= 1;
                continue;
            }
        }
        found.push(Attachment {
            prog_id: c.prog_id,
            kind: ProgHolderKind::Cgroup,
            held_by: vec![AttachedBy::Kernel],
            target: format!(
                "cgroup {} ({})",
                c.path.display(),
                attach_type_name(c.attach_type)
            ),
        });
    }
    // Without the links, a link-attached program would count twice.
    let incomplete = match (walk.incomplete, links) {
        (Some(w), _) => Some(w),
        (None, None) => {
            Some("the links part is off or failed: cgroup links cannot be told apart".into())
        }
        (None, Some(_)) => None,
    };
    AttachSource {
        found,
        complete: incomplete.is_none(),
        incomplete,
    }
}

/// Sockmap and sockhash slots as attachments held by the map (and by the
/// link that set the slot, which holds its own reference besides).
pub fn sockmap_attachments(slots: &[SockmapSlot]) -> AttachSource {
    const NAMES: [&str; 4] = [
        "msg_parser",
        "stream_parser",
        "stream_verdict",
        "skb_verdict",
    ];
    AttachSource {
        found: slots
            .iter()
            .map(|s| Attachment {
                prog_id: s.prog_id,
                kind: ProgHolderKind::Sockmap,
                held_by: vec![AttachedBy::Map(s.map_id)],
                target: format!(
                    "map {} {}{}",
                    s.map_id,
                    NAMES.get(s.slot as usize).unwrap_or(&"slot"),
                    if s.link_id != 0 {
                        format!(" (set by link {})", s.link_id)
                    } else {
                        String::new()
                    }
                ),
            })
            .collect(),
        complete: true,
        incomplete: None,
    }
}

/// Map types whose entries can hold an XDP program: devmap, cpumap,
/// devmap_hash.
pub fn holds_xdp_entries(map_type: u32) -> bool {
    matches!(map_type, 14 | 16 | 25)
}

/// Programs in devmap, devmap_hash and cpumap entries, by syscall lookups
/// (a value of 8 bytes or more carries the program's id at offset 4), at
/// most `budget` lookups.
pub fn devmap_attachments<'a>(
    maps: impl IntoIterator<Item = &'a MapRecord>,
    budget: usize,
) -> anyhow::Result<AttachSource> {
    let mut found = Vec::new();
    let mut left = budget;
    let mut cut = Vec::new();
    for m in maps.into_iter().filter(|m| holds_xdp_entries(m.map_type)) {
        // A 4-byte value (ifindex or queue size only) cannot carry a program.
        if m.value_size < 8 {
            continue;
        }
        let h = match libbpf_rs::MapHandle::from_map_id(m.id) {
            Ok(h) => h,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("BPF_MAP_GET_FD_BY_ID {} (devmap)", m.id))
            }
        };
        let kind = if m.map_type == 16 { "cpumap" } else { "devmap" };
        for key in h.keys() {
            if left == 0 {
                cut.push(m.id);
                break;
            }
            left -= 1;
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                let id = u32::from_le_bytes(v[4..8].try_into().expect("4 bytes"));
                if id != 0 {
                    let k = key
                        .get(..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .unwrap_or_default();
                    found.push(Attachment {
                        prog_id: id,
                        kind: ProgHolderKind::Devmap,
                        held_by: vec![AttachedBy::Map(m.id)],
                        target: format!("{kind} {} key {k}", m.id),
                    });
                }
            }
        }
    }
    let incomplete = (!cut.is_empty()).then(|| {
        format!("more than {budget} devmap/cpumap lookups: maps {cut:?} were not read whole")
    });
    Ok(AttachSource {
        found,
        complete: incomplete.is_none(),
        incomplete,
    })
}

/// struct_ops maps' member programs, and whether each map is registered.
/// A member set to a program holds one reference on it (an internal link
/// per member, no id), held by the map; a syscall lookup of key 0 returns
/// the map's value with each member function pointer replaced by its
/// program's id (zeroed while the map is not set, when it holds no
/// program), after the common header `{ refcount_t refcnt; u32 state; }`
/// whose state is not 0 (INIT) once the map was registered. The value's
/// layout comes from the kernel's BTF: `data` in `struct
/// bpf_struct_ops_<type>` is the struct whose function-pointer members hold
/// program ids; the others are data. A map whose value type is in a
/// module's BTF, or that cannot be read, makes the source incomplete; the
/// states are those of the maps whose value was read.
pub fn struct_ops_attachments<'a>(
    maps: impl IntoIterator<Item = &'a MapRecord>,
) -> anyhow::Result<(AttachSource, Vec<(u32, bool)>)> {
    use std::os::fd::AsFd;
    let mut found = Vec::new();
    let mut states = Vec::new();
    let mut problems = Vec::new();
    let mut btf: Option<libbpf_rs::btf::Btf<'static>> = None;
    for m in maps.into_iter().filter(|m| m.map_type == 26) {
        let h = match libbpf_rs::MapHandle::from_map_id(m.id) {
            Ok(h) => h,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("BPF_MAP_GET_FD_BY_ID {} (struct_ops)", m.id))
            }
        };
        let value = match h.lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("struct_ops map {}: lookup: {e}", m.id));
                continue;
            }
        };
        match value.get(4..8) {
            Some(b) => states.push((
                m.id,
                u32::from_ne_bytes(b.try_into().expect("4 bytes")) != 0,
            )),
            None => problems.push(format!(
                "struct_ops map {}: a value of {} bytes has no state",
                m.id,
                value.len()
            )),
        }
        let (ty, obj) = crate::bpf::query::struct_ops_value_type(h.as_fd())
            .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD of struct_ops map {}", m.id))?;
        if obj > 1 {
            problems.push(format!(
                "struct_ops map {}: its value type is in the BTF of a module (object {obj}), not read",
                m.id
            ));
            continue;
        }
        if btf.is_none() {
            btf = Some(libbpf_rs::btf::Btf::from_vmlinux().context(
                "loading the kernel's BTF (/sys/kernel/btf/vmlinux) for struct_ops value layouts",
            )?);
        }
        let b = btf.as_ref().expect("loaded");
        match struct_ops_members(b, ty, &value) {
            Some(members) => {
                for (member, prog_id) in members {
                    found.push(Attachment {
                        prog_id,
                        kind: ProgHolderKind::StructOps,
                        held_by: vec![AttachedBy::Map(m.id)],
                        target: format!("struct_ops map {} ({}) member {member}", m.id, m.name),
                    });
                }
            }
            None => problems.push(format!(
                "struct_ops map {}: value type {ty} is not a struct_ops value in the kernel's BTF",
                m.id
            )),
        }
    }
    let incomplete = (!problems.is_empty()).then(|| problems.join("; "));
    Ok((
        AttachSource {
            found,
            complete: incomplete.is_none(),
            incomplete,
        },
        states,
    ))
}

/// The (member name, program id) pairs of a struct_ops map's `value`, whose
/// BTF type is `ty` (`struct bpf_struct_ops_<type> { common; data; }`):
/// every function-pointer member of `data` that holds an id. `None` when
/// the type is not laid out so.
fn struct_ops_members(
    btf: &libbpf_rs::btf::Btf<'_>,
    ty: u32,
    value: &[u8],
) -> Option<Vec<(String, u32)>> {
    use libbpf_rs::btf::types::{Composite, MemberAttr, Ptr, Struct};
    use libbpf_rs::btf::{BtfKind, BtfType, ReferencesType, TypeId};
    let off = |a: MemberAttr| match a {
        MemberAttr::Normal { offset } => offset / 8,
        MemberAttr::BitField { offset, .. } => offset / 8,
    };
    let outer: Struct<'_> = btf.type_by_id(TypeId::from(ty))?;
    let data = outer.iter().find(|m| m.name.is_some_and(|n| n == "data"))?;
    let base = off(data.attr) as usize;
    let inner: BtfType<'_> = btf
        .type_by_id::<BtfType<'_>>(data.ty)?
        .skip_mods_and_typedefs();
    let inner = Composite::try_from(inner).ok()?;
    let mut out = Vec::new();
    for m in inner.iter() {
        let t: BtfType<'_> = btf
            .type_by_id::<BtfType<'_>>(m.ty)?
            .skip_mods_and_typedefs();
        let Ok(p) = Ptr::try_from(t) else { continue };
        if p.referenced_type().skip_mods_and_typedefs().kind() != BtfKind::FuncProto {
            continue;
        }
        let at = base + off(m.attr) as usize;
        let Some(b) = value.get(at..at + 8) else {
            return None;
        };
        let id = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        if id != 0 {
            let name = m
                .name
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, id as u32));
        }
    }
    Some(out)
}

/// Program references held by programs (`dst_prog`) and tracing links
/// (`tgt_prog`). `unknown_links` are tracing links whose target this
/// kernel does not tell (link info before 5.13): the result is then
/// incomplete.
pub fn program_targets<'a>(
    progs: impl IntoIterator<Item = &'a ProgRecord>,
    links: &[LinkRecord],
    unknown_links: &[u32],
) -> (Vec<Attachment>, Option<String>) {
    let mut out = Vec::new();
    for p in progs {
        if let Some(dst) = p.dst_prog_id {
            out.push(Attachment {
                prog_id: dst,
                kind: ProgHolderKind::Program,
                held_by: vec![AttachedBy::Program(p.id)],
                target: format!(
                    "program {} ({}) loaded against it, not attached yet",
                    p.id, p.name
                ),
            });
        }
    }
    for l in links {
        if let Some(tgt) = l.tgt_prog_id {
            out.push(Attachment {
                prog_id: tgt,
                kind: ProgHolderKind::Program,
                held_by: vec![AttachedBy::Link(l.id)],
                target: format!(
                    "tracing link {} (program {}) attached to it",
                    l.id, l.prog_id
                ),
            });
        }
    }
    let incomplete = (!unknown_links.is_empty()).then(|| {
        format!(
            "tracing links {unknown_links:?}: this kernel does not tell their targets (iter/bpf_link is 5.19+)"
        )
    });
    (out, incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mounts_are_found_in_mountinfo_whole_hierarchy_first() {
        let mi = "25 1 0:23 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                  30 25 0:26 /kubepods /host/sub rw - cgroup2 cgroup2 rw\n\
                  41 31 0:38 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mounts(mi),
            [
                PathBuf::from("/sys/fs/cgroup/uni fied"),
                PathBuf::from("/host/sub")
            ]
        );
        assert!(cgroup2_mounts("25 1 0:23 / /x ro - tmpfs tmpfs ro\n").is_empty());
    }

    #[test]
    fn only_attach_types_of_live_program_types_are_queried() {
        // No cgroup program at all: nothing to ask.
        let none = HashSet::from([6u32, 1]);
        assert!(cgroup_attach_types(Some(&none)).is_empty());
        // cgroup_skb programs: ingress and egress only.
        assert_eq!(cgroup_attach_types(Some(&HashSet::from([8u32]))), [0, 1]);
        // sock_addr programs: every address hook, unix ones included.
        let addr = cgroup_attach_types(Some(&HashSet::from([18u32])));
        assert!(addr.contains(&10) && addr.contains(&53) && !addr.contains(&0));
        // Unknown programs: every type.
        assert_eq!(cgroup_attach_types(None), CGROUP_ATTACH_TYPES);
        // Every listed attach type has its program type.
        assert!(CGROUP_ATTACH_TYPES
            .iter()
            .all(|&t| cgroup_attach_prog_type(t).is_some()));
    }

    #[test]
    fn cgroup_stat_counts_are_read() {
        let t = "nr_descendants 12\nnr_subsys_cpu 3\nnr_dying_descendants 2\n";
        assert_eq!(cgroup_stat(t), Some((12, 2)));
        assert_eq!(cgroup_stat("nr_descendants 1\n"), None);
    }

    fn cg(id: u64, at: u32, prog: u32) -> CgroupProg {
        CgroupProg {
            cgroup_id: id,
            path: PathBuf::from(format!("/cg/{id}")),
            attach_type: at,
            prog_id: prog,
        }
    }

    fn link(id: u32, prog: u32, cgroup: Option<(u64, u32)>) -> LinkRecord {
        LinkRecord {
            id,
            link_type: 3,
            prog_id: prog,
            iter_map_id: None,
            tgt_prog_id: None,
            cgroup,
            ..Default::default()
        }
    }

    #[test]
    fn link_attached_cgroup_programs_are_not_counted_twice() {
        let walk = CgroupWalk {
            // Program 7 twice on cgroup 5 ingress (one legacy, one link),
            // once on egress (legacy); program 8 on cgroup 6 by link.
            found: vec![cg(5, 0, 7), cg(5, 0, 7), cg(5, 1, 7), cg(6, 0, 8)],
            walked: 2,
            incomplete: None,
        };
        let links = [
            link(1, 7, Some((5, 0))),
            link(2, 8, Some((6, 0))),
            link(3, 9, None),
        ];
        let s = cgroup_attachments(walk, Some(&links));
        assert!(s.complete);
        let got: Vec<_> = s
            .found
            .iter()
            .map(|a| (a.prog_id, a.target.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (7, "cgroup /cg/5 (cgroup_inet_ingress)".to_string()),
                (7, "cgroup /cg/5 (cgroup_inet_egress)".to_string())
            ]
        );
        assert!(s.found.iter().all(|a| a.held_by == [AttachedBy::Kernel]));
    }

    #[test]
    fn without_links_or_with_a_partial_walk_the_cgroup_source_is_incomplete() {
        let walk = || CgroupWalk {
            found: vec![cg(5, 0, 7)],
            walked: 1,
            incomplete: None,
        };
        let s = cgroup_attachments(walk(), None);
        assert!(!s.complete && s.incomplete.unwrap().contains("links"));
        let mut w = walk();
        w.incomplete = Some("3 dying cgroups".into());
        let s = cgroup_attachments(w, Some(&[]));
        assert_eq!(
            (s.complete, s.incomplete.as_deref()),
            (false, Some("3 dying cgroups"))
        );
    }

    #[test]
    fn targets_come_from_loaded_programs_and_tracing_links() {
        let mut ext = crate::census::programs::tests::prog(10, 1, &[]);
        ext.dst_prog_id = Some(3);
        let progs = [ext, crate::census::programs::tests::prog(3, 3, &[])];
        let mut l = link(20, 11, None);
        l.tgt_prog_id = Some(3);
        let (t, inc) = program_targets(&progs, &[l], &[]);
        assert_eq!(inc, None);
        assert_eq!(
            t.iter()
                .map(|a| (a.prog_id, a.held_by.clone()))
                .collect::<Vec<_>>(),
            [
                (3, vec![AttachedBy::Program(10)]),
                (3, vec![AttachedBy::Link(20)])
            ]
        );
        let (_, inc) = program_targets(&progs, &[], &[21]);
        assert!(inc.unwrap().contains("[21]"));
    }

    #[test]
    fn sockmap_slots_are_held_by_their_map() {
        let s = sockmap_attachments(&[SockmapSlot {
            map_id: 4,
            slot: 2,
            prog_id: 9,
            link_id: 0,
        }]);
        assert!(s.complete);
        assert_eq!(s.found[0].held_by, [AttachedBy::Map(4)]);
        assert_eq!(s.found[0].target, "map 4 stream_verdict");
    }
}
