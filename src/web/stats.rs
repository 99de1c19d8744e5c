//! Process-wide counters of the web configuration's reloads and of basic
//! authentication, read by the scrape for the `bpfmap_web_*` families.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How a check of credentials ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// A good credential found in the cache.
    Cached,
    /// A good credential verified by bcrypt.
    Verified,
    /// Missing, malformed, unknown user or wrong password.
    Denied,
    /// Refused without a verification: the hashing slots were full.
    Busy,
}

impl AuthResult {
    pub const ALL: [AuthResult; 4] = [
        AuthResult::Cached,
        AuthResult::Verified,
        AuthResult::Denied,
        AuthResult::Busy,
    ];
    pub fn label(self) -> &'static str {
        match self {
            AuthResult::Cached => "cached",
            AuthResult::Verified => "verified",
            AuthResult::Denied => "denied",
            AuthResult::Busy => "busy",
        }
    }
}

/// How a reload of a changed web configuration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Applied,
    /// A file could not be read (missing, not a regular file, too large).
    Unreadable,
    /// The configuration file is empty.
    Empty,
    /// The file does not parse or validate (a partial write included).
    Invalid,
    /// The change would turn TLS on or off, remove basic authentication or
    /// lower the client certificate requirement: it needs a restart.
    RestartRequired,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 5] = [
        ReloadResult::Applied,
        ReloadResult::Unreadable,
        ReloadResult::Empty,
        ReloadResult::Invalid,
        ReloadResult::RestartRequired,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unreadable => "unreadable",
            ReloadResult::Empty => "empty",
            ReloadResult::Invalid => "invalid",
            ReloadResult::RestartRequired => "restart_required",
        }
    }
}

static IN_USE: AtomicBool = AtomicBool::new(false);
static LAST_RELOAD_OK: AtomicBool = AtomicBool::new(true);
static AUTH: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static RELOADS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

pub(super) fn set_in_use() {
    IN_USE.store(true, Ordering::Relaxed);
}

pub(super) fn auth(r: AuthResult) {
    AUTH[r as usize].fetch_add(1, Ordering::Relaxed);
}

pub(super) fn reload(r: ReloadResult) {
    RELOADS[r as usize].fetch_add(1, Ordering::Relaxed);
    LAST_RELOAD_OK.store(r == ReloadResult::Applied, Ordering::Relaxed);
}

/// A reading of every counter.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub last_reload_successful: bool,
    pub reloads: Vec<(ReloadResult, u64)>,
    pub auth: Vec<(AuthResult, u64)>,
}

/// The counters, or None when no `--web.config.file` is in use.
pub fn snapshot() -> Option<Snapshot> {
    if !IN_USE.load(Ordering::Relaxed) {
        return None;
    }
    Some(Snapshot {
        last_reload_successful: LAST_RELOAD_OK.load(Ordering::Relaxed),
        reloads: ReloadResult::ALL
            .iter()
            .map(|r| (*r, RELOADS[*r as usize].load(Ordering::Relaxed)))
            .collect(),
        auth: AuthResult::ALL
            .iter()
            .map(|r| (*r, AUTH[*r as usize].load(Ordering::Relaxed)))
            .collect(),
    })
}
