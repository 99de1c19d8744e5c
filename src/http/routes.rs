//! The routes: `/`, `/healthz`, the telemetry path and `/api/v1/maps`, and
//! the chunked body every response is sent as.
//!
//! Invariants: the JSON API answers network clients only when
//! authentication or TLS is configured or `--web.expose-api` is given
//! (loopback clients always); its documents are streamed, at most
//! [`MAX_STREAM`] bytes, by at most `--web.max-api-requests` workers.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::conn::ConnClock;
use super::gate::ApiGate;
use super::State;
use crate::exporter::{Body, Job, MapsRequest, ScrapeRequest};
use crate::exposition::{negotiate, Format};
use crate::web::auth::Verdict;

/// A response body sent as a list of chunks (an exposition's families'
/// buffers, without joining them into one copy first), then, for a
/// streamed body, the chunks a producer sends until it is done. A
/// producer's error ends the body with that error (the client sees a
/// truncated response, never a complete-looking one).
pub struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
    stream: Option<mpsc::Receiver<std::io::Result<Bytes>>>,
}

impl Chunks {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        let chunks: std::collections::VecDeque<Bytes> = chunks.into_iter().collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks {
            chunks,
            remaining,
            stream: None,
        }
    }

    fn streamed(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Chunks {
        Chunks {
            chunks: Default::default(),
            remaining: 0,
            stream: Some(rx),
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(c) = self.chunks.pop_front() {
            self.remaining -= c.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        let Some(rx) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map(Frame::data))),
            Poll::Ready(None) => {
                self.stream = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.stream.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.stream {
            None => http_body::SizeHint::with_exact(self.remaining),
            Some(_) => http_body::SizeHint::default(),
        }
    }
}

/// Bytes of a streamed chunk.
const CHUNK: usize = 64 << 10;
/// Chunks a producer may have sent ahead of the connection.
const AHEAD: usize = 2;
/// Bytes of any streamed body at most: past it the body ends with an
/// error (a listing ends cleanly well before, at `api::MAX_BODY`).
pub(super) const MAX_STREAM: usize = 2 * crate::api::MAX_BODY;

/// A blocking writer feeding a streamed body: at most [`AHEAD`] chunks of
/// [`CHUNK`] bytes wait for the connection; a closed connection fails the
/// next write (BrokenPipe), so the producer stops.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: usize,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(b)))
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.sent + self.buf.len() + data.len() > MAX_STREAM {
            return Err(std::io::Error::other(format!(
                "the response would pass {MAX_STREAM} bytes"
            )));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.sent += self.buf.len();
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sent += self.buf.len();
        self.send()
    }
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

/// `/api/v1/maps[/<id>]`, `/api/v1/programs[/<id>]` and
/// `/api/v1/links[/<id>]` (`rest`: the path
/// after the endpoint's prefix). A request holds one of the gate's slots
/// from before it asks for a census until its document is written (a slot
/// holds at most one census, shared by `Arc` with every other request it
/// serves, and one object's JSON). A census that started after the request
/// arrived answers it: the shared one when it does, else the next one the
/// collector thread takes, shared with every request waiting for it
/// (`exporter::serves`). HEAD answers what GET would, without the body.
async fn api(
    st: &State,
    gate: &ApiGate,
    endpoint: crate::api::Endpoint,
    req: &Request<Incoming>,
    rest: &str,
) -> Response<Chunks> {
    let head = req.method() == Method::HEAD;
    let query = req.uri().query();
    let json = |code: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(code)
            .header(CONTENT_TYPE, "application/json")
            .body(Chunks::new([Bytes::from(body)]))
            .expect("static response parts are valid")
    };
    let fail = |e: crate::api::ApiError| json(e.status, crate::api::error_body(&e));
    let q = match crate::api::Request::parse(endpoint, rest, query) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    // Arrived: from now on, only a census that starts later answers it.
    let pending = st.maps.arrive();
    let Some(slot) = gate.enter().await else {
        let mut r = fail(crate::api::ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "too many JSON API requests at once (--web.max-api-requests={}, and {} waiting); retry after {RETRY_AFTER_SECS} s",
                gate.slots, gate.max_waiting
            ),
        });
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        return r;
    };
    let gone = || crate::api::ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "collector thread is gone".into(),
    };
    let data = match pending.fresh() {
        Some(d) => d,
        None => {
            let (tx, rx) = oneshot::channel();
            if st
                .scrapes
                .send(Job::Maps(MapsRequest {
                    since: pending.since(),
                    reply: tx,
                }))
                .await
                .is_err()
            {
                return fail(gone());
            }
            match rx.await {
                Ok(Ok(data)) => data,
                Ok(Err(message)) => {
                    let mut r = fail(crate::api::ApiError {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: format!("{message} after {RETRY_AFTER_SECS} s"),
                    });
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                    return r;
                }
                Err(_) => return fail(gone()),
            }
        }
    };
    // It holds its census: it no longer keeps the shared one alive.
    drop(pending);
    // The document is written off the collector thread and off the
    // reactor, object by object into the body.
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let answer = match q.prepare(&data) {
            Ok(a) => a,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        // HEAD: the status and headers only; nothing is written.
        if head_tx.send(Ok(())).is_err() || head {
            return;
        }
        #[cfg(feature = "testing")]
        std::thread::sleep(test_write_delay());
        let mut w = ChannelWriter {
            tx: body_tx,
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
        };
        let r =
            crate::api::write(&data, &answer, &mut w).and_then(|()| std::io::Write::flush(&mut w));
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "JSON API response cut");
                let _ = w.tx.blocking_send(Err(e));
            }
        }
    });
    match head_rx.await {
        Ok(Ok(())) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "application/json")
            .body(Chunks::streamed(body_rx))
            .expect("static response parts are valid"),
        Ok(Err(e)) => fail(e),
        Err(_) => fail(crate::api::ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "building the document failed (the log names the cause)".into(),
        }),
    }
}

/// Tests only: how long a JSON API response holds its census, after its
/// headers, before its body is written (`BPFMAP_TEST_API_WRITE_DELAY_MS`),
/// so that tests can keep censuses alive.
#[cfg(feature = "testing")]
fn test_write_delay() -> std::time::Duration {
    static DELAY: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::time::Duration::from_millis(
            std::env::var("BPFMAP_TEST_API_WRITE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    })
}

/// Seconds a client told to come back (503) should wait.
const RETRY_AFTER_SECS: u64 = 2;

/// Whether this connection may reach the JSON API: from loopback always;
/// from the network when authentication or TLS is configured, or with
/// `--web.expose-api`.
fn api_allowed(st: &State, web: &crate::web::Loaded, peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
        || st.expose_api
        || web.acceptor.is_some()
        || !web.settings.users.is_empty()
}

/// The refusal of the JSON API to a network client by default.
const API_REFUSED: &str = "the JSON API (/api/v1/*) names this node's processes, fds, cgroups and pods, so by default it is served to loopback clients only: \
configure basic auth or TLS (--web.config.file) or start the exporter with --web.expose-api to serve it on the network; \
from the node itself use http://127.0.0.1:<port>, or kubectl port-forward\n";

async fn route(st: &State, cx: &ConnCtx, req: &Request<Incoming>) -> Response<Chunks> {
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
    } else if path.starts_with("/api/") && !api_allowed(st, &cx.web, cx.peer) {
        resp(StatusCode::FORBIDDEN, "text/plain", API_REFUSED)
    } else if let Some((e, rest)) = crate::api::Endpoint::ALL.iter().find_map(|&e| {
        path.strip_prefix(e.path())
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .map(|r| (e, r))
    }) {
        api(st, &cx.gate, e, req, rest).await
    } else if path == "/healthz" {
        match st.health.check() {
            Ok(()) => resp(StatusCode::OK, "text/plain", "ok\n"),
            Err(why) => resp(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        }
    } else if path == "/" {
        let p = &st.telemetry_path;
        resp(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>bpfmap-exporter</title></head><body><h1>bpfmap-exporter {}</h1>\
                 <p>Prometheus exporter for BPF maps: census, holders, unexplained references, bpffs pins and map lifecycle.</p>\
                 <ul><li><a href=\"{p}\">{p}</a></li><li><a href=\"/api/v1/maps\">/api/v1/maps</a> (JSON: every map, its creator, holders and roots)</li><li><a href=\"/api/v1/programs\">/api/v1/programs</a> (JSON: every program, its holders and roots)</li><li><a href=\"/healthz\">/healthz</a></li></ul></body></html>\n",
                env!("CARGO_PKG_VERSION")
            ),
        )
    } else {
        resp(StatusCode::NOT_FOUND, "text/plain", "not found\n")
    }
}

/// What a request's handler knows of its connection.
pub(super) struct ConnCtx {
    pub peer: SocketAddr,
    pub gate: Arc<ApiGate>,
    pub web: Arc<crate::web::Loaded>,
}

pub(super) async fn handle(
    st: State,
    conn: Arc<ConnClock>,
    peer: SocketAddr,
    gate: Arc<ApiGate>,
    req: Request<Incoming>,
) -> Result<Response<Chunks>, Infallible> {
    conn.request_started();
    let web = st.web.current();
    let cx = ConnCtx {
        peer,
        gate,
        web: web.clone(),
    };
    let verdict = web
        .auth
        .check(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
        .await;
    let mut r = match verdict {
        Verdict::Allowed => route(&st, &cx, &req).await,
        Verdict::Denied => {
            let mut r = resp(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic"),
            );
            r
        }
        Verdict::Busy => {
            let mut r = resp(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "password checks are busy; retry\n",
            );
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
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
