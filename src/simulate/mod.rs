//! Leak simulator: `bpfmap-exporter simulate-leak`.
//!
//! Creates the conditions the alert rules look for, at a chosen rate, and
//! removes all of them on exit (end of `--duration`, SIGINT or SIGTERM):
//! - **files**: maps whose fds this process keeps open and keeps adding
//!   (`bpfmap_process_map_files` grows);
//! - **in flight**: maps whose only reference is an fd inside an SCM_RIGHTS
//!   message that nobody receives: a stuck in-flight fd, explained as holder
//!   kind `inflight` where the kernel has iter/unix (5.17+;
//!   `bpfmap_map_inflight_age_seconds` grows, `BpfMapFdStuckInFlight`), an
//!   unexplained reference before (`bpfmap_map_unexplained_refs` = 1);
//! - **io_uring** (`--leak-uring`, off by default): maps held only by the
//!   registered-file table of an io_uring that only the simulator's
//!   registered-ring table holds (no fd), a reference nothing the census
//!   walks explains (`bpfmap_map_unexplained_refs` = 1; 5.18+);
//! - **pins**: maps pinned under `--pin-dir` with no fd and no program
//!   (`bpfmap_pinned_map_unused` = 1, pinned bytes grow);
//! - **orphans** (`--leak-orphans`): maps created from a pod-like memory
//!   cgroup that is then removed, kept alive only by their pins
//!   (`bpfmap_map_orphaned` = 1);
//! - **orphan chains** (`--leak-orphan-chains`): from such a cgroup, maps
//!   kept alive only through a pinned program that uses them and an inner
//!   map kept alive only through a pinned outer map (`bpfmap_map_orphaned`
//!   = 1 through the chain, `bpfmap_pin_retained_memory_bytes` of the pins);
//! - **full**: hash maps filled to `--fill-percent` (`bpfmap_map_entries`);
//! - **churn**: maps created and closed at `--churn-rate` per second
//!   (`bpfmap_maps_created_total` / `_destroyed_total`).
//!
//! Every map is named `<prefix>_<kind><n>` so the census and alerts show
//! which are the simulator's. Progress goes to stdout as `key=value` lines.
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

mod elf;
mod orphans;

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Maps whose fds are kept open and leaked by this process (its map file count grows).
    #[arg(long = "leak-files", default_value_t = 20)]
    pub leak_files: u32,

    /// Maps held only by an fd stuck in flight in an SCM_RIGHTS message (holder
    /// kind inflight on 5.17+, unexplained references before).
    #[arg(long = "leak-inflight", default_value_t = 3)]
    pub leak_inflight: u32,

    /// Maps held only by an io_uring's registered-file table (fds closed):
    /// references nothing the census walks explains (unexplained references).
    #[arg(long = "leak-uring", default_value_t = 0)]
    pub leak_uring: u32,

    /// Maps pinned under --pin-dir with every fd closed (stale pins, pinned bytes).
    #[arg(long = "leak-pins", default_value_t = 3)]
    pub leak_pins: u32,

    /// Maps pinned from a memory cgroup named like a pod's container, whose container and pod cgroups are then removed (maps that outlived their pod).
    #[arg(long = "leak-orphans", default_value_t = 2)]
    pub leak_orphans: u32,

    /// Chain sets made from such a cgroup: each is a pinned program using two maps nothing else holds, and a pinned array of maps whose slot holds an inner map (maps that outlived their pod through a chain).
    #[arg(long = "leak-orphan-chains", default_value_t = 1)]
    pub leak_orphan_chains: u32,

    /// Leaks (files, in-flight and pins, interleaved) created per second.
    #[arg(long = "leak-rate", default_value_t = 2.0)]
    pub leak_rate: f64,

    /// Hash maps filled to --fill-percent and kept open (maps near full).
    #[arg(long = "full-maps", default_value_t = 1)]
    pub full_maps: u32,

    /// How full the --full-maps maps are, in percent of max_entries.
    #[arg(long = "fill-percent", default_value_t = 95)]
    pub fill_percent: u32,

    /// Maps created and closed again per second (create/destroy churn); 0 = none.
    #[arg(long = "churn-rate", default_value_t = 20.0)]
    pub churn_rate: f64,

    /// max_entries of each leaked hash map (their memory is what leaks).
    #[arg(long = "map-entries", default_value_t = 1024)]
    pub map_entries: u32,

    /// Directory on a bpffs mount for the pins; created if missing and removed on exit if the simulator created it.
    #[arg(long = "pin-dir", default_value = "/sys/fs/bpf/bpfmap-simulate")]
    pub pin_dir: PathBuf,

    /// Stop and clean up after this many seconds; 0 = run until SIGINT/SIGTERM.
    #[arg(long = "duration", default_value_t = 300)]
    pub duration: u64,

    /// Map name prefix (map names are <prefix>_<kind><n>, at most 15 bytes).
    #[arg(long = "name-prefix", default_value = "sim")]
    pub prefix: String,

    /// Process name (comm) the simulator takes, so its series are easy to find.
    #[arg(long = "comm", default_value = "bpfmap-simleak")]
    pub comm: String,
}

impl SimulateArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(self.leak_rate > 0.0 && self.leak_rate.is_finite()) {
            bail!(
                "--leak-rate must be a positive number of leaks per second (got {})",
                self.leak_rate
            );
        }
        if !(self.churn_rate >= 0.0 && self.churn_rate <= 100_000.0) {
            bail!(
                "--churn-rate must be between 0 and 100000 per second (got {})",
                self.churn_rate
            );
        }
        if self.map_entries == 0 {
            bail!("--map-entries must be at least 1");
        }
        if self.fill_percent > 100 {
            bail!("--fill-percent must be 0..=100 (got {})", self.fill_percent);
        }
        // "<prefix>_churn" is the longest name; BPF_OBJ_NAME_LEN is 16 with the NUL.
        if self.prefix.is_empty()
            || self.prefix.len() > 6
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!(
                "--name-prefix must be 1-6 characters of [A-Za-z0-9_] (map names are limited to 15 bytes); got {:?}",
                self.prefix
            );
        }
        if self.comm.is_empty() || self.comm.len() > 15 {
            bail!(
                "--comm must be 1-15 bytes (the kernel's TASK_COMM_LEN); got {:?}",
                self.comm
            );
        }
        if !self.pin_dir.is_absolute() {
            bail!(
                "--pin-dir must be an absolute path on a bpffs mount, e.g. /sys/fs/bpf/bpfmap-simulate (got {})",
                self.pin_dir.display()
            );
        }
        Ok(())
    }
}

/// The kinds of leak, created round-robin until each reaches its count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Inflight,
    Pin,
}

/// Order in which leaks are created: round-robin over the kinds that still
/// have some left, so every kind grows from the start. Pure, unit-tested.
fn leak_schedule(files: u32, inflight: u32, pins: u32) -> Vec<Kind> {
    let mut left = [
        (Kind::File, files),
        (Kind::Inflight, inflight),
        (Kind::Pin, pins),
    ];
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for (k, n) in left.iter_mut() {
            if *n > 0 {
                *n -= 1;
                out.push(*k);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

/// Everything the simulator holds. Dropping it releases all of it: fds are
/// closed, the sockets (and the messages in flight in them) are closed, pins
/// are unlinked and the pin directory removed if we created it.
#[derive(Default)]
struct Leaks {
    files: Vec<MapHandle>,
    /// The two ends of each socketpair whose queue holds one map fd.
    inflight: Vec<(UnixStream, UnixStream)>,
    pins: Vec<PathBuf>,
    pin_dir_created: Option<PathBuf>,
    ids: Vec<(u32, String)>,
    /// Empty memory cgroups of the orphan leak, removed deepest first.
    cgroups: Vec<PathBuf>,
    /// The io_uring whose registered files hold the uring leak's maps.
    uring: Option<std::os::fd::OwnedFd>,
}

impl Drop for Leaks {
    fn drop(&mut self) {
        self.files.clear();
        self.inflight.clear();
        self.uring = None;
        for p in self.pins.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("simulate-leak: could not unlink pin {}: {e}", p.display());
                }
            }
        }
        for d in self.cgroups.drain(..).rev() {
            if let Err(e) = std::fs::remove_dir(&d) {
                eprintln!(
                    "simulate-leak: could not remove cgroup {}: {e}",
                    d.display()
                );
            }
        }
        if let Some(d) = self.pin_dir_created.take() {
            if let Err(e) = std::fs::remove_dir(&d) {
                eprintln!(
                    "simulate-leak: could not remove pin directory {}: {e}",
                    d.display()
                );
            }
        }
    }
}

fn create_map(name: &str, entries: u32) -> anyhow::Result<MapHandle> {
    // Preallocated (no BPF_F_NO_PREALLOC): each leaked map costs its full
    // size at once, so leaked memory grows with the leak count.
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    // BPF_OBJ_NAME_LEN is 16 including the NUL.
    let name = &name[..name.len().min(15)];
    MapHandle::create(MapType::Hash, Some(name), 4, 8, entries, &opts).map_err(|e| {
        let hint = if matches!(e.kind(), libbpf_rs::ErrorKind::PermissionDenied) {
            ": run as root, or grant CAP_BPF (setcap cap_bpf+ep on the binary)"
        } else {
            ""
        };
        anyhow::anyhow!("creating BPF hash map {name:?} failed: {e}{hint}")
    })
}

fn map_id(m: &MapHandle) -> u32 {
    m.info().map(|i| i.info.id).unwrap_or(0)
}

/// Send `fd` over `sock` in an SCM_RIGHTS control message with one data byte.
/// The file stays referenced by the queued message until it is received or
/// the socket pair is closed.
fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let byte = [0u8; 1];
    let iov = [io::IoSlice::new(&byte)];
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    Ok(())
}

fn ensure_pin_dir(dir: &Path, leaks: &mut Leaks) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let on_bpffs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 2 && f[2] == "bpf" && (parent.starts_with(f[1]) || dir.starts_with(f[1]))
    });
    if !on_bpffs {
        bail!(
            "--pin-dir {} is not on a bpffs mount: mount one (mount -t bpf bpf /sys/fs/bpf) or choose a directory under an existing bpffs",
            dir.display()
        );
    }
    match std::fs::create_dir(dir) {
        Ok(()) => leaks.pin_dir_created = Some(dir.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!("creating pin directory {} failed: {e}", dir.display()),
    }
    Ok(())
}

fn say(line: String) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Set SIGINT/SIGTERM to flip `stop` (a tokio signal thread).
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                stop.store(true, Ordering::SeqCst);
            })
        })?;
    rx.recv()
        .context("signal thread died")?
        .context("installing SIGINT/SIGTERM handlers")?;
    Ok(())
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    args.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone())?;
    if let Err(e) = std::fs::write("/proc/self/comm", &args.comm) {
        tracing::warn!("could not set comm to {:?}: {e}", args.comm);
    }
    let mut leaks = Leaks::default();
    if args.leak_pins > 0 || args.leak_orphans > 0 || args.leak_orphan_chains > 0 {
        ensure_pin_dir(&args.pin_dir, &mut leaks)?;
    }
    let r = simulate(args, &stop, &mut leaks);
    let n = leaks.ids.len();
    drop(leaks);
    say(format!("simulate-leak: cleaned up maps={n}"));
    r
}

fn simulate(args: &SimulateArgs, stop: &AtomicBool, leaks: &mut Leaks) -> anyhow::Result<()> {
    let p = &args.prefix;
    say(format!(
        "simulate-leak: pid={} comm={} leak_files={} leak_inflight={} leak_uring={} leak_pins={} leak_orphans={} leak_orphan_chains={} full_maps={} churn_rate={} duration={}",
        std::process::id(),
        args.comm,
        args.leak_files,
        args.leak_inflight,
        args.leak_uring,
        args.leak_pins,
        args.leak_orphans,
        args.leak_orphan_chains,
        args.full_maps,
        args.churn_rate,
        args.duration
    ));
    // Maps near full: created first, they do not grow.
    for i in 0..args.full_maps {
        let entries = 128u32;
        let name = format!("{p}_full{i}");
        let m = create_map(&name, entries)?;
        let n = entries * args.fill_percent / 100;
        for k in 0..n {
            m.update(&k.to_ne_bytes(), &u64::from(k).to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("filling map {name}"))?;
        }
        let id = map_id(&m);
        say(format!(
            "leak=full id={id} name={name} entries={n} max_entries={entries}"
        ));
        leaks.ids.push((id, name));
        leaks.files.push(m);
    }

    if args.leak_orphans > 0 || args.leak_orphan_chains > 0 {
        let mut made = Vec::new();
        let mut chained = Vec::new();
        let dirs = orphans::in_pod_cgroup(|| {
            for i in 0..args.leak_orphans {
                let name = format!("{p}_orph{i}");
                let mut m = create_map(&name, args.map_entries)?;
                let path = args.pin_dir.join(&name);
                m.pin(&path).map_err(|e| {
                    anyhow::anyhow!("pinning map {name} at {}: {e}", path.display())
                })?;
                made.push((map_id(&m), name, path));
            }
            for i in 0..args.leak_orphan_chains {
                orphans::chains(
                    p,
                    i,
                    &args.pin_dir,
                    args.map_entries,
                    &create_map,
                    &mut chained,
                )?;
            }
            Ok(())
        });
        for (id, name, path) in made {
            say(format!(
                "leak=orphan kind=map id={id} name={name} pin={}",
                path.display()
            ));
            leaks.ids.push((id, name));
            leaks.pins.push(path);
        }
        // `leak=orphan` for what is pinned itself (the roots: maps, and the
        // program of a chain), `leak=orphan_chain` for maps held only
        // through them.
        for m in chained {
            let what = match &m.pin {
                Some(path) => format!(
                    "leak=orphan kind={} id={} name={} pin={}",
                    m.kind,
                    m.id,
                    m.name,
                    path.display()
                ),
                None => format!(
                    "leak=orphan_chain kind={} id={} name={} via={}",
                    m.kind,
                    m.id,
                    m.name,
                    m.via.as_deref().unwrap_or("-")
                ),
            };
            say(what);
            if m.kind == "map" {
                leaks.ids.push((m.id, m.name));
            }
            if let Some(path) = m.pin {
                leaks.pins.push(path);
            }
        }
        leaks.cgroups = dirs?;
    }

    if args.leak_uring > 0 {
        let mut maps = Vec::new();
        for i in 0..args.leak_uring {
            let name = format!("{p}_uring{i}");
            let m = create_map(&name, args.map_entries)?;
            maps.push((map_id(&m), name, m));
        }
        let fds: Vec<_> = maps.iter().map(|(_, _, m)| m.as_fd()).collect();
        let ring = crate::sys::io_uring_with_files(&fds).context(
            "io_uring_setup/io_uring_register(IORING_REGISTER_FILES) for --leak-uring (kernel.io_uring_disabled?)",
        )?;
        // The census explains files in the tables of rings that fd tables
        // hold; a ring only this thread's registered-ring table holds is not
        // walked, so its files stay unexplained. Before 5.18 the ring keeps
        // its fd (the census then withholds what it cannot name).
        leaks.uring = match crate::sys::io_uring_hide_ring(ring) {
            Ok(()) => None,
            Err((e, ring)) => {
                say(format!("leak=uring ring_fd_kept=1 reason={e}"));
                Some(ring)
            }
        };
        // The fds close here; the ring's file table keeps the files.
        for (id, name, _) in maps {
            say(format!("leak=uring id={id} name={name}"));
            leaks.ids.push((id, name));
        }
    }

    let schedule = leak_schedule(args.leak_files, args.leak_inflight, args.leak_pins);
    let start = Instant::now();
    let deadline = (args.duration > 0).then(|| start + Duration::from_secs(args.duration));
    let leak_every = Duration::from_secs_f64(1.0 / args.leak_rate);
    let churn_every =
        (args.churn_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.churn_rate));
    let (mut next_leak, mut next_churn) = (start, start);
    let (mut made, mut churned) = (0usize, 0u64);
    let mut counts = [0u32; 3];
    let mut last_report = start;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if made < schedule.len() && now >= next_leak {
            let kind = schedule[made];
            let idx = &mut counts[kind as usize];
            let (tag, name) = match kind {
                Kind::File => ("file", format!("{p}_file{idx}")),
                Kind::Inflight => ("inflight", format!("{p}_fly{idx}")),
                Kind::Pin => ("pin", format!("{p}_pin{idx}")),
            };
            let m = create_map(&name, args.map_entries)?;
            let id = map_id(&m);
            // A few elements, so memory that follows elements is non-zero.
            for k in 0..8u32.min(args.map_entries) {
                m.update(&k.to_ne_bytes(), &[0u8; 8], MapFlags::ANY)?;
            }
            match kind {
                Kind::File => leaks.files.push(m),
                Kind::Inflight => {
                    let (a, b) = UnixStream::pair().context("socketpair for the in-flight fd")?;
                    send_fd(&a, m.as_fd()).context("sendmsg(SCM_RIGHTS) of the map fd")?;
                    // Our fd closes here; the queued message keeps the file.
                    drop(m);
                    leaks.inflight.push((a, b));
                }
                Kind::Pin => {
                    let mut m = m;
                    let path = args.pin_dir.join(&name);
                    m.pin(&path).map_err(|e| {
                        anyhow::anyhow!(
                            "pinning map {name} at {} failed: {e} (is {} on a writable bpffs?)",
                            path.display(),
                            args.pin_dir.display()
                        )
                    })?;
                    leaks.pins.push(path.clone());
                    drop(m);
                }
            }
            say(format!("leak={tag} id={id} name={name}"));
            leaks.ids.push((id, name));
            *idx += 1;
            made += 1;
            next_leak += leak_every;
            if made == schedule.len() {
                say(format!(
                    "simulate-leak: all leaks created files={} inflight={} pins={} after={:.1}s",
                    counts[0],
                    counts[1],
                    counts[2],
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        if let Some(every) = churn_every {
            // Catch up at most one second of churn per iteration.
            let mut budget = args.churn_rate.ceil() as u32;
            while Instant::now() >= next_churn && budget > 0 {
                drop(create_map(&format!("{p}_churn"), 16)?);
                churned += 1;
                next_churn += every;
                budget -= 1;
            }
            if budget == 0 {
                next_churn = Instant::now();
            }
        }
        if now.duration_since(last_report) >= Duration::from_secs(10) {
            last_report = now;
            say(format!(
                "simulate-leak: elapsed={:.0}s leaked={made} churned={churned}",
                start.elapsed().as_secs_f64()
            ));
        }
        let mut wake = next_churn;
        if made < schedule.len() {
            wake = wake.min(next_leak);
        }
        if churn_every.is_none() && made >= schedule.len() {
            wake = Instant::now() + Duration::from_millis(200);
        }
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        let nap = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        std::thread::sleep(nap);
    }
    say(format!(
        "simulate-leak: stopping elapsed={:.1}s leaked={made} churned={churned}",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SimulateArgs,
    }

    fn parse(args: &[&str]) -> SimulateArgs {
        let mut v = vec!["sim"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().a
    }

    #[test]
    fn schedule_interleaves_kinds() {
        use Kind::*;
        assert_eq!(
            leak_schedule(3, 1, 2),
            vec![File, Inflight, Pin, File, Pin, File]
        );
        assert!(leak_schedule(0, 0, 0).is_empty());
        assert_eq!(leak_schedule(0, 2, 0), vec![Inflight, Inflight]);
    }

    #[test]
    fn defaults_are_valid() {
        let a = parse(&[]);
        a.validate().unwrap();
        assert_eq!(a.pin_dir, PathBuf::from("/sys/fs/bpf/bpfmap-simulate"));
    }

    #[test]
    fn bad_flags_are_rejected_with_the_reason() {
        for (args, needle) in [
            (&["--leak-rate=0"][..], "--leak-rate"),
            (&["--name-prefix=toolongprefix"], "--name-prefix"),
            (&["--comm=a-very-long-comm-name"], "--comm"),
            (&["--pin-dir=relative"], "--pin-dir"),
            (&["--fill-percent=101"], "--fill-percent"),
            (&["--map-entries=0"], "--map-entries"),
        ] {
            let e = parse(args).validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn pin_dir_must_be_on_bpffs() {
        let mut l = Leaks::default();
        let e = ensure_pin_dir(Path::new("/proc/not-bpffs/x"), &mut l)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not on a bpffs mount"), "{e}");
        assert!(l.pin_dir_created.is_none());
    }
}
