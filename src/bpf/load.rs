//! What every skeleton load needs: the capabilities, the BTF file for CO-RE
//! and feature checks, and the skeleton's object storage.
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

/// Where the running kernel exposes its BTF.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Missing capabilities, named the way `setcap` and securityContext name them.
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    const SYS_ADMIN: u32 = 21;
    const PERFMON: u32 = 38;
    const BPF: u32 = 39;
    let mut missing = Vec::new();
    if !has(BPF) && !has(SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(PERFMON) && !has(SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    missing
}

/// The error for missing capabilities, naming every way to grant them.
pub fn privilege_error(missing: &[&str]) -> anyhow::Error {
    let caps = missing.join(", ");
    let lower: Vec<String> = missing.iter().map(|c| c.to_lowercase()).collect();
    anyhow::anyhow!(
        "missing capabilities: {caps}. bpfmap-exporter needs CAP_BPF and CAP_PERFMON to load its iterator programs, and \
         CAP_SYS_ADMIN for BPF_*_GET_FD_BY_ID (per-map memory, program and link holders). Grant them: run as root; or \
         in Kubernetes add them to the container securityContext (capabilities: add: [BPF, PERFMON, SYS_ADMIN]; see \
         deploy/daemonset.yaml); or on a host: sudo setcap {}+ep $(command -v bpfmap-exporter)",
        lower.join(",")
    )
}

/// Fail early, naming the fix, when capabilities are missing.
pub fn require_capabilities() -> anyhow::Result<()> {
    let missing = missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(privilege_error(&missing))
    }
}

/// A load error explained: missing capabilities when that is the cause;
/// out of memory (kept recognisable by [`is_out_of_memory`]) with the fix;
/// else the loader's error with a pointer at the verifier log.
pub fn load_error(what: &str, e: anyhow::Error) -> anyhow::Error {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        privilege_error(&missing)
    } else if is_out_of_memory(&e) {
        e.context(format!(
            "loading {what} BPF programs: the kernel ran out of memory (ENOMEM from the verifier or a map's \
             allocation, usually the memory cgroup's limit: `bpfmap-exporter --check` prints what each program \
             costs; raise the container's memory limit or turn this collector off)"
        ))
    } else {
        e.context(format!(
            "loading {what} BPF programs (see the libbpf log lines above for the verifier's reason)"
        ))
    }
}

/// The BTF file for CO-RE and the kernel-type checks: `--btf.path` when
/// given, else the kernel's own. Errors name the fix.
pub fn btf_path(custom: Option<&Path>) -> anyhow::Result<PathBuf> {
    match custom {
        // stat, never open: a FIFO would block the open and a directory
        // fails later with an unhelpful EIO.
        Some(p) => match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(p.to_path_buf()),
            Ok(m) => bail!(
                "--btf.path {}: {}, not a regular file. Pass the BTF file of the running kernel itself (for example one from btfhub for `uname -r`)",
                p.display(),
                file_kind(&m)
            ),
            Err(e) => bail!(
                "--btf.path {}: {e}. Pass the BTF of the running kernel (for example one from btfhub for `uname -r`)",
                p.display()
            ),
        },
        None => {
            let p = PathBuf::from(KERNEL_BTF);
            if p.exists() {
                Ok(p)
            } else {
                bail!(
                    "the kernel exposes no BTF at {KERNEL_BTF} (built without CONFIG_DEBUG_INFO_BTF). \
                     Supply a BTF file for this exact kernel with --btf.path=<file> (btfhub publishes them for many distribution kernels)"
                )
            }
        }
    }
}

/// What kind of file `m` describes, in words.
fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Parsed BTF, with the file named on error.
pub fn read_btf(path: &Path) -> anyhow::Result<libbpf_rs::btf::Btf<'static>> {
    libbpf_rs::btf::Btf::from_path(path)
        .with_context(|| format!("reading BTF from {}", path.display()))
}

/// Open a skeleton, with `btf_custom` for CO-RE when given. A skeleton
/// borrows its object storage for its whole life, so the storage is leaked:
/// a few bytes per open, while the skeleton's fds and maps are still closed
/// when it drops.
pub fn open<B>(mut builder: B, btf_custom: Option<&Path>, what: &str) -> anyhow::Result<B::Output>
where
    B: SkelBuilder<'static>,
{
    if let Some(p) = btf_custom {
        builder.object_builder_mut().btf_custom_path(p)?;
    }
    let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
        Box::leak(Box::new(MaybeUninit::uninit()));
    builder
        .open(storage)
        .with_context(|| format!("opening {what} BPF object"))
}

/// The verifier's `BPF_LOG_STATS` level: only the summary lines, written
/// once per program after it is verified.
const LOG_STATS: u32 = 4;
/// Room for the summary lines (about 200 bytes on every kernel; the kernel
/// refuses a log buffer under 128 bytes).
const STATS_LOG_SIZE: usize = 1024;

/// What the verifier reported for one loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierStats {
    /// The skeleton the program belongs to ("census", "inflight", "lifecycle").
    pub object: &'static str,
    pub program: String,
    /// Instructions the verifier processed (its cost, which the kernel caps
    /// at one million).
    pub insns: u64,
    /// Most verifier states alive at once: what verification holds in
    /// kernel memory, charged to the loader's memory cgroup.
    pub peak_states: u64,
    /// Verifier states created in all.
    pub total_states: u64,
    /// Verification time, where the kernel reports it.
    pub usec: Option<u64>,
}

/// Parse the `BPF_LOG_STATS` summary ("processed N insns (limit ...)
/// max_states_per_insn M total_states T peak_states P mark_read R" and
/// "verification time U usec"). None when the summary is missing.
pub fn parse_verifier_stats(
    object: &'static str,
    program: &str,
    log: &str,
) -> Option<VerifierStats> {
    let after = |key: &str| -> Option<u64> {
        let rest = &log[log.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some(VerifierStats {
        object,
        program: program.to_string(),
        insns: after("processed ")?,
        peak_states: after("peak_states ")?,
        total_states: after("total_states ")?,
        usec: after("verification time "),
    })
}

static LOADED: std::sync::Mutex<Vec<VerifierStats>> = std::sync::Mutex::new(Vec::new());

/// The verifier statistics of the programs loaded by this process, the
/// latest load of each object (a reload replaces its object's entries).
pub fn verifier_stats() -> Vec<VerifierStats> {
    LOADED.lock().map(|v| v.clone()).unwrap_or_default()
}

fn record_stats(object: &'static str, stats: Vec<VerifierStats>) {
    if let Ok(mut v) = LOADED.lock() {
        v.retain(|s| s.object != object);
        v.extend(stats);
    }
}

/// Whether a load failed because the kernel ran out of memory (ENOMEM from
/// the verifier or from a map's allocation, typically the memory cgroup's
/// limit): the caller turns that collector off instead of failing.
pub fn is_out_of_memory(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<libbpf_rs::Error>()
            .is_some_and(|e| e.kind() == libbpf_rs::ErrorKind::OutOfMemory)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.raw_os_error() == Some(libc::ENOMEM))
    })
}

/// Why a load failed, as `bpfmap_collector_unavailable` reports it.
pub fn failure_reason(e: &anyhow::Error) -> crate::registry::unavailable::Reason {
    if is_out_of_memory(e) {
        crate::registry::unavailable::Reason::OutOfMemory
    } else {
        crate::registry::unavailable::Reason::Error
    }
}

/// Load an opened skeleton and record every program's verifier statistics
/// (see [`verifier_stats`]). `open` opens the skeleton anew: a load that
/// fails for another reason than memory is retried once without the
/// statistics buffers, so libbpf logs the verifier's reason (a custom log
/// buffer keeps it from doing so).
pub fn load_counted<O>(
    object: &'static str,
    open: impl Fn() -> anyhow::Result<O>,
) -> anyhow::Result<O::Output>
where
    O: OpenSkel<'static>,
{
    use libbpf_rs::AsRawLibbpf;
    let mut skel = open()?;
    let mut bufs: Vec<(String, Box<[u8]>)> = Vec::new();
    for mut p in skel.open_object_mut().progs_mut() {
        if !p.autoload() {
            continue;
        }
        let mut buf = vec![0u8; STATS_LOG_SIZE].into_boxed_slice();
        // SAFETY: `buf` is a live heap allocation of `buf.len()` bytes that
        // is neither moved nor freed until after `load` below returns (it
        // stays in `bufs`); libbpf writes the log into it only while loading
        // (bpf_object_load_prog) and never reads the pointer afterwards.
        let rc = unsafe {
            libbpf_sys::bpf_program__set_log_buf(
                p.as_libbpf_object().as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len() as _,
            )
        };
        if rc == 0 {
            p.set_log_level(LOG_STATS);
            bufs.push((p.name().to_string_lossy().into_owned(), buf));
        }
    }
    match skel.load() {
        Ok(loaded) => {
            let stats = bufs
                .iter()
                .filter_map(|(name, buf)| {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    parse_verifier_stats(object, name, &String::from_utf8_lossy(&buf[..end]))
                })
                .collect();
            record_stats(object, stats);
            Ok(loaded)
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            if is_out_of_memory(&e) {
                return Err(e);
            }
            drop(bufs);
            // Again, for the verifier's reason in the log.
            open()?.load().map_err(anyhow::Error::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_stats_from_the_summary_lines() {
        // 6.18's summary; 5.10 has no "verification time" line.
        let log =
            "verification time 1163 usec\nstack depth 0+8\nprocessed 190 insns (limit 1000000) \
                   max_states_per_insn 1 total_states 14 peak_states 14 mark_read 5\n";
        assert_eq!(
            parse_verifier_stats("inflight", "step", log),
            Some(VerifierStats {
                object: "inflight",
                program: "step".into(),
                insns: 190,
                peak_states: 14,
                total_states: 14,
                usec: Some(1163),
            })
        );
        let old = "processed 12 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0\n";
        let s = parse_verifier_stats("census", "dump_map", old).unwrap();
        assert_eq!(
            (s.insns, s.peak_states, s.total_states, s.usec),
            (12, 1, 1, None)
        );
        assert_eq!(parse_verifier_stats("census", "dump_map", ""), None);
        assert_eq!(
            parse_verifier_stats("census", "dump_map", "processed x insns"),
            None
        );
    }
}
