//! `--web.config.file`: TLS, client certificates, basic auth and response
//! headers in exporter-toolkit's format. The file and every file it names
//! are checked for changes (inode, size, mtime, ctime) on each connection
//! and request; a change reloads everything, and a reload that fails keeps
//! the configuration in force and logs why once per change.
pub mod auth;
pub(crate) mod ciphers;
pub mod config;
pub mod tls;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use config::Settings;

/// One loaded generation of the configuration.
pub struct Loaded {
    pub settings: Settings,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Arc<auth::Auth>,
}

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

struct Inner {
    files: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    current: Arc<Loaded>,
    /// Stamps of a reload that failed (not retried until a file changes again).
    failed: Option<Vec<Stamp>>,
}

pub struct Web {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// Load and validate the file at `path` (all of its files are read).
pub fn load_file(path: &Path) -> anyhow::Result<(Loaded, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--web.config.file {}: cannot read: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let settings = config::File::parse(&text)
        .map_err(|e| e.msg)
        .and_then(|f| f.validate(dir))
        .map_err(|e| anyhow::anyhow!("--web.config.file {}: {e}", path.display()))?;
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
            let cfg = tls::server_config(t)
                .map_err(|e| anyhow::anyhow!("--web.config.file {}: {e}", path.display()))?;
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
            }),
        }
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Web> {
        let Some(path) = path else {
            return Ok(Web::none());
        };
        let (loaded, files) = load_file(path)?;
        let stamps = files.iter().map(|f| stamp(f)).collect();
        Ok(Web {
            path: Some(path.to_path_buf()),
            inner: Mutex::new(Inner {
                files,
                stamps,
                current: Arc::new(loaded),
                failed: None,
            }),
        })
    }

    /// Whether connections are TLS (fixed at start).
    pub fn tls(&self) -> bool {
        self.inner.lock().unwrap().current.acceptor.is_some()
    }

    /// The configuration in force, reloaded first if a file changed.
    pub fn current(&self) -> Arc<Loaded> {
        let Some(path) = &self.path else {
            return self.inner.lock().unwrap().current.clone();
        };
        let mut g = self.inner.lock().unwrap();
        let now: Vec<Stamp> = g.files.iter().map(|f| stamp(f)).collect();
        if now == g.stamps || g.failed.as_ref() == Some(&now) {
            return g.current.clone();
        }
        match load_file(path) {
            Ok((loaded, files)) if loaded.acceptor.is_some() == g.current.acceptor.is_some() => {
                tracing::info!(file = %path.display(), "web config reloaded");
                g.stamps = files.iter().map(|f| stamp(f)).collect();
                g.files = files;
                g.current = Arc::new(loaded);
                g.failed = None;
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "web config reload refused: turning TLS on or off needs a restart; keeping the configuration in force");
                g.failed = Some(now);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "web config reload failed; keeping the configuration in force");
                g.failed = Some(now);
            }
        }
        g.current.clone()
    }
}
