//! The only place with `unsafe` in the census: thin wrappers over libbpf's
//! low-level bpf() calls that libbpf-rs does not expose in the form we need
//! (its query iterators stop silently at the first error, which would make a
//! census under-count instead of fail).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;

fn fd_or_err(ret: i32) -> io::Result<OwnedFd> {
    if ret < 0 {
        // libbpf 1.x returns -errno.
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        // SAFETY: a non-negative return from a libbpf fd-returning call is a
        // fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }
}

/// BPF_MAP_GET_FD_BY_ID (needs CAP_SYS_ADMIN). ENOENT when the map is gone.
pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper, no pointers.
    fd_or_err(unsafe { libbpf_sys::bpf_map_get_fd_by_id(id) })
}

/// BPF_OBJ_GET of a bpffs path, read-only (BPF_F_RDONLY) when `rdonly`.
/// Maps and programs accept read-only; links refuse it with EINVAL.
pub fn obj_get(path: &Path, rdonly: bool) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let opts = libbpf_sys::bpf_obj_get_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_obj_get_opts>() as _,
        file_flags: if rdonly { libbpf_sys::BPF_F_RDONLY } else { 0 },
        path_fd: 0,
    };
    // SAFETY: `c` and `opts` outlive the call; libbpf only reads them.
    fd_or_err(unsafe { libbpf_sys::bpf_obj_get_opts(c.as_ptr(), &opts) })
}

/// Every link id, from BPF_LINK_GET_NEXT_ID. Errors other than the final
/// ENOENT are returned, never swallowed.
pub fn all_link_ids() -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    let mut cur = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid out-pointer for the duration of the call.
        let ret = unsafe { libbpf_sys::bpf_link_get_next_id(cur, &mut next) };
        if ret < 0 {
            let e = io::Error::from_raw_os_error(-ret);
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(ids);
            }
            return Err(e);
        }
        ids.push(next);
        cur = next;
    }
}

/// BPF_LINK_GET_FD_BY_ID.
pub fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall wrapper, no pointers.
    fd_or_err(unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) })
}

/// BPF_OBJ_GET_INFO_BY_FD for a program into `info`, which the caller has
/// zeroed and, for arrays it wants, pointed at buffers that outlive the call.
fn prog_info_into(fd: i32, info: &mut libbpf_sys::bpf_prog_info) -> io::Result<()> {
    let mut len = std::mem::size_of_val(info) as u32;
    // SAFETY: info/len are valid for the call; any array pointers in info
    // are the caller's live buffers of the advertised lengths.
    let ret = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            fd,
            (info as *mut libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

/// libbpf's name of a program type (what bpftool prints), or None for a
/// type the linked libbpf does not know.
pub fn libbpf_prog_type_name(t: u32) -> Option<&'static str> {
    // SAFETY: libbpf returns NULL or a pointer to a static NUL-terminated
    // string of its own type-name table, valid for the process's life.
    let p = unsafe { libbpf_sys::libbpf_bpf_prog_type_str(t) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL: a static C string (above).
    unsafe { std::ffi::CStr::from_ptr(p) }.to_str().ok()
}

/// The executable file a process runs, as (device, inode) of
/// `/proc/<pid>/exe` (the file itself, in whatever mount namespace); `None`
/// when the process is gone or cannot be inspected.
pub fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((md.dev(), md.ino()))
}

/// Read one `key:\tvalue` field of /proc/self/fdinfo/<fd>.
pub fn fdinfo(fd: &OwnedFd) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
}

/// Lower the calling thread's scheduling priority to nice `n` (on Linux a
/// nice value belongs to the thread). Failure leaves it as it was.
pub fn nice_this_thread(n: i32) -> io::Result<()> {
    // SAFETY: integer arguments only; who = 0 is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make mimalloc keep freed memory for reuse only briefly (20 ms, so
/// within one scrape a table freed early is reused by a later one instead
/// of faulting in fresh pages) and commit arena memory only on use; the
/// collector thread returns all freed memory after each batch of
/// requests ([`release_freed_memory`]), so between scrapes the exporter's
/// resident size does not keep a scrape's high-water mark (BENCHMARKS.md
/// compares the settings).
pub fn tune_allocator() {
    // mimalloc option numbers (mimalloc.h: mi_option_e, the same in v2 and v3).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: plain option setters of the global allocator, valid at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 20);
    }
    // libbpf (C) allocates with glibc's malloc, in the arena of whichever
    // thread loads the BPF objects, and parsing vmlinux BTF there leaves
    // megabytes resident after load. Fixed thresholds keep big blocks
    // (BTF data) in their own mappings, returned to the OS on free (the
    // default threshold rises to the largest block freed, up to 32 MiB).
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
    // No transparent huge pages for this process: mimalloc advises them on
    // its arenas, and a scrape touching a fresh buffer would fault in (and
    // zero) 2 MiB at a time, growing resident memory in 2 MiB steps.
    const PR_SET_THP_DISABLE: libc::c_int = 41;
    // SAFETY: prctl with an integer option; failure (old kernel) is harmless.
    unsafe {
        libc::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Return the memory mimalloc keeps freed (every thread's, in its arenas)
/// to the OS now.
pub fn release_freed_memory() {
    // SAFETY: a collection of the global allocator, valid at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Give the C heap's free pages back to the OS (after loading the BPF
/// objects, whose load-time allocations libbpf has freed).
pub fn trim_c_heap() {
    // SAFETY: malloc_trim only releases free memory of glibc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The highest program id in use now (BPF_PROG_GET_NEXT_ID walk; 0 when
/// none).
pub fn max_prog_id() -> io::Result<u32> {
    max_id(libbpf_sys::bpf_prog_get_next_id)
}

/// The highest map id in use now (BPF_MAP_GET_NEXT_ID walk; 0 when none).
pub fn max_map_id() -> io::Result<u32> {
    max_id(libbpf_sys::bpf_map_get_next_id)
}

/// The highest link id in use now (BPF_LINK_GET_NEXT_ID walk; 0 when
/// none).
pub fn max_link_id() -> io::Result<u32> {
    max_id(libbpf_sys::bpf_link_get_next_id)
}

/// The last id a `bpf_*_get_next_id` walk reaches (0 when none).
fn max_id(get_next: unsafe extern "C" fn(u32, *mut u32) -> i32) -> io::Result<u32> {
    let mut cur = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid out-pointer for the duration of the call.
        let ret = unsafe { get_next(cur, &mut next) };
        if ret < 0 {
            let e = io::Error::from_raw_os_error(-ret);
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(cur);
            }
            return Err(e);
        }
        cur = next;
    }
}

/// BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): the kernel keeps per-program run
/// counts and times while the returned fd is open.
pub fn enable_run_time_stats() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper, no pointers.
    fd_or_err(unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) })
}

/// A program's (run_cnt, run_time_ns) from bpf_prog_info.
pub fn prog_run_stats(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: zeroed bpf_prog_info asks for no arrays; the kernel only fills it.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    prog_info_into(fd.as_raw_fd(), &mut info)?;
    Ok((info.run_cnt, info.run_time_ns))
}

/// CLOCK_BOOTTIME in nanoseconds (the clock of bpf_ktime_get_boot_ns()).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Ids of the maps a loaded BPF object owns (its own maps, reported apart
/// from the node's).
pub fn object_map_ids(obj: &libbpf_rs::Object) -> Vec<u32> {
    use libbpf_rs::MapCore;
    obj.maps()
        .filter_map(|m| m.info().ok())
        .map(|i| i.info.id)
        .collect()
}

/// Program ids of the loaded programs of `obj` (programs left unloaded,
/// autoload off, have none).
pub fn object_prog_ids(obj: &libbpf_rs::Object) -> Vec<u32> {
    use std::os::fd::AsFd;
    obj.progs()
        .filter(|p| p.autoload())
        .filter_map(|p| {
            // SAFETY: zeroed bpf_prog_info asks for no arrays.
            let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
            prog_info_into(p.as_fd().as_raw_fd(), &mut info).ok()?;
            Some(info.id)
        })
        .collect()
}

/// Move the calling thread into the network namespace `ns` (an open
/// `/proc/<pid>/ns/net`). Only this thread moves: a network namespace is
/// per task. Needs CAP_SYS_ADMIN over the namespace.
pub fn setns_net(ns: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes an fd and a flag and touches no memory of ours; the
    // fd is borrowed, so it stays open for the call.
    let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A pidfd of process `pid` (pidfd_open, 5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory of
    // ours; a non-negative result is a fresh fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A duplicate of file descriptor `fd` of the process behind `pidfd`
/// (pidfd_getfd, 5.6+; the caller needs ptrace attach access to it).
pub fn pidfd_getfd(pidfd: std::os::fd::BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags and touches no memory of
    // ours; a non-negative result is a fresh fd we own.
    let n = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n as i32) })
}

/// The network namespace of socket `sock`, opened (ioctl SIOCGSKNS, 4.9+;
/// needs CAP_NET_ADMIN over that namespace).
pub fn socket_netns(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a fresh fd we own.
    let n = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A new io_uring whose registered-file table (IORING_REGISTER_FILES) holds
/// the files of `fds`: references that stay after the fds are closed, in no
/// fd table. Closing the ring releases them.
pub fn io_uring_with_files(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<OwnedFd> {
    const IORING_REGISTER_FILES: libc::c_long = 2;
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params)
    // (120 bytes) into `params`, which lives across the call.
    let ring = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_long,
            params.as_mut_ptr(),
        )
    };
    if ring < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative io_uring_setup return is a fresh fd nothing else owns.
    let ring = unsafe { OwnedFd::from_raw_fd(ring as i32) };
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the kernel reads `raw.len()` ints from `raw`, which lives
    // across the call; the ring fd is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd() as libc::c_long,
            IORING_REGISTER_FILES,
            raw.as_ptr(),
            raw.len() as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ring)
}

/// Move `ring` into the calling thread's registered-ring table
/// (IORING_REGISTER_RING_FDS, 5.18+) and close its fd: the ring, and the
/// files its table holds, then live in no fd table until the thread exits.
/// On failure the ring is handed back, still open.
pub fn io_uring_hide_ring(ring: OwnedFd) -> Result<(), (io::Error, OwnedFd)> {
    const IORING_REGISTER_RING_FDS: libc::c_long = 20;
    // struct io_uring_rsrc_update: offset (-1: any free slot), resv, data.
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: ring.as_raw_fd() as u64,
    };
    // SAFETY: the kernel reads and writes one struct io_uring_rsrc_update
    // (16 bytes) at `up`, which lives across the call; the ring fd is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd() as libc::c_long,
            IORING_REGISTER_RING_FDS,
            &mut up as *mut RsrcUpdate,
            1 as libc::c_long,
        )
    };
    if r < 0 {
        return Err((io::Error::last_os_error(), ring));
    }
    drop(ring);
    Ok(())
}

/// How a [`count_keys`] walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWalk {
    /// The walk reached the last key: the map's key count.
    Done(u64),
    /// More than `limit` keys: the map changed under the walk (a deleted
    /// cursor key restarts the walk at the first key).
    TooLong,
    /// The deadline passed first (checked every [`KEY_WALK_CHUNK`] keys).
    Stopped,
}

/// Keys a [`count_keys`] walk reads between two looks at the clock.
pub const KEY_WALK_CHUNK: u64 = 256;

/// Keys of a map counted by BPF_MAP_GET_NEXT_KEY from user space, at most
/// `limit`, until `deadline`. Errors name the kernel's refusal (e.g.
/// EOPNOTSUPP for local storage).
pub fn count_keys(
    fd: std::os::fd::BorrowedFd<'_>,
    key_size: usize,
    limit: u64,
    deadline: std::time::Instant,
) -> io::Result<KeyWalk> {
    use std::os::fd::AsRawFd;
    let size = key_size.max(1);
    let mut cur = vec![0u8; size];
    let mut next = vec![0u8; size];
    let mut n = 0u64;
    let mut first = true;
    loop {
        let key = if first {
            std::ptr::null()
        } else {
            cur.as_ptr() as *const libc::c_void
        };
        // SAFETY: `key` is null or points to key_size readable bytes, `next`
        // to key_size writable bytes, both live for the call.
        let ret = unsafe {
            libbpf_sys::bpf_map_get_next_key(
                fd.as_raw_fd(),
                key,
                next.as_mut_ptr() as *mut libc::c_void,
            )
        };
        if ret < 0 {
            let e = io::Error::from_raw_os_error(-ret);
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(KeyWalk::Done(n));
            }
            return Err(e);
        }
        n += 1;
        if n > limit {
            return Ok(KeyWalk::TooLong);
        }
        if n % KEY_WALK_CHUNK == 0 && std::time::Instant::now() >= deadline {
            return Ok(KeyWalk::Stopped);
        }
        first = false;
        std::mem::swap(&mut cur, &mut next);
    }
}

/// BPF_PROG_QUERY of `attach_type` on `target` (an ifindex of the calling
/// thread's network namespace, or a namespace fd): the programs attached,
/// at most `max`, and with `links` the id of the link holding each (0: none;
/// tcx and netkit only, 6.6+). Returns the programs and the kernel's total
/// count (larger than `max` when cut).
pub fn prog_query(
    target: i32,
    attach_type: u32,
    max: u32,
    links: bool,
) -> io::Result<(Vec<(u32, u32)>, u32)> {
    let mut progs = vec![0u32; max as usize];
    let mut link_ids = vec![0u32; if links { max as usize } else { 0 }];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: progs.as_mut_ptr(),
        link_ids: if links {
            link_ids.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        },
        ..Default::default()
    };
    opts.__bindgen_anon_1.prog_cnt = max;
    // SAFETY: prog_ids (and link_ids when set) have room for prog_cnt ids,
    // the kernel writes no more; opts lives across the call.
    let rc = unsafe {
        libbpf_sys::bpf_prog_query_opts(
            target,
            attach_type as libbpf_sys::bpf_attach_type,
            &mut opts,
        )
    };
    // ENOSPC: more programs than `max`; the count is still the total.
    if rc < 0 && -rc != libc::ENOSPC {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    // SAFETY: prog_cnt is the u32 view of the union the kernel filled.
    let count = unsafe { opts.__bindgen_anon_1.prog_cnt };
    let n = count.min(max) as usize;
    let out = (0..n)
        .map(|i| (progs[i], link_ids.get(i).copied().unwrap_or(0)))
        .collect();
    Ok((out, count))
}
