//! The open-file limit (RLIMIT_NOFILE): raised to its hard limit at start,
//! refused with the fix when even that is too low to load, and named in
//! errors that running out of file descriptors causes.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Fewest open files the exporter starts with: its BPF objects (about 50
/// fds with every collector), a census's iterators, /proc and bpffs
/// directories, and a few connections.
pub const MIN_NOFILE: u64 = 128;

/// The soft limit is raised at most this far (the hard limit may be
/// "unlimited").
const RAISE_CAP: u64 = 1 << 20;

/// The fix, in words, for a limit that is too low.
pub const FIX: &str = "raise the open-file limit: `ulimit -n 4096` in the shell that starts it, \
     LimitNOFILE=4096 in a systemd unit, or the container runtime's nofile ulimit \
     (e.g. docker run --ulimit nofile=4096)";

/// The soft and hard RLIMIT_NOFILE.
pub fn nofile() -> (u64, u64) {
    getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0))
}

/// Raise the soft open-file limit to the hard one (capped), then refuse to
/// start below [`MIN_NOFILE`], naming the limit and its fix. Returns the
/// soft limit in force.
pub fn ensure_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = nofile();
    let target = hard.min(RAISE_CAP);
    let soft = if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        target
    } else {
        soft
    };
    check_nofile(soft, hard)?;
    Ok(soft)
}

/// The start-up check of [`ensure_nofile`], pure.
pub fn check_nofile(soft: u64, hard: u64) -> anyhow::Result<()> {
    if soft < MIN_NOFILE {
        anyhow::bail!(
            "RLIMIT_NOFILE is {soft} (hard limit {hard}): bpfmap-exporter needs at least {MIN_NOFILE} open files \
             to load its BPF objects and serve; {FIX}"
        );
    }
    Ok(())
}

/// Whether `e` comes from running out of file descriptors (EMFILE, or the
/// system-wide ENFILE).
pub fn out_of_fds(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|e| e.raw_os_error())
            .is_some_and(|n| n == libc::EMFILE || n == libc::ENFILE)
            || c.to_string().contains("(os error 24)")
    })
}

/// The hint added to an error from running out of file descriptors.
pub fn out_of_fds_hint() -> String {
    let (soft, hard) = nofile();
    format!(
        "the process ran out of file descriptors (RLIMIT_NOFILE {soft}, hard limit {hard}); {FIX}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_low_a_limit_names_rlimit_nofile_and_the_fix() {
        let e = check_nofile(40, 40).unwrap_err().to_string();
        assert!(e.contains("RLIMIT_NOFILE is 40"), "{e}");
        assert!(e.contains("ulimit -n"), "{e}");
        assert!(check_nofile(MIN_NOFILE, MIN_NOFILE).is_ok());
        let emfile = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::EMFILE))
            .context("loading census BPF programs");
        assert!(out_of_fds(&emfile));
        let eperm = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(!out_of_fds(&eperm));
    }
}
