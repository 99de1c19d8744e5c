//! The io_uring part: map and program files held by io_uring
//! registered-file tables. Rings are found by the task walk (their fds);
//! their tables are walked by bpf/uring.bpf.c where the kernel has bpf_loop
//! (5.17+). Before, a ring whose fdinfo lists a BPF file makes the source
//! incomplete: what it could explain is withheld, never guessed.
use std::path::Path;

use super::{CensusOpts, RingFd, RingObject, UringRecord};
use crate::bpf::uring::Uring;
use crate::registry::Report;

/// The loaded walk and its buffer, or why it did not load; `None` where the
/// kernel lacks bpf_loop or the part is off.
pub(super) struct UringPart {
    walk: Option<Result<(Uring, Vec<u8>), String>>,
}

/// What the rings held this scrape.
pub(super) struct RingObservation {
    /// Map files: (file address, map id), with repeats.
    pub(super) maps: Vec<(u64, u32)>,
    /// Program files: (file address, program id), with repeats.
    pub(super) progs: Vec<(u64, u32)>,
    pub(super) records: Vec<UringRecord>,
    /// Every ring's table was read to its end.
    pub(super) complete: bool,
    /// Every socket or perf event file keeping a program that a ring holds
    /// is in `records` (where tables cannot be walked: no ring holds one).
    pub(super) attach_complete: bool,
}

impl UringPart {
    /// Load the table walk where the kernel has bpf_loop (`with_loop`,
    /// from the census's features), adding its map and program ids to the
    /// exporter's own.
    pub(super) fn load(
        opts: &CensusOpts,
        with_loop: bool,
        own_maps: &mut Vec<u32>,
        own_progs: &mut Vec<u32>,
    ) -> UringPart {
        let walk = (opts.parts.on("io_uring") && with_loop).then(|| {
            match Uring::load(opts.btf_path.as_deref()) {
                Ok(w) => {
                    crate::registry::unavailable::clear("io_uring");
                    own_maps.extend_from_slice(w.own_map_ids());
                    own_progs.extend_from_slice(w.own_prog_ids());
                    Ok((w, Vec::new()))
                }
                Err(e) => {
                    crate::registry::unavailable::note("io_uring", crate::bpf::load::failure_reason(&e));
                    tracing::warn!(error = %format!("{e:#}"), "io_uring table walk not loaded: unexplained counts it could explain are withheld");
                    Err(format!("{e:#}"))
                }
            }
        });
        UringPart { walk }
    }

    /// What the rings the task walk found (`None`: the walk failed, so
    /// nothing is known) hold; `None` when that cannot be known.
    pub(super) fn observe(
        &mut self,
        rings: Option<&[RingFd]>,
        report: &mut Report,
    ) -> Option<RingObservation> {
        let rings = rings?;
        let none = |complete, attach_complete| RingObservation {
            maps: Vec::new(),
            progs: Vec::new(),
            records: Vec::new(),
            complete,
            attach_complete,
        };
        if rings.is_empty() {
            return Some(none(true, true));
        }
        match &mut self.walk {
            Some(Ok((w, buf))) => {
                let (recs, complete) = report.run("io_uring", || {
                    let lost = w.lost_writes();
                    let recs = w.walk(buf)?;
                    let complete =
                        w.lost_writes() == lost && recs.iter().all(|r| r.object.is_some());
                    Ok((recs, complete))
                })?;
                let of = |k: RingObject| -> Vec<(u64, u32)> {
                    recs.iter()
                        .filter_map(|r| match r.object {
                            Some((o, id)) if o == k => Some((r.file_ptr, id)),
                            _ => None,
                        })
                        .collect()
                };
                Some(RingObservation {
                    maps: of(RingObject::Map),
                    progs: of(RingObject::Program),
                    records: recs,
                    complete,
                    attach_complete: complete,
                })
            }
            Some(Err(e)) => {
                let e = anyhow::anyhow!("{e}");
                report.record::<()>("io_uring", 0.0, Err(e));
                None
            }
            // No bpf_loop: the tables cannot be walked. A ring whose fdinfo
            // lists no BPF object file holds none, so the source is complete.
            None => Some(none(
                !uring_fdinfo_holds_bpf_files(Path::new("/proc"), rings),
                !uring_fdinfo_holds_attach_files(Path::new("/proc"), rings),
            )),
        }
    }
}

/// Whether any io_uring fd's fdinfo lists a BPF map, program or link file
/// among its registered files (`UserFiles:` lines, one per file: `  0:
/// bpf-map` with the dentry name before 6.x, `  0: anon_inode:bpf-map` with
/// the path after). A ring that cannot be read counts as holding one.
fn uring_fdinfo_holds_bpf_files(proc: &Path, rings: &[RingFd]) -> bool {
    let mut seen = rustc_hash::FxHashSet::default();
    rings.iter().filter(|r| seen.insert(r.file_ptr)).any(|r| {
        match std::fs::read_to_string(proc.join(format!("{}/fdinfo/{}", r.tgid, r.fd))) {
            Ok(s) => s.lines().any(|l| {
                let name = l.trim_end();
                ["bpf-map", "bpf-prog", "bpf_link"]
                    .iter()
                    .any(|n| name.ends_with(&format!(": {n}")) || name.ends_with(&format!(":{n}")))
            }),
            // Closed since the walk: it holds nothing now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
        }
    })
}

/// Whether any io_uring fd's fdinfo lists a socket or perf event file among
/// its registered files (`socket:[ino]`, `[perf_event]`): either may keep a
/// program. A ring that cannot be read counts as holding one.
fn uring_fdinfo_holds_attach_files(proc: &Path, rings: &[RingFd]) -> bool {
    let mut seen = rustc_hash::FxHashSet::default();
    rings.iter().filter(|r| seen.insert(r.file_ptr)).any(|r| {
        match std::fs::read_to_string(proc.join(format!("{}/fdinfo/{}", r.tgid, r.fd))) {
            Ok(s) => s.lines().any(|l| {
                let name = l.trim_end();
                name.contains(": socket:[") || name.ends_with("[perf_event]")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_fdinfo_names_bpf_files_in_either_format() {
        let dir = tempfile::tempdir().unwrap();
        let write = |pid: u32, fd: u32, body: &str| {
            let d = dir.path().join(format!("{pid}/fdinfo"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(fd.to_string()), body).unwrap();
        };
        let ring = |tgid, fd, file_ptr| RingFd { tgid, fd, file_ptr };
        // 5.10: dentry names; 6.x: paths.
        write(
            1,
            3,
            "SqThread:\t-1\nUserFiles:\t2\n    0: bpf-map\n    1: passwd\n",
        );
        write(2, 4, "UserFiles:\t1\n    0: anon_inode:bpf-prog\n");
        write(
            3,
            5,
            "UserFiles:\t1\n    0: /tmp/not-bpf-map.txt\nUserBufs:\t0\n",
        );
        assert!(uring_fdinfo_holds_bpf_files(dir.path(), &[ring(1, 3, 0xa)]));
        assert!(uring_fdinfo_holds_bpf_files(dir.path(), &[ring(2, 4, 0xb)]));
        assert!(!uring_fdinfo_holds_bpf_files(
            dir.path(),
            &[ring(3, 5, 0xc)]
        ));
        write(
            4,
            6,
            "UserFiles:\t2\n    0: socket:[123]\n    1: anon_inode:[perf_event]\n",
        );
        assert!(uring_fdinfo_holds_attach_files(
            dir.path(),
            &[ring(4, 6, 0xe)]
        ));
        assert!(!uring_fdinfo_holds_bpf_files(
            dir.path(),
            &[ring(4, 6, 0xe)]
        ));
        assert!(!uring_fdinfo_holds_attach_files(
            dir.path(),
            &[ring(1, 3, 0xa)]
        ));
        // A ring closed since the walk holds nothing.
        assert!(!uring_fdinfo_holds_bpf_files(
            dir.path(),
            &[ring(9, 9, 0xd)]
        ));
    }
}
