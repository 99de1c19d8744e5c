//! The routes: `/`, `/healthz`, the telemetry path and `/api/v1/maps`, and
//! the chunked body every response is sent as.
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use super::conn::ConnClock;
use super::State;
use crate::exporter::{Body, Job, MapsRequest, ScrapeRequest};
use crate::exposition::{negotiate, Format};
use crate::web::auth::Verdict;

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

/// Which JSON API a request is for, parsed.
enum ApiQuery {
    Maps(crate::api::Query),
    Programs(crate::api::ProgramsQuery),
}

/// `/api/v1/maps[/<id>]` and `/api/v1/programs[/<id>]` (`rest`: the path
/// after the endpoint's prefix). HEAD answers what GET would, without the
/// body.
async fn api(st: &State, programs: bool, rest: &str, query: Option<&str>) -> Response<Chunks> {
    let json = |code: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(code)
            .header(CONTENT_TYPE, "application/json")
            .body(Chunks::new([Bytes::from(body)]))
            .expect("static response parts are valid")
    };
    let fail = |e: crate::api::ApiError| json(e.status, crate::api::error_body(&e));
    let parsed = if programs {
        crate::api::parse_programs(rest, query).map(ApiQuery::Programs)
    } else {
        crate::api::parse(rest, query).map(ApiQuery::Maps)
    };
    let q = match parsed {
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
        match &q {
            ApiQuery::Maps(q) => crate::api::answer(&data, q),
            ApiQuery::Programs(q) => crate::api::answer_programs(&data, q),
        }
        .map(|doc| {
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
        api(st, false, rest, req.uri().query()).await
    } else if let Some(rest) = path
        .strip_prefix("/api/v1/programs")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        api(st, true, rest, req.uri().query()).await
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

pub(super) async fn handle(
    st: State,
    conn: Arc<ConnClock>,
    req: Request<Incoming>,
) -> Result<Response<Chunks>, Infallible> {
    conn.request_started();
    let web = st.web.current();
    let verdict = web
        .auth
        .check(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()))
        .await;
    let mut r = match verdict {
        Verdict::Allowed => route(&st, &req).await,
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
