//! HTTP: `/` landing page, `/healthz`, the telemetry path and the JSON API
//! (`/api/v1/maps`, src/api.rs), over plain TCP or TLS (`--web.config.file`).
//! Scrapes and API requests are handed to the collector thread, which owns
//! every BPF object and answers every request waiting when a scrape starts
//! from that one scrape.
//!
//! Invariants: request bodies are never read; only GET and HEAD are served;
//! a connection is closed when its request header has not arrived within
//! the header timeout of its first byte (or of accept), or when it sat idle
//! between requests for the idle timeout, when a write made no progress
//! for the write timeout, or when a response is still being written the
//! request timeout after its request began; at most `max_connections`
//! connections are open, further clients wait in the kernel's backlog.
mod conn;
mod gate;
mod listen;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::exporter::Job;

use conn::{ConnClock, Deadlined};
use gate::ApiGate;
pub use listen::{bind, parse_listen};
use routes::handle;

/// Serving limits (`--web.*` flags).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A write that makes no progress this long fails the connection.
    pub write_timeout: Duration,
    /// A response still being written this long after its request began
    /// fails the connection.
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// JSON API requests worked on at once.
    pub max_api_requests: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_api_requests: 4,
        }
    }
}

/// Send buffer of a connection's socket (the kernel doubles it).
const SEND_BUFFER: usize = 64 << 10;

/// How long a JSON API request waits for a slot before a 503.
const API_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct State {
    pub telemetry_path: String,
    pub scrapes: mpsc::Sender<Job>,
    pub health: Arc<crate::exporter::Health>,
    /// The JSON API's shared census (`ScrapeService::shared_maps`).
    pub maps: Arc<crate::exporter::SharedMaps>,
    pub web: Arc<crate::web::Web>,
    /// Collectors this exporter runs (what collect[] may name).
    pub enabled_collectors: Vec<&'static str>,
    /// Serve the JSON API to network clients without authentication or TLS
    /// (`--web.expose-api`).
    pub expose_api: bool,
}

/// Whether an accept error means the process or system is out of a
/// resource (retrying at once would spin).
fn resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Logs accept failures at most once per `every`, with how many were
/// suppressed in between.
struct RateLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    fn log(&mut self, addr: SocketAddr, e: &std::io::Error, backoff: Duration) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= self.every)
        {
            tracing::warn!(%addr, error = %e, suppressed = self.suppressed, backoff_ms = backoff.as_millis() as u64,
                "accept failed; backing off (open connections and the fd limit: ulimit -n)");
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    st: State,
    limits: Arc<Limits>,
    permits: Arc<Semaphore>,
    gate: Arc<ApiGate>,
) {
    let addr = listener.local_addr().ok();
    let addr = addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut ratelog = RateLog {
        every: Duration::from_secs(10),
        last: None,
        suppressed: 0,
    };
    let mut backoff = Duration::ZERO;
    loop {
        // Stop accepting while the connection bound is reached.
        let permit = match permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let (stream, peer) = match listener.accept().await {
            Ok(sp) => {
                backoff = Duration::ZERO;
                sp
            }
            Err(e) => {
                drop(permit);
                if resource_exhausted(&e) {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    ratelog.log(addr, &e, backoff);
                    tokio::time::sleep(backoff).await;
                } else {
                    tracing::debug!(%addr, error = %e, "accept failed");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A fixed send buffer: the kernel's autotuning would let a client
        // that never reads park megabytes of answers (and one census per
        // pipelined request) before its writes stall.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let st = st.clone();
        let limits = limits.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let web = st.web.current();
            let clock = Arc::new(ConnClock::new());
            let io = Deadlined::new(stream, clock.clone(), limits.clone());
            match &web.acceptor {
                Some(acc) => {
                    match tokio::time::timeout(limits.header_timeout, acc.accept(io)).await {
                        Ok(Ok(tls)) => serve_conn(tls, st, clock, peer, gate).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => serve_conn(io, st, clock, peer, gate).await,
            }
        });
    }
}

async fn serve_conn<S>(
    io: S,
    st: State,
    clock: Arc<ConnClock>,
    peer: SocketAddr,
    gate: Arc<ApiGate>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .service(tower::service_fn(move |req| {
            handle(st.clone(), clock.clone(), peer, gate.clone(), req)
        }));
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // The reader's deadlines (Deadlined) time headers and idleness.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serve on every listener until `shutdown` resolves.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    st: State,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let gate = Arc::new(ApiGate::new(limits.max_api_requests, API_WAIT));
    let tls = st.web.tls();
    let mut tasks = Vec::new();
    for l in listeners {
        let l = TcpListener::from_std(l)?;
        tracing::info!(addr = %l.local_addr()?, path = %st.telemetry_path, tls, "listening");
        tasks.push(tokio::spawn(accept_loop(
            l,
            st.clone(),
            limits.clone(),
            permits.clone(),
            gate.clone(),
        )));
    }
    shutdown.await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}
