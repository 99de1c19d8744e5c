//! BPF iterator I/O: a new iterator instance on a link is a file whose
//! whole content is one walk's output. [`IterObject`] is the load, attach
//! and read path of the objects that hold one iterator each.
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::Path;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::Link;

use super::load;

/// An object of one iterator program (io_uring tables, in-flight files,
/// network namespaces), loaded apart from the census so that the census
/// loads without it: the skeleton, its attached iterator, and the ids of
/// its own maps and programs (which the census leaves out).
pub(crate) struct IterObject<S> {
    pub(crate) skel: S,
    link: Link,
    own_map_ids: Vec<u32>,
    own_prog_ids: Vec<u32>,
}

impl<S: Skel<'static>> IterObject<S> {
    /// Open `builder()` (with `btf_custom` for CO-RE when given), load it
    /// with its verifier statistics recorded as `object`, and attach its
    /// iterator with `attach`; `attaching` names the iterator in errors.
    pub(crate) fn load<B>(
        object: &'static str,
        btf_custom: Option<&Path>,
        builder: impl Fn() -> B,
        attach: impl FnOnce(&S) -> libbpf_rs::Result<Link>,
        attaching: &str,
    ) -> anyhow::Result<Self>
    where
        B: SkelBuilder<'static>,
        B::Output: OpenSkel<'static, Output = S>,
    {
        let skel = load::load_counted(object, || load::open(builder(), btf_custom, object))
            .map_err(|e| load::load_error(object, e))?;
        let link = attach(&skel).with_context(|| format!("attaching {attaching}"))?;
        let own_map_ids = crate::sys::object_map_ids(skel.object());
        let own_prog_ids = crate::sys::object_prog_ids(skel.object());
        Ok(IterObject {
            skel,
            link,
            own_map_ids,
            own_prog_ids,
        })
    }
}

impl<S> IterObject<S> {
    pub(crate) fn own_map_ids(&self) -> &[u32] {
        &self.own_map_ids
    }

    pub(crate) fn own_prog_ids(&self) -> &[u32] {
        &self.own_prog_ids
    }

    /// A new walk ([`open`]).
    pub(crate) fn open(&self) -> anyhow::Result<std::fs::File> {
        open(&self.link)
    }

    /// One walk's whole output, read in batches ([`read_batched`]).
    pub(crate) fn read_batched<'a>(&self, buf: &'a mut Vec<u8>) -> anyhow::Result<&'a [u8]> {
        read_batched(open(&self.link)?, buf)
    }
}

/// A counter a program keeps in its object's `.bss` (0 where the object
/// has none), read anew on every call.
pub(crate) fn bss_counter<T>(bss: Option<&T>, field: impl FnOnce(&T) -> &u64) -> u64 {
    // SAFETY: a plain read of an aligned u64 in the mmapped .bss that the
    // programs update; volatile, so every call reads it again.
    bss.map(|b| unsafe { std::ptr::read_volatile(field(b)) })
        .unwrap_or(0)
}

/// A new iterator instance on `link`, as a plain file (readable on any thread).
pub(crate) fn open(link: &Link) -> anyhow::Result<std::fs::File> {
    // SAFETY: bpf_iter_create takes a link fd and returns a new fd or -errno.
    let fd = unsafe { libbpf_sys::bpf_iter_create(link.as_fd().as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd)).context("creating iterator");
    }
    // SAFETY: `fd` is a fresh fd that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Read one walk's whole output into `buf` (cleared first). Callers keep
/// their buffers from one scrape to the next, so a walk of megabytes does not
/// fault in and grow a fresh buffer each time.
pub(crate) fn read_file(mut f: std::fs::File, buf: &mut Vec<u8>) -> anyhow::Result<&[u8]> {
    buf.clear();
    f.read_to_end(buf).context("reading iterator")?;
    Ok(buf)
}

/// [`open`] then [`read_file`].
pub(crate) fn read<'a>(link: &Link, buf: &'a mut Vec<u8>) -> anyhow::Result<&'a [u8]> {
    read_file(open(link)?, buf)
}

/// The size of every `read` [`read_batched`] makes: twice the kernel's
/// iterator buffer (8 pages).
fn batched_read_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096).max(4096) * 16
}

/// [`read_file`] for iterators that walk hash buckets in batches (iter/unix):
/// when a `read` ends because the caller's buffer is full, the kernel drops
/// the object it has just fetched and the rest of its bucket, and the next
/// `read` starts at the next bucket. Every `read` here is larger than the
/// kernel's buffer, so a walk ends a `read` only at its end, or when the
/// kernel's buffer overflows (which the program reports itself).
pub(crate) fn read_batched(mut f: std::fs::File, buf: &mut Vec<u8>) -> anyhow::Result<&[u8]> {
    buf.clear();
    let chunk = batched_read_size();
    loop {
        let len = buf.len();
        buf.resize(len + chunk, 0);
        match f.read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                if n == 0 {
                    return Ok(buf);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e).context("reading iterator");
            }
        }
    }
}

/// Set in a count walk's progress records; clear in its final record.
pub(crate) const PROGRESS: u64 = 1 << 63;

/// The total of a count walk whose u64 records are progress records
/// ([`PROGRESS`] set) and, last, the total; read one record per `read` so
/// that the walk can be stopped between records: `Ok(None)` when `deadline`
/// passed before the total was written (the iterator is then closed, which
/// ends the walk). Each `read` runs the walk until its next record; where
/// the program writes nothing for a million objects the kernel ends that
/// read with EAGAIN (MAX_ITER_OBJECTS), and the next read continues.
pub(crate) fn read_count_walk(
    mut f: std::fs::File,
    deadline: std::time::Instant,
) -> anyhow::Result<Option<u64>> {
    let mut rec = [0u8; 8];
    loop {
        match f.read(&mut rec) {
            Ok(0) => anyhow::bail!("count walk ended without its total: record layout mismatch"),
            Ok(8) => {
                let v = u64::from_le_bytes(rec);
                if v & PROGRESS == 0 {
                    return Ok(Some(v));
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(None);
                }
            }
            Ok(n) => anyhow::bail!(
                "count walk wrote a {n}-byte record, not one u64: record layout mismatch"
            ),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading iterator"),
        }
    }
}
