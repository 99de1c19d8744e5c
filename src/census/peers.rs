//! Other instances of this exporter (a `--check` next to the server): the
//! objects only they hold are theirs, so both report the same node figures.
//! An instance is proven by its executable, never by its name.
use super::IdMap;
use crate::bpf::census::FileRecord;
use crate::sys;

/// The processes proven to be another instance of this exporter: named like
/// it (a cheap filter) and running the very same executable file (the device
/// and inode behind `/proc/<pid>/exe`). A name alone is never proof: any
/// process can call itself `bpfmap-exporter`.
pub(super) fn proven_peers<'a>(
    holders: impl Iterator<Item = (u32, &'a [u8])>,
    comm: &[u8],
    exe: Option<(u64, u64)>,
) -> rustc_hash::FxHashSet<u32> {
    let me = std::process::id();
    let mut asked = rustc_hash::FxHashSet::default();
    let mut peers = rustc_hash::FxHashSet::default();
    let Some(exe) = exe else {
        return peers;
    };
    for (tgid, c) in holders {
        if tgid != me
            && !comm.is_empty()
            && c == comm
            && asked.insert(tgid)
            && sys::exe_identity(tgid) == Some(exe)
        {
            peers.insert(tgid);
        }
    }
    peers
}

/// Maps whose every file holder is a proven peer (another exporter
/// instance), and the maps this process holds files of.
pub(super) fn peer_exporter_maps(
    files: &[FileRecord],
    peers: &rustc_hash::FxHashSet<u32>,
) -> (rustc_hash::FxHashSet<u32>, rustc_hash::FxHashSet<u32>) {
    let me = std::process::id();
    let mut peer: IdMap<bool> = IdMap::default();
    for f in files {
        *peer.entry(f.map_id).or_insert(true) &= peers.contains(&f.tgid);
    }
    let mine = files
        .iter()
        .filter(|f| f.tgid == me)
        .map(|f| f.map_id)
        .collect();
    (
        peer.into_iter()
            .filter(|(_, p)| *p)
            .map(|(id, _)| id)
            .collect(),
        mine,
    )
}
