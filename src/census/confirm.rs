//! The confirming re-reads: references that looked unexplained are read
//! again after a delay, and those the kernel released meanwhile are not
//! published as leaks.
use std::time::Duration;

use super::holders::Holders;
use super::programs::ProgHolders;
use super::{Census, IdMap, Snapshot};
use crate::bpf::census::{MapRecord, ProgRecord};

impl Census {
    /// Re-read the maps with unexplained references after the confirm delay,
    /// up to three times while their refcounts keep falling. References the
    /// kernel released meanwhile (deferred frees: a program just unloaded, a
    /// map file just closed, a map freed) are recorded as `settled` and are
    /// not published as unexplained: a leak is a reference that stays. Maps
    /// freed meanwhile leave the snapshot. Then the same re-reads for
    /// programs; programs freed meanwhile keep their record, their settled
    /// references make the count zero.
    pub(super) fn confirm(&mut self, snap: &mut Snapshot) -> anyhow::Result<()> {
        let delay = self.opts.confirm_delay;
        let (progs, buf) = (&self.progs, &mut self.bufs[0]);
        let pending = settle(delay, &snap.maps, &mut snap.holders, || {
            Some(progs.read_maps(buf))
        })?;
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
        if let Some(records) = &snap.programs {
            let (progs, buf) = (&self.progs, &mut self.prog_buf);
            settle(delay, records, &mut snap.prog_holders, || {
                progs.read_progs(buf)
            })?;
        }
        Ok(())
    }
}

/// A census record with a refcount: a map's or a program's.
trait Refcounted {
    fn id(&self) -> u32;
    fn refcnt(&self) -> i64;
}

impl Refcounted for MapRecord {
    fn id(&self) -> u32 {
        self.id
    }
    fn refcnt(&self) -> i64 {
        self.refcnt
    }
}

impl Refcounted for ProgRecord {
    fn id(&self) -> u32 {
        self.id
    }
    fn refcnt(&self) -> i64 {
        self.refcnt
    }
}

/// Holder counts that can leave references unexplained and record those
/// the kernel released meanwhile: a map's or a program's.
trait Settles {
    fn unexplained(&self, refcnt: i64) -> Option<i64>;
    fn set_settled(&mut self, released: i64);
}

impl Settles for Holders {
    fn unexplained(&self, refcnt: i64) -> Option<i64> {
        Holders::unexplained(self, refcnt)
    }
    fn set_settled(&mut self, released: i64) {
        self.settled = i32::try_from(released).unwrap_or(i32::MAX);
    }
}

impl Settles for ProgHolders {
    fn unexplained(&self, refcnt: i64) -> Option<i64> {
        ProgHolders::unexplained(self, refcnt)
    }
    fn set_settled(&mut self, released: i64) {
        self.settled = released;
    }
}

/// Re-read, `delay` apart and up to three times while any of their
/// refcounts keeps falling, the objects of `records` with unexplained
/// references (by `holders`); each one's `settled` becomes the references
/// released since `records` was read. `reread` reads every object again
/// (`None`: it cannot, and the re-reads stop). What stays pending: each
/// object still referenced with its last refcount, the ones freed meanwhile
/// left out.
fn settle<R: Refcounted, H: Settles>(
    delay: Duration,
    records: &[R],
    holders: &mut IdMap<H>,
    mut reread: impl FnMut() -> Option<anyhow::Result<Vec<R>>>,
) -> anyhow::Result<IdMap<i64>> {
    let first: IdMap<i64> = records
        .iter()
        .filter(|r| {
            holders
                .get(&r.id())
                .and_then(|h| h.unexplained(r.refcnt()))
                .unwrap_or(0)
                > 0
        })
        .map(|r| (r.id(), r.refcnt()))
        .collect();
    let mut pending = first.clone();
    for _ in 0..3 {
        if pending.is_empty() {
            break;
        }
        std::thread::sleep(delay);
        let Some(read) = reread() else {
            break;
        };
        let now: IdMap<i64> = read?
            .into_iter()
            .filter(|r| pending.contains_key(&r.id()))
            .map(|r| (r.id(), r.refcnt()))
            .collect();
        let mut fell = false;
        pending.retain(|id, last| {
            let cur = now.get(id).copied().unwrap_or(0);
            if cur < *last {
                fell = true;
                if let Some(h) = holders.get_mut(id) {
                    h.set_settled(first[id] - cur);
                }
                *last = cur;
            }
            cur > 0
        });
        if !fell {
            break;
        }
    }
    Ok(pending)
}
