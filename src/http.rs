//! HTTP: `/` landing page, `/healthz`, the telemetry path and the JSON API
//! (`/api/v1/maps`, src/api.rs), over plain TCP or TLS (`--web.config.file`).
//! Scrapes and API requests are handed to the collector thread, which owns
//! every BPF object and answers every request waiting when a scrape starts
//! from that one scrape.
//!
//! Invariants: request bodies are never read; only GET and HEAD are served;
//! a connection is closed when its request header has not arrived within
//! the header timeout of its first byte (or of accept), or when it sat idle
//! between requests for the idle timeout; at most `max_connections`
//! connections are open, further clients wait in the kernel's backlog.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::Exposition;

/// Exposition formats a scrape can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `text/plain; version=0.0.4` (the fast path).
    Text,
    /// `application/openmetrics-text; version=1.0.0`, ending in `# EOF`.
    OpenMetrics,
    /// Delimited `io.prometheus.client.MetricFamily` protobuf messages.
    Protobuf,
}

pub const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus::TEXT_FORMAT,
            Format::OpenMetrics => OPENMETRICS_FORMAT,
            Format::Protobuf => prometheus::PROTOBUF_FORMAT,
        }
    }
}

/// Pick the format from an `Accept` header the way Prometheus expects: the
/// supported media range with the highest q wins, ties go to the earlier
/// one; anything unsupported or absent gets the classic text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut proto = None;
        let mut encoding = None;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "proto" => proto = Some(v.to_string()),
                "encoding" => encoding = Some(v.to_string()),
                _ => {}
            }
        }
        let f = match media.as_str() {
            "application/openmetrics-text" => Format::OpenMetrics,
            "application/vnd.google.protobuf"
                if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                    && encoding.as_deref() == Some("delimited") =>
            {
                Format::Protobuf
            }
            "text/plain" | "*/*" | "text/*" => Format::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, f));
        }
    }
    best.map(|(_, f)| f).unwrap_or(Format::Text)
}

/// What a scrape produced, shared by every request it answers.
#[derive(Clone)]
pub enum Body {
    Chunks(Exposition),
    Bytes(Bytes),
}

/// A scrape request: the wanted format, and where to send the body (or
/// why the scrape failed).
pub struct ScrapeRequest {
    pub format: Format,
    /// collect[] / exclude[]: served from the same scrape, filtered.
    pub filter: Option<Arc<crate::metrics::filter::Filter>>,
    pub reply: oneshot::Sender<Result<Body, Arc<anyhow::Error>>>,
}

/// A JSON API request: the collector thread answers with the census it
/// took for it (or for the scrape it shared).
pub struct MapsRequest {
    pub reply: oneshot::Sender<Arc<crate::api::MapsData>>,
}

/// What the collector thread is asked for.
pub enum Job {
    Metrics(ScrapeRequest),
    Maps(MapsRequest),
}

/// A response body sent as a list of chunks (an exposition's families'
/// buffers, without joining them into one copy first).
pub struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        let chunks: std::collections::VecDeque<Bytes> = chunks.into_iter().collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Serving limits (`--web.*` flags).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 512,
        }
    }
}

#[derive(Clone)]
pub struct State {
    pub telemetry_path: String,
    pub scrapes: mpsc::Sender<Job>,
    pub healthy: Arc<AtomicBool>,
    pub web: Arc<crate::web::Web>,
    /// Collectors this exporter runs (what collect[] may name).
    pub enabled_collectors: Vec<&'static str>,
}

fn resp(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Chunks> {
    Response::builder()
        .status(code)
        .header(CONTENT_TYPE, ctype)
        .body(Chunks::new([body.into()]))
        .expect("static response parts are valid")
}

async fn scrape(
    st: &State,
    format: Format,
    filter: Option<Arc<crate::metrics::filter::Filter>>,
) -> Response<Chunks> {
    let (tx, rx) = oneshot::channel();
    let gone = || {
        resp(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "collector thread is gone\n",
        )
    };
    if st
        .scrapes
        .send(Job::Metrics(ScrapeRequest {
            format,
            filter,
            reply: tx,
        }))
        .await
        .is_err()
    {
        return gone();
    }
    match rx.await {
        Ok(Ok(body)) => {
            let chunks = match body {
                Body::Chunks(e) => Chunks::new(e.chunks().iter().cloned()),
                Body::Bytes(b) => Chunks::new([b]),
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, format.content_type())
                .body(chunks)
                .expect("static response parts are valid")
        }
        Ok(Err(e)) => resp(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("scrape failed: {e:#}\n"),
        ),
        Err(_) => gone(),
    }
}

/// `/api/v1/maps[/<id>]` (`rest`: the path after `/api/v1/maps`). HEAD
/// answers what GET would, without the body.
async fn api(st: &State, rest: &str, query: Option<&str>) -> Response<Chunks> {
    let json = |code: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(code)
            .header(CONTENT_TYPE, "application/json")
            .body(Chunks::new([Bytes::from(body)]))
            .expect("static response parts are valid")
    };
    let fail = |e: crate::api::ApiError| json(e.status, crate::api::error_body(&e));
    let q = match crate::api::parse(rest, query) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let gone = || crate::api::ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "collector thread is gone".into(),
    };
    let (tx, rx) = oneshot::channel();
    if st
        .scrapes
        .send(Job::Maps(MapsRequest { reply: tx }))
        .await
        .is_err()
    {
        return fail(gone());
    }
    let Ok(data) = rx.await else {
        return fail(gone());
    };
    // The document is built off the collector thread and off the reactor.
    let built = tokio::task::spawn_blocking(move || {
        crate::api::answer(&data, &q).map(|doc| {
            let mut v = serde_json::to_vec(&doc).expect("a JSON value serialises");
            v.push(b'\n');
            v
        })
    })
    .await;
    match built {
        Ok(Ok(body)) => json(StatusCode::OK, body),
        Ok(Err(e)) => fail(e),
        Err(e) => fail(crate::api::ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("building the document failed: {e}"),
        }),
    }
}

async fn route(st: &State, req: &Request<Incoming>) -> Response<Chunks> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = resp(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD are served\n",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = req.method() == Method::HEAD;
    let path = req.uri().path();
    if path == st.telemetry_path {
        let format = negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
        let filter = match crate::metrics::filter::Filter::from_query(
            req.uri().query(),
            &st.enabled_collectors,
        ) {
            Ok(f) => f.map(Arc::new),
            Err(e) => return resp(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        };
        if head {
            // HEAD answers without a census: the headers a GET would send,
            // minus the length nobody knows before scraping.
            return Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, format.content_type())
                .body(Chunks::new([]))
                .expect("static response parts are valid");
        }
        scrape(st, format, filter).await
    } else if let Some(rest) = path
        .strip_prefix("/api/v1/maps")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        api(st, rest, req.uri().query()).await
    } else if path == "/healthz" {
        if st.healthy.load(Ordering::Relaxed) {
            resp(StatusCode::OK, "text/plain", "ok\n")
        } else {
            resp(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "collector thread is not running\n",
            )
        }
    } else if path == "/" {
        let p = &st.telemetry_path;
        resp(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>bpfmap-exporter</title></head><body><h1>bpfmap-exporter {}</h1>\
                 <p>Prometheus exporter for BPF maps: census, holders, unexplained references, bpffs pins and map lifecycle.</p>\
                 <ul><li><a href=\"{p}\">{p}</a></li><li><a href=\"/api/v1/maps\">/api/v1/maps</a> (JSON: every map, its creator and holders)</li><li><a href=\"/healthz\">/healthz</a></li></ul></body></html>\n",
                env!("CARGO_PKG_VERSION")
            ),
        )
    } else {
        resp(StatusCode::NOT_FOUND, "text/plain", "not found\n")
    }
}

async fn handle(
    st: State,
    conn: Arc<ConnClock>,
    req: Request<Incoming>,
) -> Result<Response<Chunks>, Infallible> {
    conn.request_started();
    let web = st.web.current();
    let mut r = if web
        .auth
        .check(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
        .await
    {
        route(&st, &req).await
    } else {
        let mut r = resp(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic"),
        );
        r
    };
    for (k, v) in &web.settings.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    conn.request_done();
    Ok(r)
}

/// Per-connection timing shared by the handler and the connection's
/// reader: which deadline applies to the next read.
struct ConnClock {
    /// Milliseconds since `base` of the last request's end (or of accept).
    idle_since: AtomicU64,
    /// Requests started minus requests answered.
    in_flight: AtomicU64,
    /// Whether the next request is the first (its wait is a header wait).
    first: AtomicBool,
    /// Requests answered (a change tells the reader a new wait began).
    answered: AtomicU64,
    base: Instant,
}

impl ConnClock {
    fn new() -> ConnClock {
        ConnClock {
            idle_since: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            first: AtomicBool::new(true),
            answered: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }
    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first.store(false, Ordering::Release);
    }
    fn request_done(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        self.answered.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream whose reads fail with `TimedOut` once the deadline that applies
/// passes: header timeout from accept for the first request, idle timeout
/// from the last answer while nothing arrived, header timeout from the
/// first byte of a request whose header is incomplete. No deadline while a
/// request is being answered.
struct Deadlined<S> {
    inner: S,
    clock: Arc<ConnClock>,
    limits: Arc<Limits>,
    /// When the first byte since the last answer arrived (ms since base).
    first_byte: Option<u64>,
    seen_answered: u64,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Deadlined<S> {
    fn new(inner: S, clock: Arc<ConnClock>, limits: Arc<Limits>) -> Self {
        let d = limits.header_timeout;
        Deadlined {
            inner,
            clock,
            limits,
            first_byte: None,
            seen_answered: 0,
            sleep: Box::pin(tokio::time::sleep(d)),
        }
    }

    fn deadline_ms(&mut self) -> Option<u64> {
        let c = &self.clock;
        if c.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let answered = c.answered.load(Ordering::Acquire);
        if answered != self.seen_answered {
            self.seen_answered = answered;
            self.first_byte = None;
        }
        let idle_since = c.idle_since.load(Ordering::Acquire);
        let h = self.limits.header_timeout.as_millis() as u64;
        Some(if c.first.load(Ordering::Acquire) {
            h
        } else if let Some(t) = self.first_byte {
            t + h
        } else {
            idle_since + self.limits.idle_timeout.as_millis() as u64
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before && self.first_byte.is_none() {
                self.first_byte = Some(self.clock.now_ms());
            }
            return r;
        }
        if r.is_ready() {
            return r;
        }
        if let Some(ms) = self.deadline_ms() {
            let at = self.clock.base + Duration::from_millis(ms);
            if Instant::now() >= at {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
            let at = tokio::time::Instant::from_std(at);
            if self.sleep.deadline() != at {
                self.sleep.as_mut().reset(at);
            }
            if self.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One `--web.listen-address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `:PORT`: every IPv4 and IPv6 address, on one `[::]` socket with
    /// IPV6_V6ONLY off (whatever `net.ipv6.bindv6only` says); every IPv4
    /// address (`0.0.0.0`) when the host has IPv6 disabled.
    Any(u16),
    /// One address, as given or as a host name resolved to.
    Addr(SocketAddr),
}

/// Parse one `--web.listen-address`: `:port` (every IPv4 and IPv6 address),
/// `host:port`, `[v6]:port`. Host names resolve now; every address they
/// resolve to is bound.
pub fn parse_listen(s: &str) -> anyhow::Result<Vec<Listen>> {
    use std::net::ToSocketAddrs;
    let fix = || {
        format!(
            "--web.listen-address {s:?}: expected :PORT, HOST:PORT or [IPv6]:PORT, for example :{}",
            crate::cli::DEFAULT_PORT
        )
    };
    let bad_port = |port: &str| anyhow::anyhow!("{}: bad port {port:?}", fix());
    if let Some(port) = s.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| bad_port(port))?;
        return Ok(vec![Listen::Any(port)]);
    }
    let (_, port) = s.rsplit_once(':').ok_or_else(|| anyhow::anyhow!(fix()))?;
    port.parse::<u16>().map_err(|_| bad_port(port))?;
    let addrs: Vec<Listen> = s
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{}: {e}", fix()))?
        .map(Listen::Addr)
        .collect();
    if addrs.is_empty() {
        anyhow::bail!("{}: the host resolves to no address", fix());
    }
    Ok(addrs)
}

/// Bind every address now (before anything slow loads), so a busy port is
/// the first thing reported.
pub fn bind(addrs: &[Listen]) -> anyhow::Result<Vec<std::net::TcpListener>> {
    addrs
        .iter()
        .map(|l| {
            let l = match *l {
                Listen::Addr(addr) => {
                    std::net::TcpListener::bind(addr).map_err(|e| cannot_listen(addr, e))?
                }
                Listen::Any(port) => bind_any(port, bind_dual_stack)?,
            };
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .collect()
}

fn cannot_listen(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot listen on {addr}: {e}. Choose another with --web.listen-address=<host:port>"
    )
}

/// The listen backlog of `std::net::TcpListener::bind`, so every listener
/// queues the same number of connections.
const BACKLOG: i32 = 128;

/// `[::]:port` with IPV6_V6ONLY off: IPv4 clients arrive as
/// `::ffff:a.b.c.d`.
fn bind_dual_stack(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    // As std::net::TcpListener::bind does: a restart can bind the port
    // while connections of the previous process sit in TIME_WAIT.
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Whether an IPv6 socket failed because the host has IPv6 disabled: no
/// AF_INET6 at all (`ipv6.disable=1`), or no IPv6 address to bind.
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// `:port`: the dual-stack socket `dual` makes, or `0.0.0.0:port` (one info
/// line) when IPv6 is unavailable. Every other failure, a busy port
/// included, is an error: IPv4-only is never a silent substitute for a
/// dual-stack socket the host could have had.
fn bind_any(
    port: u16,
    dual: impl FnOnce(u16) -> std::io::Result<std::net::TcpListener>,
) -> anyhow::Result<std::net::TcpListener> {
    match dual(port) {
        Ok(l) => Ok(l),
        Err(e) if ipv6_unavailable(&e) => {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
            let l = std::net::TcpListener::bind(v4).map_err(|e| cannot_listen(v4, e))?;
            tracing::info!(
                listen = %format_args!(":{port}"), error = %e,
                "IPv6 is unavailable on this host; listening on {} (IPv4 only)",
                l.local_addr().unwrap_or(v4)
            );
            Ok(l)
        }
        Err(e) => Err(cannot_listen(
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            e,
        )),
    }
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
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff = Duration::ZERO;
                s
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
        let st = st.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let web = st.web.current();
            let clock = Arc::new(ConnClock::new());
            let io = Deadlined::new(stream, clock.clone(), limits.clone());
            match &web.acceptor {
                Some(acc) => {
                    match tokio::time::timeout(limits.header_timeout, acc.accept(io)).await {
                        Ok(Ok(tls)) => serve_conn(tls, st, clock).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => serve_conn(io, st, clock).await,
            }
        });
    }
}

async fn serve_conn<S>(io: S, st: State, clock: Arc<ConnClock>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceBuilder::new()
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .service(tower::service_fn(move |req| {
            handle(st.clone(), clock.clone(), req)
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
        )));
    }
    shutdown.await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_prometheus_accept_headers() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        // Prometheus 2.x default.
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::OpenMetrics
        );
        // Native histograms on: protobuf first.
        assert_eq!(
            negotiate(Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3")),
            Format::Protobuf
        );
        assert_eq!(
            negotiate(Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.3,application/openmetrics-text;q=0"
            )),
            Format::Text
        );
        assert_eq!(negotiate(Some("image/png")), Format::Text);
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(parse_listen(":9863").unwrap(), vec![Listen::Any(9863)]);
        assert_eq!(
            parse_listen("0.0.0.0:9863").unwrap(),
            vec![Listen::Addr("0.0.0.0:9863".parse().unwrap())]
        );
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            vec![Listen::Addr("127.0.0.1:1".parse().unwrap())]
        );
        assert_eq!(
            parse_listen("[::1]:2").unwrap(),
            vec![Listen::Addr("[::1]:2".parse().unwrap())]
        );
        assert!(parse_listen("localhost:3")
            .unwrap()
            .iter()
            .all(|a| matches!(a, Listen::Addr(a) if a.ip().is_loopback() && a.port() == 3)));
        for bad in ["9863", ":x", "host", ":99999", "no.such.host.invalid:1"] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(e.contains("--web.listen-address"), "{bad}: {e}");
        }
    }

    /// Whether the host has an IPv6 loopback address.
    fn host_has_ipv6_loopback() -> bool {
        std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("00000000000000000000000000000001 "))
        })
    }

    fn accept_from(l: &std::net::TcpListener, to: SocketAddr) -> SocketAddr {
        let _c = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        l.accept()
            .unwrap_or_else(|e| panic!("accept of {to}: {e}"))
            .1
    }

    #[test]
    fn any_port_serves_ipv4_and_ipv6_on_one_socket() {
        let ls = bind(&parse_listen(":0").unwrap()).unwrap();
        assert_eq!(ls.len(), 1);
        let l = &ls[0];
        l.set_nonblocking(false).unwrap();
        let port = l.local_addr().unwrap().port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        if !host_has_ipv6_loopback() {
            // Only the fallback can be checked on this host.
            assert_eq!(
                l.local_addr().unwrap(),
                SocketAddr::from(([0, 0, 0, 0], port)),
                "/proc/net/if_inet6 lists no ::1 (IPv6 disabled): :0 must fall back to 0.0.0.0"
            );
            assert_eq!(accept_from(l, v4).ip(), v4.ip());
            eprintln!("IPv6 leg not run: /proc/net/if_inet6 lists no ::1");
            return;
        }
        assert_eq!(
            l.local_addr().unwrap(),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            "/proc/net/if_inet6 lists ::1, so :0 must bind [::]"
        );
        assert!(!socket2::SockRef::from(l).only_v6().unwrap());
        let peer = accept_from(l, v4);
        assert_eq!(
            peer.ip(),
            "::ffff:127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "an IPv4 client of the dual-stack socket"
        );
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert_eq!(accept_from(l, v6).ip(), v6.ip());
    }

    #[test]
    fn any_port_that_is_busy_is_an_error_not_an_ipv4_fallback() {
        let v4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let e = bind(&[Listen::Any(port)]).unwrap_err().to_string();
        assert!(e.contains(&format!("cannot listen on [::]:{port}")), "{e}");
        assert!(e.contains("in use"), "{e}");
        // An explicit address keeps its meaning: another IPv4 port binds.
        let ls = bind(&[Listen::Addr("127.0.0.1:0".parse().unwrap())]).unwrap();
        assert!(ls[0].local_addr().unwrap().is_ipv4());
    }

    #[derive(Clone, Default)]
    struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `bind_any` with an IPv6 socket that fails with `errno`, and the log
    /// lines it wrote.
    fn bind_any_failing_v6(errno: i32) -> (anyhow::Result<std::net::TcpListener>, String) {
        let buf = LogBuf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let r = tracing::subscriber::with_default(sub, || {
            bind_any(0, |_| Err(std::io::Error::from_raw_os_error(errno)))
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (r, log)
    }

    #[test]
    fn any_port_falls_back_to_ipv4_only_when_ipv6_is_disabled() {
        for errno in [libc::EAFNOSUPPORT, libc::EADDRNOTAVAIL] {
            let (l, log) = bind_any_failing_v6(errno);
            let l = l.unwrap();
            let a = l.local_addr().unwrap();
            assert!(a.is_ipv4() && a.ip().is_unspecified(), "errno {errno}: {a}");
            assert_eq!(log.lines().count(), 1, "errno {errno}: {log}");
            assert!(
                log.contains("INFO") && log.contains(&format!("listening on {a} (IPv4 only)")),
                "errno {errno}: {log}"
            );
        }
        // Any other failure of the IPv6 socket is reported, not papered over.
        for errno in [libc::EACCES, libc::EADDRINUSE, libc::EMFILE] {
            let (l, log) = bind_any_failing_v6(errno);
            let e = l.unwrap_err().to_string();
            assert!(e.contains("cannot listen on [::]:0"), "errno {errno}: {e}");
            assert!(log.is_empty(), "errno {errno}: {log}");
        }
    }
}
