//! HTTP basic authentication against bcrypt hashes, as exporter-toolkit
//! does it: unknown users cost one bcrypt comparison against a fixed hash
//! (no user enumeration by timing), comparisons run one at a time off the
//! async threads, and results are cached by a SHA-256 of user, hash and
//! password (the password itself is never stored).
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// bcrypt of "fakepassword" at cost 10, compared for unknown users.
const FAKE_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Cached comparison results kept before the cache is emptied.
const CACHE_MAX: usize = 256;

#[derive(Default)]
pub struct Auth {
    users: BTreeMap<String, String>,
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// One bcrypt comparison at a time: each costs tens of milliseconds.
    bcrypt: Arc<Mutex<()>>,
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
    pub fn new(users: BTreeMap<String, String>) -> Auth {
        Auth {
            users,
            ..Default::default()
        }
    }

    /// Whether requests need credentials at all.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the `Authorization` header value (if any) is accepted.
    pub async fn check(self: &Arc<Self>, header: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let Some((user, pass)) = header.and_then(parse_basic) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (FAKE_HASH.to_string(), false),
        };
        let key = {
            let mut d = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), hash.as_bytes(), pass.as_bytes()] {
                d.update(&(part.len() as u64).to_le_bytes());
                d.update(part);
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(d.finish().as_ref());
            k
        };
        if let Some(ok) = self.cache.lock().unwrap().get(&key) {
            return *ok && known;
        }
        let lock = self.bcrypt.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _one = lock.lock().unwrap();
            bcrypt::verify(pass.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let mut c = self.cache.lock().unwrap();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, ok);
        ok && known
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

    #[tokio::test]
    async fn right_wrong_missing_and_unknown() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let a = Arc::new(Auth::new([("alice".to_string(), hash)].into()));
        let hdr = |u: &str, p: &str| {
            let s = format!("{u}:{p}");
            format!("Basic {}", encode(s.as_bytes()))
        };
        assert!(a.check(Some(hdr("alice", "pw").as_bytes())).await);
        // Cached result, same answer.
        assert!(a.check(Some(hdr("alice", "pw").as_bytes())).await);
        assert!(!a.check(Some(hdr("alice", "pW").as_bytes())).await);
        assert!(
            !a.check(Some(hdr("mallory", "fakepassword").as_bytes()))
                .await
        );
        assert!(!a.check(None).await);
        assert!(Arc::new(Auth::new(Default::default())).check(None).await);
    }

    fn encode(b: &[u8]) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
    }
}
