//! HTTP: `/` landing page, `/healthz`, and the telemetry path. Scrapes are
//! handed to the collector thread, which owns every BPF object.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Exposition;

/// A scrape request: the reply is the rendered exposition.
pub type ScrapeRequest = oneshot::Sender<anyhow::Result<Exposition>>;

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
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[derive(Clone)]
pub struct State {
    pub telemetry_path: String,
    pub scrapes: mpsc::Sender<ScrapeRequest>,
    pub healthy: Arc<AtomicBool>,
}

fn resp(code: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Chunks> {
    Response::builder()
        .status(code)
        .header("content-type", ctype)
        .body(Chunks::new([body.into()]))
        .expect("static response parts are valid")
}

async fn handle(st: State, req: Request<Incoming>) -> Result<Response<Chunks>, Infallible> {
    let path = req.uri().path();
    Ok(if path == st.telemetry_path {
        let (tx, rx) = oneshot::channel();
        if st.scrapes.send(tx).await.is_err() {
            resp(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "collector thread is gone\n",
            )
        } else {
            match rx.await {
                Ok(Ok(body)) => Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", prometheus::TEXT_FORMAT)
                    .body(Chunks::new(body.chunks().iter().cloned()))
                    .expect("static response parts are valid"),
                Ok(Err(e)) => resp(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("scrape failed: {e:#}\n"),
                ),
                Err(_) => resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "collector thread is gone\n",
                ),
            }
        }
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
                 <ul><li><a href=\"{p}\">{p}</a></li><li><a href=\"/healthz\">/healthz</a></li></ul></body></html>\n",
                env!("CARGO_PKG_VERSION")
            ),
        )
    } else {
        resp(StatusCode::NOT_FOUND, "text/plain", "not found\n")
    })
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    st: State,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e}. Choose another with --web.listen-address=<host:port>"
        )
    })?;
    tracing::info!(%addr, path = %st.telemetry_path, "listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            acc = listener.accept() => {
                let (stream, _) = match acc {
                    Ok(v) => v,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
}
