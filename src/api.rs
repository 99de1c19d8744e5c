//! `GET /api/v1/maps` and `GET /api/v1/maps/<id>`: the `explain` JSON
//! document (one schema, src/explain.rs) served from the running exporter.
//!
//! Invariants: a request shares the census with scrapes and with other API
//! requests (the collector thread answers it from the same single-flight
//! scrape, or from the shared census, see `exporter::ScrapeService` and
//! `exporter::SharedMaps`), and only from a census that started after it
//! arrived (`exporter::serves`); the document is built on a blocking worker,
//! never on the collector thread; a listing holds at most [`MAX_LIMIT`]
//! maps and every map at most [`LIST_MAX_HOLDERS`] identities per holder
//! kind (one map: [`ONE_MAX_HOLDERS`]) and at most [`MAX_BODY`] bytes of
//! maps, with `truncated` / `next_after` and `holders_omitted` saying what
//! was left out; the document is written map by map, never held whole; bad
//! input is a 400 naming the parameter, an unknown map a 404, both with a
//! JSON `{"error": ...}`. A pid that exists and holds nothing and a pid
//! that does not exist get the same answer.
use std::path::PathBuf;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use crate::census::Snapshot;
use crate::explain::{self, CreatorProcesses, Extras, Filter, Selector};
use crate::k8s::Attributor;

/// Maps per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
pub use crate::explain::MAX_LIMIT;
/// Identities per holder kind (and fd numbers per process) of each map in
/// a listing.
pub const LIST_MAX_HOLDERS: usize = 100;
/// The same bound for `/api/v1/maps/<id>`.
pub const ONE_MAX_HOLDERS: usize = 10_000;
/// Bytes of objects a listing holds at most (the page ends before the
/// object that would pass it, see [`write`]).
pub const MAX_BODY: usize = 16 << 20;
/// Longest query parameter value accepted.
const MAX_VALUE: usize = 4096;

/// What one census gives the API: the snapshot with holder identities.
pub struct MapsData {
    /// When the census began (no later than it read the kernel): the
    /// freshness of `exporter::serves`.
    pub started: std::time::Instant,
    pub snap: Snapshot,
    pub extras: Extras,
    /// Census collectors that failed in this scrape.
    pub failed: Vec<String>,
    /// The lifecycle collector's creators, or why there are none.
    pub processes: Result<CreatorProcesses, String>,
    pub attributor: Arc<dyn Attributor>,
    /// Dropped with this census: the collector thread's wake-up when an
    /// API census is freed (see `exporter::MAX_API_CENSUSES`).
    pub release: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Which maps a request selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    All,
    Id(u32),
    Name(String),
    Pin(PathBuf),
    Pid(u32),
}

/// A parsed API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub select: Select,
    pub filter: Filter,
}

/// An error answer: status and message (sent as `{"error": message}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

fn bad(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

fn not_found(message: String) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message,
    }
}

/// A client-supplied string quoted for a message, cut to a sane length.
fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad(format!("query {} is not UTF-8 once decoded", quoted(s))))
}

const PARAMS: &[&str] = &[
    "unexplained",
    "creator_gone",
    "name",
    "pin",
    "pid",
    "limit",
    "after",
];

fn flag(k: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(bad(format!(
            "parameter {k}: {} is not 1, true, 0 or false",
            quoted(v)
        ))),
    }
}

fn number<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, ApiError> {
    v.parse()
        .map_err(|_| bad(format!("parameter {k}: {} is not a number", quoted(v))))
}

/// An object id in a path: decimal digits only (`u32::from_str` would
/// also take a sign), within u32.
fn object_id(s: &str) -> Result<u32, ()> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    s.parse().map_err(|_| ())
}

/// Parse the part of the path after `/api/v1/maps` and the query string.
pub fn parse(rest: &str, query: Option<&str>) -> Result<Query, ApiError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if !PARAMS.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown parameter {} (known: {})",
                quoted(&k),
                PARAMS.join(", ")
            )));
        }
        if params.iter().any(|(q, _)| *q == k) {
            return Err(bad(format!("parameter {k} given twice")));
        }
        if v.len() > MAX_VALUE {
            return Err(bad(format!("parameter {k}: longer than {MAX_VALUE} bytes")));
        }
        params.push((k, v));
    }
    if let Some(id) = rest.strip_prefix('/').filter(|id| !id.is_empty()) {
        let id = object_id(id).map_err(|_| {
            bad(format!(
                "map id {} is not a number: decimal digits only (GET /api/v1/maps/<id>)",
                quoted(id)
            ))
        })?;
        if let Some((k, _)) = params.first() {
            return Err(bad(format!(
                "parameter {k} applies to /api/v1/maps, not to one map"
            )));
        }
        return Ok(Query {
            select: Select::Id(id),
            filter: Filter::default(),
        });
    }
    if !rest.is_empty() && rest != "/" {
        return Err(not_found(
            "no such endpoint (GET /api/v1/maps or /api/v1/maps/<id>)".into(),
        ));
    }
    let mut q = Query {
        select: Select::All,
        filter: Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        },
    };
    for (k, v) in &params {
        let sel = match k.as_str() {
            "unexplained" => {
                q.filter.unexplained = flag(k, v)?;
                None
            }
            "creator_gone" => {
                q.filter.creator_gone = flag(k, v)?;
                None
            }
            "limit" => {
                let n: usize = number(k, v)?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(bad(format!(
                        "parameter limit: {n} is outside 1..={MAX_LIMIT}"
                    )));
                }
                q.filter.limit = n;
                None
            }
            "after" => {
                q.filter.after = Some(number(k, v)?);
                None
            }
            "name" => Some(Select::Name(v.clone())),
            "pin" => Some(Select::Pin(PathBuf::from(v))),
            "pid" => Some(Select::Pid(number(k, v)?)),
            _ => unreachable!("checked against PARAMS"),
        };
        if let Some(sel) = sel {
            if q.select != Select::All {
                return Err(bad(
                    "choose at most one of the parameters name, pin and pid".into(),
                ));
            }
            q.select = sel;
        }
    }
    Ok(q)
}

/// What a request is answered with: the page of one census to write.
pub enum Answer {
    Maps { page: explain::Page, one: bool },
    Programs { page: explain::Page, one: bool },
    Links { page: explain::Page, one: bool },
}

/// The JSON API's endpoints, each under `/api/v1/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Maps,
    Programs,
    Links,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Maps, Endpoint::Programs, Endpoint::Links];

    /// The path of the listing.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Maps => "/api/v1/maps",
            Endpoint::Programs => "/api/v1/programs",
            Endpoint::Links => "/api/v1/links",
        }
    }

    /// One object of the endpoint, in messages.
    const fn noun(self) -> &'static str {
        match self {
            Endpoint::Maps => "map",
            Endpoint::Programs => "program",
            Endpoint::Links => "link",
        }
    }
}

/// A parsed request for one endpoint.
pub enum Request {
    Maps(Query),
    Programs(ProgramsQuery),
    Links(ProgramsQuery),
}

impl Request {
    /// Parse a request for endpoint `e`: `rest` is the path after it.
    pub fn parse(e: Endpoint, rest: &str, query: Option<&str>) -> Result<Request, ApiError> {
        match e {
            Endpoint::Maps => parse(rest, query).map(Request::Maps),
            Endpoint::Programs => parse_objects(e, rest, query).map(Request::Programs),
            Endpoint::Links => parse_objects(e, rest, query).map(Request::Links),
        }
    }

    /// The page to write from one census, or the error to answer.
    pub fn prepare(&self, data: &MapsData) -> Result<Answer, ApiError> {
        match self {
            Request::Maps(q) => prepare(data, q),
            Request::Programs(q) => prepare_programs(data, q),
            Request::Links(q) => prepare_links(data, q),
        }
    }
}

/// The page for `q` from one census, or the error to answer.
pub fn prepare(data: &MapsData, q: &Query) -> Result<Answer, ApiError> {
    let snap = &data.snap;
    if !snap.maps_ok {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: if data.failed.iter().any(|f| f == "maps") {
                "the map census failed in this scrape (bpfmap_scrape_collector_success{collector=\"maps\"} 0; the log names the cause)".into()
            } else {
                "the map census is off (--no-collector.maps): there is nothing to explain".into()
            },
        });
    }
    let ids = match &q.select {
        Select::All => snap.maps.iter().map(|m| m.id).collect(),
        Select::Id(id) => explain::select(snap, &Selector::Id(*id)).map_err(not_found)?,
        Select::Name(n) => snap
            .maps
            .iter()
            .filter(|m| &m.name == n)
            .map(|m| m.id)
            .collect(),
        Select::Pin(p) => explain::select(snap, &Selector::Pin(p.clone())).map_err(not_found)?,
        // A pid that holds nothing and one that does not exist get the
        // same answer: the census's holders, never /proc.
        Select::Pid(pid) => explain::select(snap, &Selector::Pid(*pid)).map_err(not_found)?,
    };
    Ok(Answer::Maps {
        page: explain::page(snap, &ids, &q.filter),
        one: matches!(q.select, Select::Id(_)),
    })
}

/// Write the document of `a` to `out`, object by object: a listing ends
/// (`truncated`, `next_after`) before the object that would take it past
/// [`MAX_BODY`] bytes. Nothing of the census is copied: one object's JSON
/// is held at a time.
pub fn write(data: &MapsData, a: &Answer, out: &mut impl std::io::Write) -> std::io::Result<()> {
    match a {
        Answer::Maps { page, one } => with_input(data, *one, |inp| {
            explain::write_report(inp, page, MAX_BODY, out)
        }),
        Answer::Programs { page, one } => with_input(data, *one, |inp| {
            explain::write_program_report(inp, page, MAX_BODY, out)
        }),
        Answer::Links { page, one } => with_input(data, *one, |inp| {
            explain::write_link_report(inp, page, MAX_BODY, out)
        }),
    }
}

/// Run `f` on the explain input of one census: identities bounded for one
/// object (`one`) or for a listing.
fn with_input<T>(data: &MapsData, one: bool, f: impl FnOnce(&explain::Input<'_>) -> T) -> T {
    let attr = data.attributor.clone();
    let attribution = move |tgid: u32, cg: u64| {
        let i = attr.identify(tgid, cg);
        (i.container_id, i.pod_uid)
    };
    let inp = explain::Input {
        snap: &data.snap,
        extras: &data.extras,
        attribution: &attribution,
        failed: &data.failed,
        processes: data.processes.as_ref().map_err(|s| s.as_str()),
        now_unix: explain::now_unix(),
        max_holders: if one {
            ONE_MAX_HOLDERS
        } else {
            LIST_MAX_HOLDERS
        },
    };
    f(&inp)
}

/// A parsed `/api/v1/programs[/<id>]` or `/api/v1/links[/<id>]` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramsQuery {
    /// One program, or a listing.
    pub id: Option<u32>,
    pub after: Option<u32>,
    pub limit: usize,
}

/// Parse the part of the path after `/api/v1/programs` and the query string.
#[cfg(any(test, feature = "testing"))]
pub fn parse_programs(rest: &str, query: Option<&str>) -> Result<ProgramsQuery, ApiError> {
    parse_objects(Endpoint::Programs, rest, query)
}

/// Parse the part of the path after endpoint `e` (programs or links) and
/// the query string.
fn parse_objects(e: Endpoint, rest: &str, query: Option<&str>) -> Result<ProgramsQuery, ApiError> {
    let (path, noun) = (e.path(), e.noun());
    let mut q = ProgramsQuery {
        id: None,
        after: None,
        limit: DEFAULT_LIMIT,
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if seen.contains(&k) {
            return Err(bad(format!("parameter {k} given twice")));
        }
        if v.len() > MAX_VALUE {
            return Err(bad(format!("parameter {k}: longer than {MAX_VALUE} bytes")));
        }
        match k.as_str() {
            "limit" => {
                let n: usize = number(&k, &v)?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(bad(format!(
                        "parameter limit: {n} is outside 1..={MAX_LIMIT}"
                    )));
                }
                q.limit = n;
            }
            "after" => q.after = Some(number(&k, &v)?),
            _ => {
                return Err(bad(format!(
                    "unknown parameter {} (known: limit, after)",
                    quoted(&k)
                )))
            }
        }
        seen.push(k);
    }
    if let Some(id) = rest.strip_prefix('/').filter(|id| !id.is_empty()) {
        let id = object_id(id).map_err(|_| {
            bad(format!(
                "{noun} id {} is not a number: decimal digits only (GET {path}/<id>)",
                quoted(id)
            ))
        })?;
        if let Some(k) = seen.first() {
            return Err(bad(format!(
                "parameter {k} applies to {path}, not to one {noun}"
            )));
        }
        q.id = Some(id);
    } else if !rest.is_empty() && rest != "/" {
        return Err(not_found(format!(
            "no such endpoint (GET {path} or {path}/<id>)"
        )));
    }
    Ok(q)
}

/// The links page for `q` from one census, or the error to answer.
pub fn prepare_links(data: &MapsData, q: &ProgramsQuery) -> Result<Answer, ApiError> {
    let snap = &data.snap;
    if !snap.maps_ok || snap.links.is_none() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the link census did not run in this scrape (--no-collector.links, or bpfmap_scrape_collector_success{collector=\"links\"} 0: the log names the cause)".into(),
        });
    }
    let ids: Vec<u32> = match q.id {
        Some(id) => explain::select_link(snap, id).map_err(not_found)?,
        None => snap.links.iter().flatten().map(|l| l.id).collect(),
    };
    Ok(Answer::Links {
        page: explain::page_links(&ids, q.after, q.limit),
        one: q.id.is_some(),
    })
}

/// The programs page for `q` from one census, or the error to answer.
pub fn prepare_programs(data: &MapsData, q: &ProgramsQuery) -> Result<Answer, ApiError> {
    let snap = &data.snap;
    if !snap.maps_ok || snap.programs.is_none() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the program census did not run in this scrape (--no-collector.programs, or bpfmap_scrape_collector_success{collector=\"programs\"} 0: the log names the cause)".into(),
        });
    }
    let ids: Vec<u32> = match q.id {
        Some(id) => explain::select_program(snap, id).map_err(not_found)?,
        None => snap.programs.iter().flatten().map(|p| p.id).collect(),
    };
    Ok(Answer::Programs {
        page: explain::page_programs(&ids, q.after, q.limit),
        one: q.id.is_some(),
    })
}

/// The JSON body of an error.
pub fn error_body(e: &ApiError) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({"error": e.message})).expect("a string serialises");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rest: &str, q: &str) -> Query {
        parse(rest, Some(q)).unwrap()
    }

    fn err(rest: &str, q: &str) -> ApiError {
        parse(rest, Some(q)).unwrap_err()
    }

    #[test]
    fn listing_parameters_parse_with_defaults_and_bounds() {
        let q = ok("", "");
        assert_eq!(q.select, Select::All);
        assert_eq!(q.filter.limit, DEFAULT_LIMIT);
        assert!(!q.filter.unexplained && !q.filter.creator_gone);
        let q = ok("", "unexplained=1&creator_gone=true&limit=7&after=42");
        assert!(q.filter.unexplained && q.filter.creator_gone);
        assert_eq!((q.filter.limit, q.filter.after), (7, Some(42)));
        assert_eq!(
            ok("", "name=cilium_ct4+x%2Fy").select,
            Select::Name("cilium_ct4 x/y".into())
        );
        assert_eq!(
            ok("", "pin=%2Fsys%2Ffs%2Fbpf%2Fa").select,
            Select::Pin("/sys/fs/bpf/a".into())
        );
        assert_eq!(ok("", "pid=4242").select, Select::Pid(4242));
        assert_eq!(ok("/17", "").select, Select::Id(17));
        // A trailing slash is the listing.
        assert_eq!(ok("/", "limit=3").select, Select::All);
        assert_eq!(ok("/", "limit=3").filter.limit, 3);
        assert_eq!(
            ok("", &format!("limit={MAX_LIMIT}")).filter.limit,
            MAX_LIMIT
        );
    }

    #[test]
    fn program_queries_parse_with_bounds_and_clear_errors() {
        let q = parse_programs("", None).unwrap();
        assert_eq!((q.id, q.after, q.limit), (None, None, DEFAULT_LIMIT));
        let q = parse_programs("", Some("limit=5&after=9")).unwrap();
        assert_eq!((q.id, q.after, q.limit), (None, Some(9), 5));
        assert_eq!(parse_programs("/42", None).unwrap().id, Some(42));
        assert_eq!(parse_programs("/", None).unwrap().id, None);
        for (rest, q, want) in [
            ("", "limit=0", "outside 1..=1000"),
            (
                "",
                "pid=1",
                "unknown parameter \"pid\" (known: limit, after)",
            ),
            ("", "after=1&after=2", "after given twice"),
            ("/x", "", "program id \"x\" is not a number"),
            (
                "/+7",
                "",
                "program id \"+7\" is not a number: decimal digits only",
            ),
            (
                "/4",
                "limit=3",
                "applies to /api/v1/programs, not to one program",
            ),
        ] {
            let e = parse_programs(rest, Some(q)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{rest}?{q}");
            assert!(e.message.contains(want), "{rest}?{q}: {}", e.message);
        }
        assert_eq!(
            parse_programs("x", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn bad_parameters_are_400s_naming_the_parameter() {
        for (rest, q, want) in [
            ("", "limit=0", "parameter limit"),
            ("", "limit=1001", "outside 1..=1000"),
            ("", "limit=x", "parameter limit: \"x\" is not a number"),
            ("", "after=-1", "parameter after"),
            ("", "pid=abc", "parameter pid"),
            ("", "unexplained=yes", "parameter unexplained"),
            ("", "creator_gone=2", "parameter creator_gone"),
            ("", "bogus=1", "unknown parameter \"bogus\""),
            ("", "limit=1&limit=2", "limit given twice"),
            ("", "name=a&pid=1", "at most one of"),
            ("", "name=%ff", "not UTF-8"),
            ("/abc", "", "map id \"abc\" is not a number"),
            (
                "/+1",
                "",
                "map id \"+1\" is not a number: decimal digits only",
            ),
            ("/-1", "", "decimal digits only"),
            ("/ 1", "", "decimal digits only"),
            ("/4294967296", "", "is not a number"),
            ("/4", "limit=3", "parameter limit applies to /api/v1/maps"),
        ] {
            let e = err(rest, q);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{rest}?{q}");
            assert!(e.message.contains(want), "{rest}?{q}: {}", e.message);
        }
        let long = format!("name={}", "a".repeat(MAX_VALUE + 1));
        assert!(err("", &long).message.contains("longer than"));
        // A long unknown name is cut in the message.
        let e = err("", &format!("{}=1", "k".repeat(500)));
        assert!(e.message.len() < 200, "{}", e.message);
        assert_eq!(err("x", "").status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn errors_are_json() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&bad("parameter \"x\"".into()))).unwrap();
        assert_eq!(v["error"], json!("parameter \"x\""));
    }
}
