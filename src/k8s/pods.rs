//! Optional enrichment: pod UID -> (namespace, pod name) from the pods on
//! this node, listed from the API server (`--k8s.enrich`) or the kubelet
//! (`--k8s.kubelet-url`). Refreshed in the background, bounded, and failing
//! soft: a failed refresh keeps the last good index and is counted.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

/// Namespace and name of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Parse a `v1.PodList` (API server `/api/v1/pods` or kubelet `/pods`) into
/// uid -> pod, keeping at most `max` pods. Items without uid or name are
/// skipped; a body that is not a PodList is an error.
pub fn parse_pod_list(body: &str, max: usize) -> anyhow::Result<HashMap<String, PodRef>> {
    let v: serde_json::Value = serde_json::from_str(body).context("pod list is not JSON")?;
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "PodList" {
        bail!("expected a PodList, got kind {kind:?}");
    }
    let mut out = HashMap::new();
    let items = v.get("items").and_then(|i| i.as_array());
    for item in items.into_iter().flatten() {
        if out.len() >= max {
            break;
        }
        let meta = &item["metadata"];
        let (Some(uid), Some(name)) = (meta["uid"].as_str(), meta["name"].as_str()) else {
            continue;
        };
        let namespace = meta["namespace"].as_str().unwrap_or("default");
        out.insert(
            uid.to_ascii_lowercase(),
            PodRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        );
    }
    Ok(out)
}

/// Where the pod list comes from.
#[derive(Clone, Debug)]
pub struct PodSource {
    /// Full URL of the list request.
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub max_pods: usize,
    pub interval: Duration,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl PodSource {
    /// In-cluster API server: pods of `node` only (server-side field
    /// selector, served from the watch cache with resourceVersion=0).
    pub fn api_server(node: &str, max_pods: usize, interval: Duration) -> anyhow::Result<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            anyhow::anyhow!("--k8s.enrich needs KUBERNETES_SERVICE_HOST (run in a pod with automountServiceAccountToken: true), or use --k8s.kubelet-url")
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(PodSource {
            url: format!(
                "https://{host}:{port}/api/v1/pods?fieldSelector=spec.nodeName%3D{}&resourceVersion=0",
                node
            ),
            token_file: Some(PathBuf::from(SA_DIR).join("token")),
            ca_file: Some(PathBuf::from(SA_DIR).join("ca.crt")),
            insecure_skip_verify: false,
            max_pods,
            interval,
        })
    }

    /// The kubelet's `/pods` (needs nodes/proxy RBAC on a secured kubelet).
    pub fn kubelet(
        base: &str,
        insecure_skip_verify: bool,
        max_pods: usize,
        interval: Duration,
    ) -> Self {
        let token = PathBuf::from(SA_DIR).join("token");
        let ca = PathBuf::from(SA_DIR).join("ca.crt");
        PodSource {
            url: format!("{}/pods", base.trim_end_matches('/')),
            token_file: token.exists().then_some(token),
            ca_file: ca.exists().then_some(ca),
            insecure_skip_verify,
            max_pods,
            interval,
        }
    }

    fn agent(&self) -> anyhow::Result<ureq::Agent> {
        use ureq::tls::{PemItem, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder().disable_verification(self.insecure_skip_verify);
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading CA {}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("no certificate in CA file {}", ca.display());
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let cfg = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        Ok(cfg.into())
    }

    fn fetch(&self, agent: &ureq::Agent) -> anyhow::Result<HashMap<String, PodRef>> {
        let mut req = agent.get(&self.url).header("Accept", "application/json");
        if let Some(t) = &self.token_file {
            let token = std::fs::read_to_string(t)
                .with_context(|| format!("reading token {}", t.display()))?;
            req = req.header("Authorization", format!("Bearer {}", token.trim()));
        }
        let mut resp = req.call().with_context(|| format!("GET {}", self.url))?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .context("reading the pod list")?;
        parse_pod_list(&body, self.max_pods)
    }
}

/// The shared index and its health, read by the attributor.
#[derive(Default)]
pub struct PodIndex {
    pub pods: HashMap<String, PodRef>,
    pub refreshes: u64,
    pub failures: u64,
    pub last_ok: bool,
    pub last_success_unix: f64,
    pub last_error: Option<String>,
}

/// Start the background refresher; returns the index it keeps current.
pub fn spawn(source: PodSource) -> anyhow::Result<Arc<RwLock<PodIndex>>> {
    let agent = source.agent()?;
    let index = Arc::new(RwLock::new(PodIndex::default()));
    let idx = index.clone();
    std::thread::Builder::new()
        .name("k8s-pods".into())
        .spawn(move || loop {
            let r = source.fetch(&agent);
            {
                let mut i = idx.write().unwrap_or_else(|e| e.into_inner());
                i.refreshes += 1;
                match r {
                    Ok(pods) => {
                        i.pods = pods;
                        i.last_ok = true;
                        i.last_error = None;
                        i.last_success_unix = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0);
                    }
                    Err(e) => {
                        // Keep the last good index: names rarely change.
                        i.failures += 1;
                        i.last_ok = false;
                        let msg = format!("{e:#}");
                        if i.last_error.as_deref() != Some(&msg) {
                            tracing::warn!(error = %msg, "k8s pod list refresh failed; pod names stay as last known");
                        }
                        i.last_error = Some(msg);
                    }
                }
            }
            std::thread::sleep(source.interval);
        })?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("testdata/podlist.json");

    #[test]
    fn parses_the_fixture() {
        let pods = parse_pod_list(FIXTURE, 100).unwrap();
        assert_eq!(pods.len(), 3, "{pods:?}");
        assert_eq!(
            pods["8a3f4c2e-1b2d-4e5f-9a8b-7c6d5e4f3a2b"],
            PodRef {
                namespace: "kube-system".into(),
                name: "cilium-x7k2p".into()
            }
        );
        assert_eq!(
            pods["5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"].namespace,
            "monitoring"
        );
        // uppercase uid normalised
        assert!(pods.contains_key("0f1e2d3c-4b5a-4968-8776-655443322110"));
    }

    /// The whole fetch path (HTTP client, auth header, body limit, parsing)
    /// against a loopback server that serves the fixture as the kubelet would.
    #[test]
    fn fetches_from_a_kubelet_over_http() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "client closed before sending a request");
                req.extend_from_slice(&buf[..n]);
            }
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{FIXTURE}",
                FIXTURE.len()
            )
            .unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let mut src = PodSource::kubelet(
            &format!("http://{addr}/"),
            false,
            100,
            Duration::from_secs(60),
        );
        src.token_file = None;
        src.ca_file = None;
        let pods = src.fetch(&src.agent().unwrap()).unwrap();
        assert_eq!(pods.len(), 3);
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /pods HTTP/1.1"), "{req}");
    }

    #[test]
    fn bounded() {
        assert_eq!(parse_pod_list(FIXTURE, 2).unwrap().len(), 2);
    }

    #[test]
    fn rejects_what_is_not_a_pod_list() {
        let e = parse_pod_list(
            r#"{"kind":"Status","status":"Failure","reason":"Forbidden"}"#,
            10,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Status"), "{e}");
        assert!(parse_pod_list("<html>", 10).is_err());
        // An empty list is fine.
        assert!(parse_pod_list(r#"{"kind":"PodList","items":[]}"#, 10)
            .unwrap()
            .is_empty());
        // kubelet /pods omits nothing we need but may have null items
        assert!(parse_pod_list(r#"{"kind":"PodList","items":null}"#, 10)
            .unwrap()
            .is_empty());
    }
}
