//! What every skeleton load needs: the capabilities, the BTF file for CO-RE
//! and feature checks, and the skeleton's object storage.
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use libbpf_rs::skel::SkelBuilder;

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

/// A load error explained: missing capabilities when that is the cause,
/// else the loader's error with a pointer at the verifier log.
pub fn load_error(what: &str, e: impl std::fmt::Display) -> anyhow::Error {
    let missing = missing_capabilities();
    if !missing.is_empty() {
        privilege_error(&missing)
    } else {
        anyhow::anyhow!(
            "loading {what} BPF programs: {e} (see the libbpf log lines above for the verifier's reason)"
        )
    }
}

/// The BTF file for CO-RE and the kernel-type checks: `--btf.path` when
/// given, else the kernel's own. Errors name the fix.
pub fn btf_path(custom: Option<&Path>) -> anyhow::Result<PathBuf> {
    match custom {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => bail!(
            "--btf.path {}: no such file. Pass the BTF of the running kernel (for example one from btfhub for `uname -r`)",
            p.display()
        ),
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
