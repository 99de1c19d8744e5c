//! The exporter-toolkit web configuration file (`--web.config.file`), as
//! node_exporter and every exporter-toolkit user reads it: unknown fields
//! are errors, relative paths are relative to the file's directory, and a
//! field that cannot be honoured is rejected at start with its name.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
    /// Accepted so that a shared Secret parses; rejected when it enables
    /// limiting (see [`File::validate`]).
    #[serde(default)]
    pub rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub client_ca: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<String>,
    #[serde(default)]
    pub client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// HTTP/2 is not served (scrapes are HTTP/1.1); the field is accepted
    /// for compatibility with shared files.
    #[serde(default, rename = "http2")]
    pub _http2: Option<bool>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// Where PEM material comes from: a file (re-read when it changes) or the
/// config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Inline(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The validated TLS part.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: Source,
    pub key: Source,
    pub client_ca: Option<Source>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by IANA name, in preference order; empty = rustls's.
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// Key-exchange groups by Go name, in preference order; empty = rustls's.
    pub curve_preferences: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub tls: Option<Tls>,
    /// user -> bcrypt hash; empty = no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers, names as written in the file.
    pub headers: Vec<(String, String)>,
}

/// A configuration error naming the field and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct Error {
    pub path: String,
    pub msg: String,
}

/// Headers the file may set, with the values allowed (none = any).
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn version(field: &str, v: Option<&str>, default: TlsVersion) -> Result<TlsVersion, String> {
    match v.unwrap_or("") {
        "" => Ok(default),
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{field}: {} is not offered (rustls speaks TLS12 and TLS13 only); use TLS12 or TLS13",
            v.unwrap_or("")
        )),
        other => Err(format!(
            "tls_server_config.{field}: unknown TLS version {other:?}; use TLS12 or TLS13"
        )),
    }
}

/// The highest bcrypt cost accepted: every check doubles in time per step,
/// and a check must fit in a scrape's timeout on a loaded node.
pub(crate) const MAX_BCRYPT_COST: u32 = 14;

/// A rough wall time of one bcrypt check at `cost` on one core (cost 10
/// takes tens of milliseconds), for the refusal message.
fn approx_check_time(cost: u32) -> String {
    let secs = 0.06 * f64::from(1u32 << (cost.min(31) - 10));
    if secs >= 3600.0 {
        format!("{:.0} hours", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.0} minutes", secs / 60.0)
    } else {
        format!("{secs:.0} seconds")
    }
}

/// A bcrypt hash as `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit cost and
/// 53 characters of salt and hash.
pub(crate) fn is_bcrypt(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && b[0] == b'$'
        && b[1] == b'2'
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
        && (4..=31).contains(&((b[4] - b'0') * 10 + (b[5] - b'0')))
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

impl File {
    /// Parse YAML text (no file access).
    pub fn parse(text: &str) -> Result<File, Error> {
        if text.trim().is_empty() {
            return Ok(File::default());
        }
        serde_yaml_ng::from_str::<Option<File>>(text)
            .map(|f| f.unwrap_or_default())
            .map_err(|e| Error {
                path: "web config".into(),
                msg: format!(
                    "{e} (fields are those of exporter-toolkit's web-configuration.md: tls_server_config, http_server_config, basic_auth_users)"
                ),
            })
    }

    /// Check every field; relative file names are joined to `dir`.
    pub fn validate(self, dir: &Path) -> Result<Settings, String> {
        let join = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let mut out = Settings::default();
        if let Some(rl) = &self.rate_limit {
            let interval_zero = match rl.get("interval") {
                None => true,
                Some(serde_yaml_ng::Value::Number(n)) => n.as_f64() == Some(0.0),
                Some(serde_yaml_ng::Value::String(s)) => {
                    s.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0"
                }
                Some(_) => false,
            };
            if !interval_zero {
                return Err(
                    "rate_limit: request rate limiting is not supported by bpfmap-exporter; remove rate_limit or set its interval to 0 (concurrent scrapes share one census)".into(),
                );
            }
        }
        if let Some(t) = self.tls_server_config {
            let enabled = [
                &t.cert,
                &t.key,
                &t.cert_file,
                &t.key_file,
                &t.client_ca,
                &t.client_ca_file,
                &t.client_auth_type,
            ]
            .iter()
            .any(|f| nonempty(f).is_some());
            if enabled {
                out.tls = Some(validate_tls(t, &join)?);
            }
        }
        if let Some(h) = self.http_server_config {
            for (k, v) in h.headers.unwrap_or_default() {
                let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == k) else {
                    let names: Vec<_> = HEADERS.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "http_server_config.headers.{k}: this header can not be configured; the allowed headers are {}",
                        names.join(", ")
                    ));
                };
                if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
                    return Err(format!(
                        "http_server_config.headers.{k}: invalid value {v:?}; expected one of {allowed:?}"
                    ));
                }
                if v.is_empty() {
                    continue;
                }
                if hyper::header::HeaderValue::from_str(&v).is_err() {
                    return Err(format!(
                        "http_server_config.headers.{k}: value {v:?} is not a valid HTTP header value (visible ASCII only)"
                    ));
                }
                out.headers.push((k, v));
            }
        }
        for (user, hash) in self.basic_auth_users.unwrap_or_default() {
            if !is_bcrypt(&hash) {
                return Err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected $2y$<cost>$<53 characters>); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ));
            }
            let cost =
                u32::from(hash.as_bytes()[4] - b'0') * 10 + u32::from(hash.as_bytes()[5] - b'0');
            if cost > MAX_BCRYPT_COST {
                return Err(format!(
                    "basic_auth_users.{user}: bcrypt cost {cost} is above {MAX_BCRYPT_COST}: each check would take {} or more of CPU, longer than a scrape may wait; make a hash with cost 10-12 (`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                    approx_check_time(cost)
                ));
            }
            out.users.insert(user, hash);
        }
        Ok(out)
    }
}

fn validate_tls(t: TlsServerConfig, join: &dyn Fn(&str) -> PathBuf) -> Result<Tls, String> {
    let pick = |file: &Option<String>, inline: &Option<String>, name: &str| match (
        nonempty(file),
        nonempty(inline),
    ) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: both {name}_file and {name} are set; use one of them"
        )),
        (Some(f), None) => Ok(Some(Source::File(join(f)))),
        (None, Some(i)) => Ok(Some(Source::Inline(i.to_string()))),
        (None, None) => Ok(None),
    };
    let cert = pick(&t.cert_file, &t.cert, "cert")?.ok_or(
        "tls_server_config: missing one of cert or cert_file (the server certificate, PEM)",
    )?;
    let key = pick(&t.key_file, &t.key, "key")?
        .ok_or("tls_server_config: missing one of key or key_file (the server key, PEM)")?;
    let client_ca = pick(&t.client_ca_file, &t.client_ca, "client_ca")?;
    let client_auth = match nonempty(&t.client_auth_type).unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::NoClientCert,
        "RequestClientCert" => ClientAuth::RequestClientCert,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid value {other:?}; use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ))
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err("tls_server_config.client_ca_file: a client CA is configured without a client_auth_type; set client_auth_type: RequireAndVerifyClientCert".into())
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err("tls_server_config.client_ca_file: client_auth_type verifies client certificates but no client CA is set; set client_ca_file (PEM bundle of the CAs that sign client certificates)".into())
        }
        _ => {}
    }
    if t.client_allowed_sans
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err("tls_server_config.client_allowed_sans: not supported by bpfmap-exporter; restrict clients by the client CA instead".into());
    }
    let min_version = version("min_version", t.min_version.as_deref(), TlsVersion::Tls12)?;
    let max_version = version("max_version", t.max_version.as_deref(), TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err("tls_server_config.min_version: greater than max_version".into());
    }
    let cipher_suites = t.cipher_suites.unwrap_or_default();
    for c in &cipher_suites {
        if crate::web::ciphers::cipher_suite(c).is_none() {
            return Err(format!(
                "tls_server_config.cipher_suites: unknown or unsupported cipher suite {c:?}; supported: {}",
                crate::web::ciphers::cipher_suite_names().join(", ")
            ));
        }
    }
    let curve_preferences = t.curve_preferences.unwrap_or_default();
    for c in &curve_preferences {
        if crate::web::ciphers::kx_group(c).is_none() {
            return Err(format!(
                "tls_server_config.curve_preferences: unknown or unsupported curve {c:?}; supported: X25519, CurveP256, CurveP384"
            ));
        }
    }
    Ok(Tls {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Result<Settings, String> {
        File::parse(text)
            .map_err(|e| e.to_string())?
            .validate(Path::new("/etc/web"))
    }

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let s = v("").unwrap();
        assert!(s.tls.is_none() && s.users.is_empty() && s.headers.is_empty());
        let s = v("tls_server_config: {}\n").unwrap();
        assert!(s.tls.is_none());
    }

    #[test]
    fn full_file_parses_and_paths_are_relative_to_the_file() {
        let s = v(&format!(
            "tls_server_config:\n  cert_file: s.crt\n  key_file: /abs/s.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  alice: '{HASH}'\n"
        ))
        .unwrap();
        let t = s.tls.unwrap();
        assert_eq!(t.cert, Source::File("/etc/web/s.crt".into()));
        assert_eq!(t.key, Source::File("/abs/s.key".into()));
        assert_eq!(t.client_ca, Some(Source::File("/etc/web/ca.crt".into())));
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(t.min_version, TlsVersion::Tls13);
        assert_eq!(s.users.get("alice").map(String::as_str), Some(HASH));
        assert_eq!(s.headers, vec![("X-Frame-Options".into(), "deny".into())]);
    }

    #[test]
    fn bad_files_name_the_field() {
        for (text, field) in [
            ("tls_server_config:\n  cert_fil: a\n", "cert_fil"),
            ("tls_server_config:\n  cert_file: a\n", "key"),
            ("tls_server_config:\n  key_file: a\n", "cert"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n",
                "client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "min_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                "cipher_suites",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                "curve_preferences",
            ),
            ("basic_auth_users:\n  bob: hunter2\n", "basic_auth_users.bob"),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "headers.Server",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "X-Frame-Options",
            ),
            ("rate_limit:\n  interval: 1s\n  burst: 2\n", "rate_limit"),
            ("tls_server_config: [1, 2]\n", "tls_server_config"),
            ("junk\n", "web config"),
        ] {
            let e = v(text).expect_err(text);
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn deploy_example_is_valid_and_its_hash_is_of_change_me() {
        let text = include_str!("../../deploy/web/web-config.yml");
        let s = File::parse(text)
            .unwrap()
            .validate(Path::new("/etc/bpfmap-exporter/web"))
            .unwrap();
        let t = s.tls.unwrap();
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            t.cert,
            Source::File("/etc/bpfmap-exporter/web/tls.crt".into())
        );
        assert!(bcrypt::verify("change-me", &s.users["prometheus"]).unwrap());
    }

    #[test]
    fn bcrypt_format() {
        assert!(is_bcrypt(HASH));
        assert!(!is_bcrypt(&HASH[..59]));
        assert!(!is_bcrypt(&HASH.replace("$10$", "$99$")));
    }

    #[test]
    fn a_bcrypt_cost_no_scrape_can_wait_for_is_refused_with_the_fix() {
        let with = |cost: &str| {
            v(&format!(
                "basic_auth_users:\n  alice: '{}'\n",
                HASH.replace("$10$", cost)
            ))
        };
        assert!(with("$14$").is_ok());
        let e = with("$15$").unwrap_err();
        assert!(
            e.contains("cost 15 is above 14") && e.contains("htpasswd -nBC 10"),
            "{e}"
        );
        let e = with("$31$").unwrap_err();
        assert!(e.contains("hours"), "{e}");
    }
}
