//! Helpers for root integration tests: build maps with known holders.
#![allow(dead_code)]
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

pub fn require_root() {
    // Root tests run as root here and in CI; failing (not skipping) keeps a
    // misconfigured run from passing silently.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "root integration tests must run as root (sudo, or CI)"
    );
}

/// The running kernel's (major, minor), from /proc/sys/kernel/osrelease.
pub fn kernel_version() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = r
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    kernel_version() >= (major, minor)
}

pub fn ensure_bpffs() {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if !mi
        .lines()
        .any(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf "))
    {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .unwrap();
        assert!(st.success(), "mounting bpffs at /sys/fs/bpf failed");
    }
}

pub fn map(ty: MapType, name: &str, key: u32, value: u32, entries: u32, flags: u32) -> MapHandle {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: flags,
        ..Default::default()
    };
    MapHandle::create(ty, Some(name), key, value, entries, &opts)
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

pub fn id_of(m: &MapHandle) -> u32 {
    m.info().unwrap().info.id
}

/// fdinfo `memlock:` of an fd we hold.
pub fn memlock(fd: RawFd) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// memlock of a map by id (opens and closes a transient fd).
pub fn memlock_by_id(id: u32) -> u64 {
    let h = MapHandle::from_map_id(id).unwrap();
    memlock(h.as_fd().as_raw_fd())
}

/// A non-CLOEXEC duplicate of `fd`, so a spawned child inherits the same file.
pub fn inheritable_dup(fd: RawFd) -> OwnedFd {
    // SAFETY: fcntl(F_DUPFD) on a valid fd returns a new fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
    assert!(n >= 0, "F_DUPFD failed");
    // SAFETY: n is a fresh fd.
    unsafe { OwnedFd::from_raw_fd(n) }
}

/// A long `sleep` whose comm is `comm` (exec'd through a symlink of that name).
pub fn child_with_comm(dir: &Path, comm: &[u8]) -> Child {
    use std::os::unix::ffi::OsStrExt;
    let link: PathBuf = dir.join(std::ffi::OsStr::from_bytes(comm));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
    let c = Command::new(&link).arg("300").spawn().unwrap();
    // Wait until the exec happened (comm changes at exec). Before it, the
    // child's comm is the forking thread's name (libtest names threads after
    // tests), so only the wanted comm ends the wait. /proc/<pid>/comm is the
    // raw comm (at most 15 bytes) plus a newline. Slow under qemu: bounded at
    // 10 s.
    let want = &comm[..comm.len().min(15)];
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(10) {
        if let Ok(c2) = std::fs::read(format!("/proc/{}/comm", c.id())) {
            if c2.starts_with(want) {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    c
}

/// Load a minimal socket-filter program that references `map_fd`
/// (r1 = map; r0 = 0; exit), so the program holds a reference to the map.
pub fn prog_using_map(map_fd: RawFd) -> OwnedFd {
    prog_of_type_using_map(libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER, map_fd)
}

/// [`prog_using_map`] of program type `ty`; it returns 2 (XDP_PASS for an
/// XDP program, so attaching it changes no traffic).
pub fn prog_of_type_using_map(ty: libbpf_sys::bpf_prog_type, map_fd: RawFd) -> OwnedFd {
    let insns: [libbpf_sys::bpf_insn; 4] = [
        insn(0x18, 1, 1, 0, map_fd), // BPF_LD_IMM64 r1, pseudo map fd
        insn(0, 0, 0, 0, 0),
        insn(0xb7, 0, 0, 0, 2), // r0 = 2
        insn(0x95, 0, 0, 0, 0), // exit
    ];
    let lic = std::ffi::CString::new("GPL").unwrap();
    // SAFETY: insns/lic outlive the call; null opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            ty,
            std::ptr::null(),
            lic.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    };
    assert!(
        fd >= 0,
        "bpf_prog_load: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One BPF instruction.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> libbpf_sys::bpf_insn {
    let mut i = libbpf_sys::bpf_insn {
        code,
        off,
        imm,
        ..Default::default()
    };
    i.set_dst_reg(dst);
    i.set_src_reg(src);
    i
}

/// Mount a new bpffs on `dir` (over whatever is mounted there).
pub fn mount_bpffs(dir: &Path) {
    let st = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t bpf on {} failed", dir.display());
}

/// Mount a fresh private bpffs on a temp dir; unmounted on drop.
pub struct PrivateBpffs {
    pub dir: tempfile::TempDir,
}

impl PrivateBpffs {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bpfmap-test-fs")
            .tempdir()
            .unwrap();
        mount_bpffs(dir.path());
        PrivateBpffs { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A 4-slot array of maps named `name` whose inner maps are like `inner`.
pub fn array_of_maps(name: &str, inner: &MapHandle) -> MapHandle {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        inner_map_fd: inner.as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    MapHandle::create(libbpf_rs::MapType::ArrayOfMaps, Some(name), 4, 4, 4, &opts).unwrap()
}

/// Put an inner map into slot `key` of an outer map.
pub fn set_slot(outer: &MapHandle, key: u32, inner: &MapHandle) {
    let v = (inner.as_fd().as_raw_fd() as u32).to_ne_bytes();
    outer.update(&key.to_ne_bytes(), &v, MapFlags::ANY).unwrap();
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

use bpfmap_exporter::census::render::{render, RenderOpts};
use bpfmap_exporter::census::{Census, Snapshot};
use bpfmap_exporter::metrics::{encode_text, Families};

/// The census families of `s`, rendered in the text format, with per-map
/// series for every map (the default budget could leave a test's small maps
/// out on a busy node).
pub fn text(s: &Snapshot) -> String {
    let mut f = Families::new();
    render(
        s,
        &RenderOpts::all(),
        &|_, _| (String::new(), String::new()),
        &mut f,
    );
    String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap()
}

/// Retake the census until `pred` holds (releases are deferred), bounded.
pub fn until(c: &mut Census, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (s, _) = c.take(&[]);
        if pred(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Send `fd` over `sock` in an SCM_RIGHTS message (one data byte).
pub fn send_fd(sock: &impl AsRawFd, fd: i32) {
    let mut buf = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr zeroed then pointed at live buffers; the cmsg macros
    // address within cbuf, which is CMSG_SPACE bytes long.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
        assert_eq!(
            libc::sendmsg(sock.as_raw_fd(), &msg, 0),
            1,
            "sendmsg SCM_RIGHTS"
        );
    }
}

/// 5.10 charges maps to RLIMIT_MEMLOCK (64 KiB by default); libbpf raises
/// it only at its first load, and maps here may be created before that.
/// Best effort: where root lacks CAP_SYS_RESOURCE (this host) the kernel
/// accounts maps to memory cgroups (5.11+) and ignores the limit.
pub fn unlimit_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// Insert u32 keys 0..n with 8-byte values into `m` with
/// BPF_MAP_UPDATE_BATCH (5.6+), in chunks.
pub fn fill_batch(m: &MapHandle, n: u32) {
    let mut k = 0;
    while k < n {
        let end = (k + 65536).min(n);
        let keys: Vec<u8> = (k..end).flat_map(|i| i.to_ne_bytes()).collect();
        let vals = vec![1u8; (end - k) as usize * 8];
        m.update_batch(&keys, &vals, end - k, MapFlags::ANY, MapFlags::ANY)
            .expect("update batch");
        k = end;
    }
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP/1.1 GET on loopback: (status, body); None when nothing
/// answers (refused, reset, or no status line).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((code, body.to_string()))
}

/// A running exporter on a free loopback port (`--web.listen-address`),
/// its stderr kept in a temp file; killed on drop.
pub struct Exporter {
    pub child: Child,
    pub port: u16,
    stderr: tempfile::NamedTempFile,
}

impl Exporter {
    /// Start `bin` with `args` and wait (up to 60 s) until the port accepts.
    pub fn start(bin: &str, args: &[&str]) -> Exporter {
        let mut e = Exporter::spawn(Command::new(bin), args);
        e.wait_listening(std::time::Duration::from_secs(60));
        e
    }

    /// Start `cmd` (the exporter, or a wrapper whose arguments end with it)
    /// with `--web.listen-address=127.0.0.1:PORT` and `args` appended, stdout
    /// discarded and stderr kept; no wait.
    pub fn spawn(mut cmd: Command, args: &[&str]) -> Exporter {
        let port = free_port();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Exporter {
            child,
            port,
            stderr,
        }
    }

    /// Wait until the port accepts a connection.
    pub fn wait_listening(&mut self, timeout: std::time::Duration) {
        self.wait_until("listening", timeout, |port| {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Poll `ready(port)` every 50 ms until it holds; panic with the
    /// exporter's stderr when the child exits first or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        mut ready: impl FnMut(u16) -> bool,
    ) {
        let t = std::time::Instant::now();
        while !ready(self.port) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "exporter exited ({st}) before {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                t.elapsed() < timeout,
                "exporter not {what} after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Everything the exporter wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An io_uring whose only reference to `fd`'s file is a registered fixed
/// file: a reference no holder source explains.
pub fn uring_fixed_file(fd: RawFd) -> OwnedFd {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: io_uring_setup(entries, params) with a zeroed params buffer
                                 // of the kernel's size.
    let ring = unsafe { libc::syscall(425, 4u32, params.as_mut_ptr()) };
    assert!(
        ring >= 0,
        "io_uring_setup: {}",
        std::io::Error::last_os_error()
    );
    let fds = [fd];
    // SAFETY: IORING_REGISTER_FILES (2) with one valid fd.
    let r = unsafe { libc::syscall(427, ring as i32, 2u32, fds.as_ptr(), 1u32) };
    assert_eq!(
        r,
        0,
        "IORING_REGISTER_FILES: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd.
    unsafe { OwnedFd::from_raw_fd(ring as i32) }
}

/// The body of a `Transfer-Encoding: chunked` response, decoded (`raw`:
/// the bytes after the header).
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rest = raw;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = std::str::from_utf8(&rest[..eol]).unwrap();
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        rest = &rest[eol + 2..];
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..n]);
        rest = &rest[n + 2..];
    }
}

/// One HTTP/1.1 answer read whole from a connection the server closes.
#[derive(Debug)]
pub struct Resp {
    pub code: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.code, self.text()))
    }
}

/// Read an answer to a `Connection: close` request until the server closes
/// the connection; a chunked body is decoded.
pub fn read_response(mut s: impl std::io::Read) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let headers = String::from_utf8_lossy(&buf[..split]).into_owned();
    let code = headers[9..12].parse().map_err(std::io::Error::other)?;
    let mut r = Resp {
        code,
        headers,
        body: buf[split + 4..].to_vec(),
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        r.body = dechunk(&r.body);
    }
    Ok(r)
}

/// Run `cmd` with RLIMIT_NOFILE set to `n` (soft and hard).
pub fn with_nofile(n: u64, cmd: &mut Command) {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the
    // child between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            let r = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The id of the program behind `fd` (BPF_OBJ_GET_INFO_BY_FD).
pub fn prog_id(fd: impl AsFd) -> u32 {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info and len are valid for the call; no arrays are asked for.
    let rc = unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_fd().as_raw_fd(),
            (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "program info");
    info.id
}

/// A kubelet-like pod and container cgroup in the memory hierarchy
/// (`<top>/kubepods/besteffort/pod<uid>/<ctr_id>` under the memory
/// controller's root, the controller enabled down the subtree on v2); the
/// directories are removed (deepest first) on drop.
pub struct PodCgroup {
    dirs: Vec<PathBuf>,
    pub pod: PathBuf,
    /// The container's cgroup directory.
    pub ctr: PathBuf,
    pub uid: String,
    pub ctr_id: String,
}

impl PodCgroup {
    /// The cgroups of a new pod (a fresh uid) with container `ctr_id`,
    /// below the directory `top` of the memory hierarchy's root.
    pub fn new(top: &str, ctr_id: &str) -> PodCgroup {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = bpfmap_exporter::census::creators::memcg_mount(&mi)
            .expect("a memory cgroup hierarchy is mounted");
        let uid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        let top = mount.root.join(top);
        let besteffort = top.join("kubepods/besteffort");
        let pod = besteffort.join(format!("pod{uid}"));
        let ctr = pod.join(ctr_id);
        std::fs::create_dir_all(&ctr).unwrap();
        if !mount.v1 {
            // v2: the memory controller must be enabled down the new subtree.
            for d in [&mount.root, &top, &top.join("kubepods"), &besteffort, &pod] {
                let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory");
            }
        }
        PodCgroup {
            dirs: vec![
                top.clone(),
                top.join("kubepods"),
                besteffort,
                pod.clone(),
                ctr.clone(),
            ],
            pod,
            ctr,
            uid,
            ctr_id: ctr_id.to_string(),
        }
    }

    /// Make `cmd` move its process into the container's cgroup before it
    /// runs (between fork and exec).
    pub fn enter(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let procs =
            std::ffi::CString::new(self.ctr.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: between fork and exec only open/write/close, which are
        // async-signal-safe; "0" moves the writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// kubelet deletes the pod: the container's and the pod's cgroups go.
    pub fn delete_pod(&self) {
        std::fs::remove_dir(&self.ctr).unwrap();
        std::fs::remove_dir(&self.pod).unwrap();
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Program `id`'s refcount in a census snapshot (the programs part ran and
/// listed it).
pub fn prog_refcnt(s: &bpfmap_exporter::census::Snapshot, id: u32) -> i64 {
    s.programs
        .as_ref()
        .expect("the programs part ran")
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("program {id} in the census"))
        .refcnt
}

/// bpftool's JSON output of `args` (it must succeed).
pub fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .arg("--json")
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool json")
}
