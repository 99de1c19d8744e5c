//! HTTP basic authentication against bcrypt hashes, built to stay up under
//! a flood of wrong passwords and to reveal nothing by timing.
//!
//! Invariants:
//! - bcrypt runs only on the hashing pool: `workers` dedicated threads (half
//!   the cores, 1 to 4), never on the async threads nor on tokio's blocking
//!   pool, so shutdown never waits for a queue of verifications; they run
//!   at nice 10, below the threads that serve requests.
//! - At most `workers` verifications run at once and at most
//!   `4 × workers` requests wait for one, each at most [`WAIT`]; any other
//!   request is answered [`Verdict::Busy`] at once (the server sends 503
//!   with `Retry-After`).
//! - Good credentials are remembered in an LRU of [`CACHE_MAX`] keyed by
//!   HMAC-SHA256 (a per-process random key) of user, hash and password:
//!   the password is never stored, a changed hash misses, and wrong
//!   passwords are never cached, so a flood of them evicts nothing.
//! - A user name is found by comparing its HMAC with every configured
//!   user's in constant time; an unknown user costs one verification
//!   against a hash with the highest cost among the configured ones.
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::stats::{self, AuthResult};

/// A valid bcrypt hash whose digest part (the last 31 characters) the dummy
/// hash of unknown users borrows: it matches no password under another salt.
const DIGEST_DONOR: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Good credentials remembered.
pub const CACHE_MAX: usize = 1024;
/// The nice value of the hashing threads.
const NICE: i32 = 10;
/// How long a request waits for a hashing slot before it is answered Busy.
pub const WAIT: Duration = Duration::from_secs(1);

/// The answer to one request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No authentication configured, or a good credential.
    Allowed,
    /// Missing, malformed, unknown user or wrong password.
    Denied,
    /// Every hashing slot is taken and the wait list is full.
    Busy,
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing pool: dedicated threads fed through a channel whose length
/// the semaphore bounds.
struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (cores / 2).clamp(1, 4);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("bcrypt-{i}"))
                .spawn(move || {
                    // Serving requests (cached credentials, scrapes) goes first.
                    if let Err(e) = crate::sys::nice_this_thread(NICE) {
                        tracing::debug!(error = %e, "bcrypt thread keeps its priority");
                    }
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a bcrypt thread; basic auth has fewer hashing slots");
            }
        }
        Pool {
            jobs: Mutex::new(tx),
            slots: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            max_waiting: 4 * workers,
        }
    })
}

impl Pool {
    /// A hashing slot, waiting at most [`WAIT`] and only while the wait
    /// list has room.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let p = tokio::time::timeout(WAIT, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        p.ok().and_then(Result::ok)
    }

    /// Run `f` on a pool thread; the slot is held until `f` returns, even
    /// when the caller gave up waiting.
    async fn run(
        &self,
        slot: OwnedSemaphorePermit,
        f: impl FnOnce() -> bool + Send + 'static,
    ) -> bool {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let ok = f();
            drop(slot);
            let _ = tx.send(ok);
        });
        if self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

fn hmac_key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system random source works")
    })
}

/// HMAC of length-prefixed parts.
fn mac(parts: &[&[u8]]) -> [u8; 32] {
    let mut c = ring::hmac::Context::with_key(hmac_key());
    for p in parts {
        c.update(&(p.len() as u64).to_le_bytes());
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.sign().as_ref());
    out
}

/// Good credentials, shared by every configuration generation (the key
/// holds the hash, so a user whose hash changed misses).
fn cache() -> &'static Mutex<lru::LruCache<[u8; 32], ()>> {
    static CACHE: OnceLock<Mutex<lru::LruCache<[u8; 32], ()>>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(CACHE_MAX).expect("CACHE_MAX is not zero"),
        ))
    })
}

/// The cost field of a bcrypt hash (validated before it gets here).
fn cost(hash: &str) -> u32 {
    hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0)
}

struct User {
    name_mac: [u8; 32],
    hash: String,
}

#[derive(Default)]
pub struct Auth {
    users: Vec<User>,
    /// Compared for unknown users: the salt of the costliest configured
    /// hash with a digest that matches nothing.
    dummy: String,
    verifications: AtomicU64,
}

/// The user and password of an `Authorization: Basic` header value.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Auth {
    /// `users`: name -> bcrypt hash, as validated by the config.
    pub fn new(users: BTreeMap<String, String>) -> Auth {
        let dummy = users
            .values()
            .max_by_key(|h| cost(h))
            .map(|h| format!("{}{}", &h[..29], &DIGEST_DONOR[29..]))
            .unwrap_or_default();
        Auth {
            users: users
                .into_iter()
                .map(|(name, hash)| User {
                    name_mac: mac(&[name.as_bytes()]),
                    hash,
                })
                .collect(),
            dummy,
            verifications: AtomicU64::new(0),
        }
    }

    /// Whether requests need credentials at all.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// The hash unknown users are verified against.
    #[cfg(any(test, feature = "testing"))]
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
    }

    /// bcrypt verifications this configuration ran (unknown users included).
    #[cfg(any(test, feature = "testing"))]
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The configured hash of `name`, found without an early exit.
    fn find(&self, name: &str) -> Option<&str> {
        let m = mac(&[name.as_bytes()]);
        let mut found = None;
        for u in &self.users {
            if bool::from(u.name_mac.ct_eq(&m)) {
                found = Some(u.hash.as_str());
            }
        }
        found
    }

    /// The verdict on an `Authorization` header value (if any).
    pub async fn check(&self, header: Option<&[u8]>) -> Verdict {
        if !self.required() {
            return Verdict::Allowed;
        }
        let Some((user, pass)) = header.and_then(parse_basic) else {
            stats::auth(AuthResult::Denied);
            return Verdict::Denied;
        };
        let (hash, known) = match self.find(&user) {
            Some(h) => (h.to_string(), true),
            None => (self.dummy.clone(), false),
        };
        let key = mac(&[user.as_bytes(), hash.as_bytes(), pass.as_bytes()]);
        let hit = cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some();
        if hit && known {
            stats::auth(AuthResult::Cached);
            return Verdict::Allowed;
        }
        let pool = pool();
        let Some(slot) = pool.admit().await else {
            stats::auth(AuthResult::Busy);
            return Verdict::Busy;
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = pool
            .run(slot, move || {
                bcrypt::verify(pass.as_bytes(), &hash).unwrap_or(false)
            })
            .await;
        if ok && known {
            cache()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(key, ());
            stats::auth(AuthResult::Verified);
            Verdict::Allowed
        } else {
            stats::auth(AuthResult::Denied);
            Verdict::Denied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        // "alice:s3cr:et" and "bob:" in base64.
        assert_eq!(
            parse_basic(b"Basic YWxpY2U6czNjcjpldA=="),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(
            parse_basic(b"basic Ym9iOg=="),
            Some(("bob".into(), "".into()))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!!"), None);
        assert_eq!(parse_basic(b"Basic YWxpY2U"), None);
        assert_eq!(parse_basic(b"Basic bm9jb2xvbg=="), None);
    }

    fn hdr(u: &str, p: &str) -> String {
        let s = format!("{u}:{p}");
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s.as_bytes())
        )
    }

    #[tokio::test]
    async fn right_wrong_missing_and_unknown() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let a = Auth::new([("alice".to_string(), hash)].into());
        assert_eq!(
            a.check(Some(hdr("alice", "pw").as_bytes())).await,
            Verdict::Allowed
        );
        // Cached: no second verification.
        assert_eq!(
            a.check(Some(hdr("alice", "pw").as_bytes())).await,
            Verdict::Allowed
        );
        assert_eq!(a.verifications(), 1);
        assert_eq!(
            a.check(Some(hdr("alice", "pW").as_bytes())).await,
            Verdict::Denied
        );
        // Wrong passwords are never cached: the same one costs again.
        assert_eq!(
            a.check(Some(hdr("alice", "pW").as_bytes())).await,
            Verdict::Denied
        );
        assert_eq!(a.verifications(), 3);
        assert_eq!(
            a.check(Some(hdr("mallory", "pw").as_bytes())).await,
            Verdict::Denied
        );
        assert_eq!(a.check(None).await, Verdict::Denied);
        assert_eq!(
            Auth::new(Default::default()).check(None).await,
            Verdict::Allowed
        );
    }

    #[tokio::test]
    async fn a_changed_hash_does_not_reuse_a_cached_credential() {
        let a = Auth::new([("carol".to_string(), bcrypt::hash("old", 4).unwrap())].into());
        assert_eq!(
            a.check(Some(hdr("carol", "old").as_bytes())).await,
            Verdict::Allowed
        );
        let b = Auth::new([("carol".to_string(), bcrypt::hash("new", 4).unwrap())].into());
        assert_eq!(
            b.check(Some(hdr("carol", "old").as_bytes())).await,
            Verdict::Denied
        );
    }

    #[test]
    fn dummy_hash_has_the_highest_configured_cost_and_matches_nothing() {
        let h5 = bcrypt::hash("a", 5).unwrap();
        let h6 = bcrypt::hash("b", 6).unwrap();
        let a = Auth::new([("x".to_string(), h5.clone()), ("y".to_string(), h6.clone())].into());
        assert_eq!(cost(a.dummy_hash()), 6);
        assert_eq!(&a.dummy_hash()[..29], &h6[..29]);
        assert!(!bcrypt::verify("b", a.dummy_hash()).unwrap());
        assert!(super::super::config::is_bcrypt(a.dummy_hash()));
    }
}
