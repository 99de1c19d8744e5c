//! `explain --from URL`: the same selection, answered by a running
//! exporter's `/api/v1/maps`.

use anyhow::{bail, Context};
use serde_json::Value;

use super::{print, several_named, ExplainArgs, MAX_LIMIT};

/// `explain --from URL`: the same selection, answered by a running
/// exporter's `/api/v1/maps`.
pub(super) fn run_from(args: &ExplainArgs, url: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let base = url.trim_end_matches('/');
    let parsed: hyper::Uri = base
        .parse()
        .with_context(|| format!("--from {url:?}: not a URL (e.g. http://127.0.0.1:9863)"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        bail!("--from {url:?}: expected http://HOST:PORT or https://HOST:PORT");
    }
    // user:password@ becomes a basic auth header (ureq sends none itself).
    let (auth, base) = match parsed.authority().map(|a| a.as_str()) {
        Some(a) if a.contains('@') => {
            let (user, host) = a.rsplit_once('@').expect("contains @");
            let b64 = base64::engine::general_purpose::STANDARD.encode(user);
            let scheme = parsed.scheme_str().unwrap_or("http");
            let rest = parsed.path().trim_end_matches('/');
            (
                Some(format!("Basic {b64}")),
                format!("{scheme}://{host}{rest}"),
            )
        }
        _ => (None, base.to_string()),
    };
    let (path, query): (String, Vec<(&str, String)>) = if let Some(id) = args.id {
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
        bail!("choose a map with --id, --name, --pin or --pid");
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    for (k, v) in &query {
        req = req.query(k, v);
    }
    if path == "/api/v1/maps" {
        req = req.query("limit", MAX_LIMIT.to_string());
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req
        .call()
        .with_context(|| format!("GET {base}{path} (--from)"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .with_context(|| format!("reading the answer of {base}{path}"))?;
    let doc: Value = serde_json::from_str(&body).with_context(|| {
        format!(
            "{base}{path} answered {status} with no JSON document (is it a bpfmap-exporter?): {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    if !status.is_success() {
        bail!(
            "{}",
            doc["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{base}{path} answered {status}"))
        );
    }
    let maps = doc["maps"].as_array().cloned().unwrap_or_default();
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
    print(args, &doc, maps.is_empty())
}
