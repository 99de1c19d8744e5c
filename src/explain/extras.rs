//! Holder identities the snapshot keeps only as counts, found by bpf()
//! queries: programs, outer-map slots and iterator links.

use crate::census::names::is_map_in_map;
use crate::census::Snapshot;

/// (program id, name, type, map ids it uses).
pub type ProgramIdentity = (u32, String, String, Vec<u32>);

/// Holder identities found by bpf() queries (the snapshot keeps counts).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub programs: Vec<ProgramIdentity>,
    /// (outer map id, key, inner map id).
    pub slots: Vec<(u32, String, u32)>,
    /// (link id, map id) of iterator links bound to a map.
    pub links: Vec<(u32, u32)>,
}

/// Query the program, outer-map slot and link identities.
pub fn gather_extras(snap: &Snapshot) -> Extras {
    use libbpf_rs::query::{
        IterType, LinkInfoIter, LinkTypeInfo, ProgInfoIter, ProgInfoQueryOptions,
    };
    use libbpf_rs::MapCore;
    let mut x = Extras::default();
    match &snap.programs {
        // The census's programs (bpftool's type names).
        Some(progs) => {
            x.programs = progs
                .iter()
                .map(|p| {
                    (
                        p.id,
                        p.name.clone(),
                        crate::census::names::prog_type_label(p.prog_type).into_owned(),
                        p.map_ids.clone(),
                    )
                })
                .collect()
        }
        None => {
            for p in
                ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default().include_map_ids(true))
            {
                x.programs.push((
                    p.id,
                    p.name.to_string_lossy().into_owned(),
                    crate::census::names::prog_type_label(p.ty as u32).into_owned(),
                    p.map_ids,
                ));
            }
        }
    }
    for l in LinkInfoIter::default() {
        if let LinkTypeInfo::Iter(it) = &l.info {
            if let IterType::Map { map_id } = it.iter_type {
                x.links.push((l.id, map_id));
            }
        }
    }
    for m in snap.maps.iter().filter(|m| is_map_in_map(m.map_type)) {
        let Ok(h) = libbpf_rs::MapHandle::from_map_id(m.id) else {
            continue;
        };
        for key in h.keys() {
            if let Ok(Some(v)) = h.lookup(&key, libbpf_rs::MapFlags::ANY) {
                if v.len() >= 4 {
                    let inner = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
                    let k = if key.len() == 4 {
                        u32::from_le_bytes(key[..4].try_into().expect("4 bytes")).to_string()
                    } else {
                        key.iter().map(|b| format!("{b:02x}")).collect()
                    };
                    x.slots.push((m.id, k, inner));
                }
            }
        }
    }
    x
}
