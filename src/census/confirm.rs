//! The confirming re-reads: references that looked unexplained are read
//! again after a delay, and those the kernel released meanwhile are not
//! published as leaks.
use super::{Census, IdMap, Snapshot};

impl Census {
    /// Re-read the maps with unexplained references after the confirm delay,
    /// up to three times while their refcounts keep falling. References the
    /// kernel released meanwhile (deferred frees: a program just unloaded, a
    /// map file just closed, a map freed) are recorded as `settled` and are
    /// not published as unexplained: a leak is a reference that stays. Maps
    /// freed meanwhile leave the snapshot.
    pub(super) fn confirm(&mut self, snap: &mut Snapshot) -> anyhow::Result<()> {
        let mut pending: IdMap<i64> = snap
            .maps
            .iter()
            .filter(|m| {
                snap.holders
                    .get(&m.id)
                    .and_then(|h| h.unexplained(m.refcnt))
                    .unwrap_or(0)
                    > 0
            })
            .map(|m| (m.id, m.refcnt))
            .collect();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            std::thread::sleep(self.opts.confirm_delay);
            let now: IdMap<i64> = self
                .progs
                .read_maps(&mut self.bufs[0])?
                .into_iter()
                .filter(|m| pending.contains_key(&m.id))
                .map(|m| (m.id, m.refcnt))
                .collect();
            let mut fell = false;
            pending.retain(|id, last| {
                let cur = now.get(id).copied().unwrap_or(0);
                if cur < *last {
                    fell = true;
                    if let (Some(h), Some(m)) = (
                        snap.holders.get_mut(id),
                        snap.maps.iter().find(|m| m.id == *id),
                    ) {
                        h.settled = m.refcnt - cur;
                    }
                    *last = cur;
                }
                cur > 0
            });
            if !fell {
                break;
            }
        }
        // Maps freed meanwhile were the last moments of something already
        // gone (another exporter's dropped load, an agent's teardown): not
        // the node's maps in this scrape.
        let gone: rustc_hash::FxHashSet<u32> = snap
            .holders
            .iter()
            .filter(|(_, h)| h.settled > 0)
            .map(|(id, _)| *id)
            .filter(|id| !pending.contains_key(id))
            .collect();
        snap.settled_refs = snap.holders.values().map(|h| h.settled.max(0) as u64).sum();
        if !gone.is_empty() {
            snap.maps.retain(|m| !gone.contains(&m.id));
            for id in &gone {
                snap.holders.remove(id);
                snap.memory.remove(id);
            }
        }
        self.confirm_programs(snap)
    }

    /// The same re-reads for programs with unexplained references.
    /// Programs freed meanwhile keep their record; their settled references
    /// make the count zero.
    fn confirm_programs(&mut self, snap: &mut Snapshot) -> anyhow::Result<()> {
        let Some(progs) = &snap.programs else {
            return Ok(());
        };
        let mut pending: IdMap<i64> = progs
            .iter()
            .filter(|p| {
                snap.prog_holders
                    .get(&p.id)
                    .and_then(|h| h.unexplained(p.refcnt))
                    .unwrap_or(0)
                    > 0
            })
            .map(|p| (p.id, p.refcnt))
            .collect();
        let first = pending.clone();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            std::thread::sleep(self.opts.confirm_delay);
            let Some(read) = self.progs.read_progs(&mut self.prog_buf) else {
                break;
            };
            let now: IdMap<i64> = read?
                .into_iter()
                .filter(|p| pending.contains_key(&p.id))
                .map(|p| (p.id, p.refcnt))
                .collect();
            let mut fell = false;
            pending.retain(|id, last| {
                let cur = now.get(id).copied().unwrap_or(0);
                if cur < *last {
                    fell = true;
                    if let Some(h) = snap.prog_holders.get_mut(id) {
                        h.settled = first[id] - cur;
                    }
                    *last = cur;
                }
                cur > 0
            });
            if !fell {
                break;
            }
        }
        Ok(())
    }
}
