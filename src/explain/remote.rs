//! `explain --from URL`: the same selection, answered by a running
//! exporter's `/api/v1/maps` (or `/api/v1/programs`). The server is not
//! trusted: the answer is read up to `--max-response-size`, must be this
//! exporter's document of the schema version this build understands, and
//! its strings are printed with control bytes escaped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::IgnoredAny;
use serde_json::Value;

use super::{print, several_named, ExplainArgs, MAX_LIMIT, SCHEMA_VERSION};

/// The longest error text from the server that is printed.
const MAX_SERVER_ERROR: usize = 500;

/// How to reach the exporter: `--from` and its TLS and size options.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Ask a running exporter (its /api/v1/maps) instead of taking a census
    /// here, e.g. http://127.0.0.1:9863: it also knows the creating process
    /// of maps created while it ran. Basic auth as
    /// http://user:password@host:port (percent-encode reserved characters
    /// in the password, e.g. %40 for @).
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// With --from https://: trust only the CA certificates in this PEM
    /// file (a private CA) instead of the system trust store.
    #[arg(long = "ca-file", value_name = "FILE", requires = "from")]
    pub ca_file: Option<PathBuf>,
    /// With --from https://: present this PEM client certificate (chain)
    /// to an exporter that requires client certificates.
    #[arg(long = "cert-file", value_name = "FILE", requires_all = ["from", "key_file"])]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of --cert-file.
    #[arg(long = "key-file", value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// With --from: refuse an answer larger than this (bytes, or with KiB,
    /// MiB, GiB). Memory used is a small multiple of it.
    #[arg(long = "max-response-size", value_name = "SIZE", default_value = "16MiB",
          value_parser = crate::units::parse_bytes, requires = "from")]
    pub max_response_size: u64,
}

/// The parts of `--from` a request is built from.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// scheme://host[:port][/prefix], without credentials.
    base: String,
    https: bool,
    /// Percent-decoded user and password.
    credentials: Option<(String, String)>,
}

/// Parse `--from`: http(s)://[user[:password]@]host[:port][/prefix].
fn target(url: &str) -> anyhow::Result<Target> {
    let fix = "use http://HOST:PORT or https://HOST:PORT, with user:password@ before the host for basic auth";
    let parsed: hyper::Uri = url
        .parse()
        .with_context(|| format!("--from {url:?}: not a URL ({fix})"))?;
    let https = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--from {url:?}: not an http or https URL ({fix})"),
    };
    let Some(authority) = parsed.authority().filter(|_| parsed.host().is_some()) else {
        bail!("--from {url:?}: no host ({fix})");
    };
    if parsed.query().is_some() {
        bail!("--from {url:?}: a query string is not part of the exporter's address ({fix}; choose maps with --id, --name, --pin or --pid)");
    }
    let (credentials, host) = match authority.as_str().rsplit_once('@') {
        Some((userinfo, host)) => {
            let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let dec = |what: &str, s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--from: the {what} in the URL is not UTF-8 once percent-decoded"
                        )
                    })
            };
            let user = dec("user", u)?;
            if user.contains(':') {
                bail!("--from: a basic-auth user name cannot contain ':'");
            }
            (Some((user, dec("password", p)?)), host)
        }
        None => (None, authority.as_str()),
    };
    let scheme = if https { "https" } else { "http" };
    let prefix = parsed.path().trim_end_matches('/');
    Ok(Target {
        base: format!("{scheme}://{host}{prefix}"),
        https,
        credentials,
    })
}

fn read_file(flag: &str, p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
}

/// Certificates in a PEM file, or an error naming the flag.
fn pem_certs(flag: &str, p: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = read_file(flag, p)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("{flag} {}: not PEM", p.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            p.display()
        );
    }
    Ok(certs)
}

/// The TLS configuration: roots from `--ca-file` or the system trust
/// store (WebPKI's roots where the system has none), and the client
/// certificate of `--cert-file` / `--key-file`.
fn tls(remote: &RemoteArgs) -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{ClientCert, PrivateKey, RootCerts, TlsConfig};
    let roots = match &remote.ca_file {
        Some(p) => RootCerts::from(pem_certs("--ca-file", p)?),
        None => {
            let native = rustls_native_certs::load_native_certs();
            if native.certs.is_empty() {
                RootCerts::WebPki
            } else {
                RootCerts::from(
                    native
                        .certs
                        .iter()
                        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()),
                )
            }
        }
    };
    let client = match (&remote.cert_file, &remote.key_file) {
        (Some(c), Some(k)) => {
            let chain = pem_certs("--cert-file", c)?;
            let key = PrivateKey::from_pem(&read_file("--key-file", k)?).map_err(|e| {
                anyhow::anyhow!(
                    "--key-file {}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    k.display()
                )
            })?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        _ => None,
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client)
        .build())
}

/// The request path and query for the selection.
fn selection(args: &ExplainArgs) -> anyhow::Result<(String, Vec<(&'static str, String)>)> {
    Ok(if let Some(id) = args.link {
        (format!("/api/v1/links/{id}"), vec![])
    } else if let Some(id) = args.prog {
        (format!("/api/v1/programs/{id}"), vec![])
    } else if let Some(id) = args.id {
        (format!("/api/v1/maps/{id}"), vec![])
    } else if let Some(n) = &args.name {
        ("/api/v1/maps".into(), vec![("name", n.clone())])
    } else if let Some(p) = &args.pin {
        (
            "/api/v1/maps".into(),
            vec![("pin", p.to_string_lossy().into_owned())],
        )
    } else if let Some(pid) = args.pid {
        ("/api/v1/maps".into(), vec![("pid", pid.to_string())])
    } else {
        bail!("choose a map with --id, --name, --pin or --pid, a program with --prog, or a link with --link");
    })
}

/// Why a request failed, with the likely fix.
fn call_error(e: ureq::Error, url: &str, t: &Target, remote: &RemoteArgs) -> anyhow::Error {
    let hint = match &e {
        ureq::Error::Timeout(_) => "the exporter did not answer in time; is it overloaded, or is something else listening there?".to_string(),
        ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "nothing listens there: is the exporter running, and on this port (--web.listen-address)?".to_string()
        }
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => tls_hint(t, remote),
        ureq::Error::Io(_) if t.https => format!("the connection failed; {}", tls_hint(t, remote)),
        ureq::Error::Protocol(_) if !t.https => {
            "the answer is not HTTP: does the exporter serve TLS there (use https://)?".to_string()
        }
        _ => "is the URL the exporter's address (http://HOST:PORT)?".to_string(),
    };
    anyhow::anyhow!("GET {url} (--from): {e}. {hint}")
}

fn tls_hint(_t: &Target, remote: &RemoteArgs) -> String {
    let mut h = String::from("TLS failed: ");
    if remote.ca_file.is_none() {
        h.push_str("if the exporter's certificate is from a private CA, pass --ca-file CA.pem; ");
    }
    if remote.cert_file.is_none() {
        h.push_str("if it requires client certificates (client_auth_type in its web config), pass --cert-file and --key-file; ");
    }
    h.push_str("the certificate must name the host of the URL");
    h
}

/// `s` with control characters written as `\xNN` and cut at `max` chars:
/// text from the server never moves the terminal's cursor or colours.
fn printable(s: &str, max: usize) -> String {
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            o.push_str("...");
            break;
        }
        if c.is_control() {
            o.push_str(&format!("\\x{:02x}", c as u32 & 0xff));
        } else {
            o.push(c);
        }
    }
    o
}

/// Every string in `v` made [`printable`].
fn escape_strings(v: &mut Value) {
    match v {
        Value::String(s) if s.chars().any(char::is_control) => *s = printable(s, usize::MAX),
        Value::Array(a) => a.iter_mut().for_each(escape_strings),
        Value::Object(o) => o.values_mut().for_each(escape_strings),
        _ => {}
    }
}

/// An element of `maps[]` / `programs[]`: an object with an id.
#[derive(serde::Deserialize)]
struct Item {
    #[allow(dead_code)]
    id: u32,
}

/// The top of a document, read without building its contents: the schema
/// version, and the items' ids (4 bytes each).
#[derive(serde::Deserialize)]
struct Head {
    schema_version: Option<Value>,
    maps: Option<Vec<Item>>,
    programs: Option<Vec<Item>>,
    links: Option<Vec<Item>>,
    #[allow(dead_code)]
    total: Option<IgnoredAny>,
}

/// Check that `body` is this exporter's document, of the version this
/// build reads, listing the objects of `key` (`maps`, `programs` or
/// `links`); then parse it.
fn document(body: &[u8], url: &str, key: &str) -> anyhow::Result<Value> {
    let not_ours = |why: String| {
        anyhow::anyhow!(
            "{url} answered with a document that is not bpfmap-exporter's {key} JSON ({why}): is --from the address of a bpfmap-exporter?"
        )
    };
    let head: Head = serde_json::from_slice(body).map_err(|e| not_ours(e.to_string()))?;
    let version = match &head.schema_version {
        None => return Err(not_ours("no schema_version".into())),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| not_ours(format!("schema_version {v} is not a number")))?,
    };
    if version != u64::from(SCHEMA_VERSION) {
        let which = if version > u64::from(SCHEMA_VERSION) {
            "newer"
        } else {
            "older"
        };
        bail!(
            "{url} answered with schema_version {version}, {which} than the {SCHEMA_VERSION} this explain reads: \
             run the explain of the exporter's own release (e.g. kubectl exec into its pod: bpfmap-exporter explain --from http://127.0.0.1:9863 ...)"
        );
    }
    let items = match key {
        "programs" => &head.programs,
        "links" => &head.links,
        _ => &head.maps,
    };
    if items.is_none() {
        return Err(not_ours(format!("no {key} list")));
    }
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| not_ours(e.to_string()))?;
    escape_strings(&mut doc);
    Ok(doc)
}

/// `explain --from URL`: the same selection, answered by a running
/// exporter's `/api/v1/maps`.
pub(super) fn run_from(args: &ExplainArgs, url: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let remote = &args.remote;
    let t = target(url)?;
    if !t.https && (remote.ca_file.is_some() || remote.cert_file.is_some()) {
        bail!("--ca-file, --cert-file and --key-file need an https:// URL in --from (got {url:?})");
    }
    let (path, query) = selection(args)?;
    let key = if args.link.is_some() {
        "links"
    } else if args.prog.is_some() {
        "programs"
    } else {
        "maps"
    };
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(60)));
    if t.https {
        cfg = cfg.tls_config(tls(remote)?);
    }
    let agent: ureq::Agent = cfg.build().into();
    let full = format!("{}{path}", t.base);
    let mut req = agent.get(&full);
    for (k, v) in &query {
        req = req.query(k, v);
    }
    if path == "/api/v1/maps" {
        req = req.query("limit", MAX_LIMIT.to_string());
    }
    if let Some((u, p)) = &t.credentials {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req = req.header("Authorization", format!("Basic {b64}"));
    }
    let mut resp = req.call().map_err(|e| call_error(e, &full, &t, remote))?;
    let status = resp.status();
    let cap = remote.max_response_size;
    let too_big = || {
        anyhow::anyhow!(
            "{full} answered with more than --max-response-size={}: narrow the selection (--id) or raise --max-response-size",
            crate::units::format_bytes(cap)
        )
    };
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let body = match resp.body_mut().with_config().limit(cap).read_to_vec() {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_big()),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "reading the answer of {full} (--from): {e}"
            ))
        }
    };
    if !status.is_success() {
        let said = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|d| d["error"].as_str().map(|s| printable(s, MAX_SERVER_ERROR)));
        let hint = match status.as_u16() {
            401 => ": the exporter requires basic auth: --from http://USER:PASSWORD@HOST:PORT (percent-encode reserved characters in the password)",
            403 => ": the exporter refused this client",
            300..=399 => ": pass the address the exporter itself serves (redirects are not followed)",
            _ => "",
        };
        match said {
            Some(e) => bail!("{full} answered {status}: {e}{hint}"),
            None => bail!("{full} answered {status}{hint}"),
        }
    }
    let doc = document(&body, &full, key)?;
    drop(body);
    let items = |k: &str| doc[k].as_array().map(Vec::len).unwrap_or(0);
    if key != "maps" || args.id.is_some() {
        if items(key) != 1 {
            bail!(
                "{full} answered with {} {key} for one id: is --from the address of a bpfmap-exporter?",
                items(key)
            );
        }
    }
    let maps = doc["maps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if let (Some(n), true) = (&args.name, maps.len() > 1) {
        bail!(
            "{}",
            several_named(
                n,
                maps.iter().map(|m| (
                    m["id"].as_u64().unwrap_or(0) as u32,
                    m["type"].as_str().unwrap_or("").to_string()
                ))
            )
        );
    }
    if args.name.is_some() && maps.is_empty() {
        bail!(
            "no map named {:?} (names are at most 15 bytes, as the kernel truncates them)",
            args.name.as_deref().unwrap_or("")
        );
    }
    if args.pin.is_some() && maps.is_empty() {
        bail!(
            "--pin {}: the exporter knows no map pinned there",
            args.pin.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    if doc["truncated"] == Value::Bool(true) {
        eprintln!(
            "note: the exporter lists the first {} of {} maps",
            maps.len(),
            doc["total"]
        );
    }
    print(args, &doc, maps.is_empty() && args.pid.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_and_kept_out_of_the_url() {
        let t = target("http://alice:p%40ss%3Aw%2Fd@127.0.0.1:9863/").unwrap();
        assert_eq!(
            t,
            Target {
                base: "http://127.0.0.1:9863".into(),
                https: false,
                credentials: Some(("alice".into(), "p@ss:w/d".into())),
            }
        );
        let t = target("https://[::1]:9863/prefix").unwrap();
        assert_eq!(
            (t.base.as_str(), t.https),
            ("https://[::1]:9863/prefix", true)
        );
        assert_eq!(t.credentials, None);
        for bad in [
            "ftp://h:1",
            "127.0.0.1:9863",
            "http://h:1/?x=1",
            "http://a%3Ab:c@h:1",
            "http://u:%ff@h:1",
        ] {
            assert!(target(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn only_this_exporters_document_of_this_version_is_read() {
        let ok = format!(
            r#"{{"schema_version":{SCHEMA_VERSION},"total":1,"maps":[{{"id":3,"name":"a\u001b[2Jb"}}]}}"#
        );
        let d = document(ok.as_bytes(), "u", "maps").unwrap();
        assert_eq!(d["maps"][0]["name"], "a\\x1b[2Jb");
        for (body, want) in [
            ("{}".to_string(), "no schema_version"),
            ("[1,2]".into(), "not bpfmap-exporter's"),
            ("<html>".into(), "not bpfmap-exporter's"),
            (
                r#"{"schema_version":"3","maps":[]}"#.into(),
                "is not a number",
            ),
            (
                format!(r#"{{"schema_version":{},"maps":[]}}"#, SCHEMA_VERSION + 1),
                "newer than",
            ),
            (
                format!(r#"{{"schema_version":{},"maps":[]}}"#, SCHEMA_VERSION - 1),
                "older than",
            ),
            (
                format!(r#"{{"schema_version":{SCHEMA_VERSION}}}"#),
                "no maps list",
            ),
            (
                format!(r#"{{"schema_version":{SCHEMA_VERSION},"maps":[0,0]}}"#),
                "not bpfmap-exporter's",
            ),
            (
                format!(r#"{{"schema_version":{SCHEMA_VERSION},"maps":[{{"name":"x"}}]}}"#),
                "missing field `id`",
            ),
        ] {
            let e = format!("{:#}", document(body.as_bytes(), "u", "maps").unwrap_err());
            assert!(e.contains(want), "{body}: {e}");
        }
        let progs = format!(r#"{{"schema_version":{SCHEMA_VERSION},"programs":[{{"id":1}}]}}"#);
        assert!(document(progs.as_bytes(), "u", "programs").is_ok());
        assert!(document(progs.as_bytes(), "u", "maps").is_err());
        assert!(document(progs.as_bytes(), "u", "links").is_err());
    }

    #[test]
    fn server_text_is_cut_and_loses_its_control_bytes() {
        assert_eq!(printable("a\x1b[31mb\nc", 100), "a\\x1b[31mb\\x0ac");
        assert_eq!(printable(&"x".repeat(1000), 5), "xxxxx...");
    }
}
