//! bpf() queries of attachments: BPF_PROG_QUERY on a target (a cgroup),
//! a program's type by id, whether a BTF object id exists, and libbpf's
//! attach type names.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// libbpf's name of an attach type (`cgroup_inet_ingress`).
pub fn attach_type_name(t: u32) -> String {
    // SAFETY: libbpf returns a static string or NULL.
    let p = unsafe { libbpf_rs::libbpf_sys::libbpf_bpf_attach_type_str(t) };
    if p.is_null() {
        return format!("attach type {t}");
    }
    // SAFETY: a NUL-terminated static string.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// BPF_PROG_QUERY (not effective) of `attach_type` on `fd`: the ids of the
/// programs attached there.
pub fn prog_query(fd: &OwnedFd, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut cnt = ids.len() as u32;
        let mut flags = 0u32;
        // SAFETY: ids has room for cnt ids; flags and cnt outlive the call.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_prog_query(
                fd.as_raw_fd(),
                attach_type,
                0,
                &mut flags,
                ids.as_mut_ptr(),
                &mut cnt,
            )
        };
        if rc == 0 {
            ids.truncate((cnt as usize).min(ids.len()));
            return Ok(ids);
        }
        let e = io::Error::from_raw_os_error(-rc);
        // More attached than asked for: the kernel says how many.
        if e.raw_os_error() == Some(libc::ENOSPC) && (cnt as usize) > ids.len() {
            ids = vec![0; cnt as usize];
            continue;
        }
        return Err(e);
    }
}

/// The type of program `id`, or None when no such program exists.
pub fn prog_type_by_id(id: u32) -> Option<u32> {
    // SAFETY: plain bpf() call; the fd is owned right after.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call; no arrays are asked for.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info.type_)
}

/// Whether a BTF object of this id exists.
pub fn btf_exists(id: u32) -> bool {
    // SAFETY: plain bpf() call; the fd is owned right after.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_btf_get_fd_by_id(id) };
    if fd < 0 {
        return false;
    }
    // SAFETY: a fresh fd of ours, closed on drop.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    true
}

/// A struct_ops map's value type: its BTF type id and the BTF object that
/// holds it (`btf_vmlinux_id`, 6.9+; 0 before, where only vmlinux has
/// struct_ops types).
pub fn struct_ops_value_type(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut info = libbpf_rs::libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call; no arrays are asked for.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok((info.btf_vmlinux_value_type_id, info.btf_vmlinux_id))
}
