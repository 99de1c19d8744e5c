//! `--web.config.file`: TLS, client certificates, basic auth and response
//! headers in exporter-toolkit's format.
//!
//! Invariants of a reload (checked on each connection and request):
//! - A change is read only once it has settled: its files' ctime is at
//!   least [`SETTLE`] old, or the same change was seen [`SETTLE`] ago; the
//!   files must not change while they are read. A half-written file is
//!   therefore not read while its writer is still writing.
//! - An empty, unreadable or invalid file, or a change that needs a restart
//!   (TLS on or off, basic authentication removed, client certificates no
//!   longer required), keeps the configuration in force, logs one WARN for
//!   that state of the files and counts in `bpfmap_web_config_reloads_total`.
//! - Every file is a regular file of at most [`MAX_FILE_BYTES`].
pub mod auth;
pub(crate) mod ciphers;
pub mod config;
pub mod stats;
pub mod tls;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use config::Settings;
use stats::ReloadResult;

/// How long a changed file must stay unchanged before it is read.
pub const SETTLE: Duration = Duration::from_millis(250);
/// The largest configuration or PEM file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// One loaded generation of the configuration.
pub struct Loaded {
    pub settings: Settings,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Arc<auth::Auth>,
}

/// (dev, ino, size, mtime, mtime_nsec, ctime, ctime_nsec) of a file, None
/// when it cannot be stat'ed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, u64, u64, i64, i64, i64, i64)>);

fn stamp(p: &Path) -> Stamp {
    Stamp(std::fs::metadata(p).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    }))
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|f| stamp(f)).collect()
}

/// Whether no file changed within [`SETTLE`] of now, by its ctime (which
/// only the kernel sets).
fn quiet(s: &[Stamp]) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    s.iter().all(|s| match s.0 {
        None => true,
        Some((.., ct, ctn)) => {
            let changed = Duration::new(ct.max(0) as u64, ctn.clamp(0, 999_999_999) as u32);
            now.checked_sub(changed).is_some_and(|age| age >= SETTLE)
        }
    })
}

/// A regular file's bytes, at most [`MAX_FILE_BYTES`]; FIFOs, devices and
/// directories are refused before anything is read.
pub fn read_file(p: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let m = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if !m.is_file() {
        return Err(format!("{} is not a regular file", p.display()));
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            p.display()
        ));
    }
    Ok(buf)
}

struct Inner {
    files: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    current: Arc<Loaded>,
    /// Stamps of a reload that failed (not retried until a file changes again).
    failed: Option<Vec<Stamp>>,
    /// A change not yet read, and when it was first seen.
    pending: Option<(Vec<Stamp>, Instant)>,
}

pub struct Web {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// Why a load failed, with its reload result.
struct LoadError {
    kind: ReloadResult,
    error: anyhow::Error,
}

fn load(path: &Path, reload: bool) -> Result<(Loaded, Vec<PathBuf>), LoadError> {
    let fail = |kind, msg: String| LoadError {
        kind,
        error: anyhow::anyhow!("--web.config.file {}: {msg}", path.display()),
    };
    let bytes = read_file(path).map_err(|e| fail(ReloadResult::Unreadable, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| fail(ReloadResult::Invalid, "not UTF-8 text".into()))?;
    if reload && text.trim().is_empty() {
        return Err(fail(
            ReloadResult::Empty,
            "the file is empty (a write in progress?)".into(),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let settings = config::File::parse(&text)
        .map_err(|e| e.msg)
        .and_then(|f| f.validate(dir))
        .map_err(|e| fail(ReloadResult::Invalid, e))?;
    let mut files = vec![path.to_path_buf()];
    let acceptor = match &settings.tls {
        Some(t) => {
            for s in [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
                .into_iter()
                .flatten()
            {
                if let config::Source::File(p) = s {
                    files.push(p.clone());
                }
            }
            let cfg = tls::server_config(t).map_err(|e| fail(ReloadResult::Invalid, e))?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        }
        None => None,
    };
    let auth = Arc::new(auth::Auth::new(settings.users.clone()));
    Ok((
        Loaded {
            settings,
            acceptor,
            auth,
        },
        files,
    ))
}

/// Load and validate the file at `path` (all of its files are read).
pub fn load_file(path: &Path) -> anyhow::Result<(Loaded, Vec<PathBuf>)> {
    load(path, false).map_err(|e| e.error)
}

/// How strongly client certificates are required: 2 verified, 1 any, 0 not.
fn client_cert_level(s: &Settings) -> u8 {
    use config::ClientAuth::*;
    match s.tls.as_ref().map(|t| t.client_auth) {
        Some(RequireAndVerifyClientCert) => 2,
        Some(RequireAnyClientCert) => 1,
        _ => 0,
    }
}

/// Why replacing `old` by `new` needs a restart, if it does: TLS turned on
/// or off, basic authentication removed, client certificates no longer
/// required (or no longer verified).
pub fn needs_restart(old: &Settings, new: &Settings) -> Option<&'static str> {
    if old.tls.is_some() && new.tls.is_none() {
        return Some("turning TLS off");
    }
    if old.tls.is_none() && new.tls.is_some() {
        return Some("turning TLS on");
    }
    if !old.users.is_empty() && new.users.is_empty() {
        return Some("removing basic authentication (basic_auth_users)");
    }
    if client_cert_level(new) < client_cert_level(old) {
        return Some("lowering tls_server_config.client_auth_type");
    }
    None
}

impl Web {
    /// No file: plain HTTP, no authentication.
    pub fn none() -> Web {
        Web {
            path: None,
            inner: Mutex::new(Inner {
                files: Vec::new(),
                stamps: Vec::new(),
                current: Arc::new(Loaded {
                    settings: Settings::default(),
                    acceptor: None,
                    auth: Arc::new(auth::Auth::default()),
                }),
                failed: None,
                pending: None,
            }),
        }
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Web> {
        let Some(path) = path else {
            return Ok(Web::none());
        };
        let (loaded, files) = load_file(path)?;
        stats::set_in_use();
        let stamps = stamps(&files);
        Ok(Web {
            path: Some(path.to_path_buf()),
            inner: Mutex::new(Inner {
                files,
                stamps,
                current: Arc::new(loaded),
                failed: None,
                pending: None,
            }),
        })
    }

    /// Whether connections are TLS (fixed at start).
    pub fn tls(&self) -> bool {
        self.lock().current.acceptor.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force, reloaded first if a file changed and
    /// the change settled.
    pub fn current(&self) -> Arc<Loaded> {
        let Some(path) = &self.path else {
            return self.lock().current.clone();
        };
        let mut g = self.lock();
        let before = stamps(&g.files);
        if before == g.stamps || g.failed.as_ref() == Some(&before) {
            g.pending = None;
            return g.current.clone();
        }
        let seen_settled = match &g.pending {
            Some((s, at)) if *s == before => at.elapsed() >= SETTLE,
            _ => {
                g.pending = Some((before.clone(), Instant::now()));
                false
            }
        };
        if !seen_settled && !quiet(&before) {
            return g.current.clone();
        }
        let result = load(path, true);
        // A file that changed while it was read is read again later.
        if stamps(&g.files) != before {
            return g.current.clone();
        }
        let result = result.and_then(|(loaded, files)| {
            match needs_restart(&g.current.settings, &loaded.settings) {
                Some(why) => Err(LoadError {
                    kind: ReloadResult::RestartRequired,
                    error: anyhow::anyhow!(
                        "--web.config.file {}: {why} needs a restart",
                        path.display()
                    ),
                }),
                None => Ok((loaded, files)),
            }
        });
        g.pending = None;
        match result {
            Ok((loaded, files)) => {
                let now = stamps(&files);
                if files != g.files && !quiet(&now) {
                    // A file only the new configuration names is still
                    // changing.
                    return g.current.clone();
                }
                tracing::info!(file = %path.display(), "web config reloaded");
                g.stamps = now;
                g.files = files;
                g.current = Arc::new(loaded);
                g.failed = None;
                stats::reload(ReloadResult::Applied);
            }
            Err(e) if e.kind == ReloadResult::RestartRequired => {
                tracing::warn!(
                    error = %format!("{:#}", e.error),
                    reason = e.kind.label(),
                    "web config change refused; keeping the configuration in force until a restart"
                );
                g.failed = Some(before);
                stats::reload(e.kind);
            }
            Err(e) => {
                tracing::warn!(
                    error = %format!("{:#}", e.error),
                    reason = e.kind.label(),
                    "web config reload failed; keeping the configuration in force"
                );
                g.failed = Some(before);
                stats::reload(e.kind);
            }
        }
        g.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        config::File::parse(text)
            .unwrap()
            .validate(Path::new("/etc/web"))
            .unwrap()
    }

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    #[test]
    fn weakening_changes_need_a_restart() {
        let users = format!("basic_auth_users:\n  alice: '{HASH}'\n");
        let tls = |auth: &str| {
            format!("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n  client_auth_type: {auth}\n")
        };
        let verified = tls("RequireAndVerifyClientCert");
        let any = tls("RequireAnyClientCert");
        let optional = tls("VerifyClientCertIfGiven");
        for (old, new, why) in [
            (users.as_str(), "", Some("basic")),
            (users.as_str(), "http_server_config: {}\n", Some("basic")),
            (
                users.as_str(),
                &format!("basic_auth_users:\n  bob: '{HASH}'\n"),
                None,
            ),
            ("", users.as_str(), None),
            (verified.as_str(), "", Some("TLS off")),
            ("", verified.as_str(), Some("TLS on")),
            (verified.as_str(), any.as_str(), Some("client_auth_type")),
            (
                verified.as_str(),
                optional.as_str(),
                Some("client_auth_type"),
            ),
            (any.as_str(), verified.as_str(), None),
            (optional.as_str(), verified.as_str(), None),
        ] {
            let r = needs_restart(&settings(old), &settings(new));
            match why {
                None => assert_eq!(r, None, "{old:?} -> {new:?}"),
                Some(w) => assert!(
                    r.is_some_and(|r| r.contains(w)),
                    "{old:?} -> {new:?}: {r:?}"
                ),
            }
        }
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_file(&fifo).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_file(d.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_file(&big).unwrap_err().contains("larger than"));
        std::fs::write(&big, b"ok").unwrap();
        assert_eq!(read_file(&big).unwrap(), b"ok");
    }

    #[test]
    fn a_fresh_change_is_not_quiet_and_an_old_one_is() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        // Judged only when the check ran well within SETTLE of the write
        // (a descheduled test thread retries).
        let fresh = (0..20).find_map(|_| {
            let t = Instant::now();
            std::fs::write(&f, "x").unwrap();
            let q = quiet(&stamps(std::slice::from_ref(&f)));
            (t.elapsed() < SETTLE / 2).then_some(q)
        });
        assert_eq!(fresh, Some(false));
        std::thread::sleep(SETTLE + Duration::from_millis(50));
        assert!(quiet(&stamps(std::slice::from_ref(&f))));
        // A missing file has nothing left to settle.
        assert!(quiet(&stamps(&[d.path().join("gone")])));
    }
}
