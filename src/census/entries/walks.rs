//! The walks that count a map's elements: `iter/bpf_map_elem` through the
//! census programs, GET_NEXT_KEY from user space, behind [`Walker`] so that
//! the counting around them is tested without a kernel.
use std::os::fd::AsFd;
use std::time::Instant;

use super::Method;
use crate::bpf::census::Programs;
use crate::census::MapRecord;
use crate::sys;

/// The walks themselves (the census programs and bpf() calls), apart from
/// the planning so that the planning is tested without a kernel.
pub(crate) trait Walker {
    /// Count `m`'s elements; `Ok(None)` when the walk was stopped at
    /// `deadline` (checked between chunks of the walk, so a walk passes it
    /// by at most one chunk).
    fn count(
        &mut self,
        m: &MapRecord,
        method: Method,
        deadline: Instant,
    ) -> anyhow::Result<Option<u64>>;

    /// The clock the budget is measured with (tests simulate it).
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The census's element walks. Each opens the map by id and closes it
/// before it returns.
pub(crate) struct Walks<'a>(pub(crate) &'a Programs);

impl Walker for Walks<'_> {
    fn count(
        &mut self,
        m: &MapRecord,
        method: Method,
        deadline: Instant,
    ) -> anyhow::Result<Option<u64>> {
        let fd = sys::map_fd_by_id(m.id)?;
        match method {
            Method::Iter => self.0.count_elements(fd.as_fd(), deadline),
            Method::NextKey => {
                // A walk longer than twice the capacity restarted under
                // concurrent deletes: no count rather than a wrong one.
                let limit = 2 * m.max_entries as u64 + 16;
                match sys::count_keys(fd.as_fd(), m.key_size as usize, limit, deadline)? {
                    sys::KeyWalk::Done(n) => Ok(Some(n)),
                    sys::KeyWalk::Stopped => Ok(None),
                    sys::KeyWalk::TooLong => anyhow::bail!(
                        "GET_NEXT_KEY walk of map {} did not end (map changing)",
                        m.id
                    ),
                }
            }
            _ => anyhow::bail!("no walk for method {}", method.as_str()),
        }
    }
}
