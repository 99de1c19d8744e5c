//! Lifecycle creation-burst benchmark (root): N map creations between two
//! scrapes, more than the 32,768-slot creation record ring holds, and
//! whether every creation and destruction is counted, attributed or lost:
//! `created + lost{event="created"}` and `destroyed + lost{event="destroyed"}`
//! against the truth (N), for maps held across a scrape (`held`) and for
//! maps created and closed between two scrapes (`churn`).
//!
//! Run with `./scripts/bench-lifecycle.sh burst [N]` (default 40000).
use std::time::{Duration, Instant};

use bpfmap_exporter::census::{Census, CensusOpts, Parts};
use bpfmap_exporter::collector::{Collector, ScrapeContext};
use bpfmap_exporter::lifecycle::{Lifecycle, LifecycleOpts};
use bpfmap_exporter::metrics::{encode_text, Families};
use libbpf_rs::{MapCore, MapHandle, MapType};

fn scrape(c: &mut Census, lc: &mut Lifecycle) -> String {
    let (snap, _) = c.take(&lc.own_map_ids());
    assert!(snap.maps_ok, "census failed");
    let mut f = Families::new();
    let ctx = ScrapeContext {
        census: Some(&snap),
        attributor: &bpfmap_exporter::k8s::NoAttribution,
    };
    lc.collect(&ctx, &mut f).expect("lifecycle collect");
    String::from_utf8(encode_text(&f.into_proto()).unwrap()).unwrap()
}

/// Sum of the samples of `name` whose labels include every pair of `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, v) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            want.iter()
                .all(|(k, val)| labels.contains(&format!("{k}=\"{val}\"")))
                .then(|| v.trim().parse::<f64>().unwrap())
        })
        .sum()
}

/// Create `n` array maps; each is pinned under `pin_dir` when given (held
/// past the fd limit), else closed at once.
fn create(n: usize, pin_dir: Option<std::path::PathBuf>) {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    for i in 0..n {
        let mut m = MapHandle::create(MapType::Array, Some("lcburst"), 4, 4, 1, &opts).unwrap();
        if let Some(d) = &pin_dir {
            m.pin(d.join(i.to_string())).unwrap();
        }
    }
}

/// A private bpffs on a temp dir, unmounted (every pin released) on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn new() -> Bpffs {
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t bpf");
        Bpffs(d)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Run `f` on a thread named `comm` (the comm the probes record).
fn as_comm<T: Send + 'static>(comm: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name(comm.into())
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

struct Row {
    mode: &'static str,
    created: f64,
    lost_created: f64,
    destroyed: f64,
    lost_destroyed: f64,
    unknown: f64,
    foreign_ids: i64,
}

fn run(mode: &'static str, n: usize) -> Row {
    let mut c = Census::load(CensusOpts {
        parts: Parts::from_fn(|p| p == "maps"),
        ..Default::default()
    })
    .expect("census loads");
    let mut lc = Lifecycle::load(LifecycleOpts::default()).expect("lifecycle loads");
    let comm = format!("lcburst_{mode}");
    let mark = || {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let m = MapHandle::create(MapType::Array, Some("lcmark"), 4, 4, 1, &opts).unwrap();
        let id = m.info().unwrap().info.id;
        (m, id)
    };
    // Markers around the burst: the ids between them are the burst's and
    // other processes' creations meanwhile.
    let (_m0, id0) = mark();
    let t0 = scrape(&mut c, &mut lc);
    let comm2 = comm.clone();
    if mode == "held" {
        let fs = Bpffs::new();
        let dir = fs.0.path().to_path_buf();
        as_comm(&comm, move || create(n, Some(dir)));
        scrape(&mut c, &mut lc); // sees them alive
        drop(fs);
    } else {
        as_comm(&comm, move || create(n, None));
    }
    let (_m1, id1) = mark();
    let get = |t: &str| {
        let created = value(t, "bpfmap_maps_created_total", &[("comm", &comm2)]);
        let destroyed = value(t, "bpfmap_maps_destroyed_total", &[("comm", &comm2)]);
        let lc_ = value(
            t,
            "bpfmap_lifecycle_events_lost_total",
            &[("event", "created")],
        );
        let ld = value(
            t,
            "bpfmap_lifecycle_events_lost_total",
            &[("event", "destroyed")],
        );
        let unknown = value(t, "bpfmap_maps_destroyed_total", &[("comm", "unknown")]);
        (created, destroyed, lc_, ld, unknown)
    };
    let b = get(&t0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut t;
    loop {
        t = scrape(&mut c, &mut lc);
        let a = get(&t);
        if a.1 - b.1 + a.3 - b.3 >= n as f64 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // One more scrape: nothing is counted twice.
    std::thread::sleep(Duration::from_millis(500));
    t = scrape(&mut c, &mut lc);
    let a = get(&t);
    Row {
        mode,
        created: a.0 - b.0,
        lost_created: a.2 - b.2,
        destroyed: a.1 - b.1,
        lost_destroyed: a.3 - b.3,
        unknown: a.4 - b.4,
        foreign_ids: id1 as i64 - id0 as i64 - 1 - n as i64,
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40_000);
    println!("{n} map creations between two scrapes (creation record ring: 32,768 slots)\n");
    println!("| mode | truth | created | lost (created) | created + lost | destroyed (attributed) | lost (destroyed) | destroyed + lost | destroyed as comm=\"unknown\" | other processes' map ids meanwhile |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mode in ["held", "churn"] {
        let r = run(mode, n);
        println!(
            "| {} | {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.created,
            r.lost_created,
            r.created + r.lost_created,
            r.destroyed,
            r.lost_destroyed,
            r.destroyed + r.lost_destroyed,
            r.unknown,
            r.foreign_ids
        );
    }
}
