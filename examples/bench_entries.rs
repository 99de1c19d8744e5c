//! Element-count benchmark: the census of N live maps (half hash maps with
//! K elements each, half arrays) taken in one process without counting
//! (the baseline), with the default method (the kfunc where the kernel has
//! it, walks elsewhere) and with walks forced, each within the default
//! budget and without a budget; then one hash map of M elements walked by
//! each method. Every configuration runs on the same maps in the same run.
//! Run as root: `./scripts/bench-entries.sh` (or under the kernel VM, see
//! BENCHMARKS.md).
//!
//! Usage: bench_entries [maps N] [fill K] [big M] [out FILE]
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bpfmap_exporter::census::entries::{Budget, Choice, Method, State};
use bpfmap_exporter::census::{Census, CensusOpts, Parts};
use libbpf_rs::{MapCore, MapHandle, MapType};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{fill_batch as fill, unlimit_memlock};

const WARM: usize = 11;

fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    // Raising the hard limit needs CAP_SYS_RESOURCE (root in the guests).
    lim.rlim_max = lim.rlim_max.max(n);
    lim.rlim_cur = n;
    // SAFETY: as above.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "raising RLIMIT_NOFILE to {n}");
}

fn create(t: MapType, name: &str, max: u32) -> MapHandle {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    MapHandle::create(t, Some(name), 4, 8, max, &opts).expect("create map")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    config: String,
    first_ms: f64,
    census_ms: f64,
    entries_ms: f64,
    max_spent_ms: f64,
    budget_ms: f64,
    /// The most any warm scrape's counting (all of it, walks and the rest)
    /// passed that scrape's budget, and how far the first scrape's did.
    worst_over_ms: f64,
    first_over_ms: f64,
    /// The most any warm scrape's walks alone passed its budget, and how
    /// far the first scrape's did.
    worst_walks_over_ms: f64,
    first_walks_over_ms: f64,
    /// Maps counted afresh per warm scrape (median).
    fresh: f64,
    methods: String,
    scrapes_to_all: String,
}

fn run(name: &str, parts: Parts, choice: Choice, budget: Budget, ours: &[u32]) -> Row {
    let mut c = Census::load(CensusOpts {
        parts,
        entries_method: choice,
        entries_budget: budget,
        confirm_delay: Duration::ZERO,
        ..Default::default()
    })
    .expect("census loads");
    let t = Instant::now();
    let (s, r) = c.take(&[]);
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    // All of counting (walks, planning, the cache, publishing): what the
    // budget bounds.
    let counting = |r: &bpfmap_exporter::registry::Report| {
        r.outcomes
            .iter()
            .find(|o| o.name == "entries")
            .map(|o| o.seconds)
            .unwrap_or(0.0)
    };
    let missing = |s: &bpfmap_exporter::census::Snapshot| {
        ours.iter()
            .filter(|id| s.entries.get(id).is_none_or(|i| i.state == State::Missing))
            .count()
    };
    let mut all = if missing(&s) == 0 { Some(1) } else { None };
    let mut census = Vec::new();
    let mut entries = Vec::new();
    let over = |x: &bpfmap_exporter::census::entries::Summary, took: f64| {
        (took - x.budget.as_secs_f64()) * 1e3
    };
    let mut max_spent: f64 = s
        .entries_summary
        .as_ref()
        .map(|x| x.spent.as_secs_f64())
        .unwrap_or(0.0);
    let first_over = s
        .entries_summary
        .as_ref()
        .map(|x| over(x, counting(&r)))
        .unwrap_or(0.0);
    let first_walks_over = s
        .entries_summary
        .as_ref()
        .map(|x| over(x, x.spent.as_secs_f64()))
        .unwrap_or(0.0);
    // A maximum over no scrape reads 0.
    let seen = |max: f64| if max == f64::MIN { 0.0 } else { max };
    let mut worst_over = f64::MIN;
    let mut worst_walks_over = f64::MIN;
    let mut budgets = Vec::new();
    let mut fresh = Vec::new();
    let mut methods = String::new();
    for i in 0..WARM {
        let t = Instant::now();
        let (s, r) = c.take(&[]);
        census.push(t.elapsed().as_secs_f64() * 1e3);
        let took = counting(&r);
        entries.push(took * 1e3);
        if let Some(x) = &s.entries_summary {
            max_spent = max_spent.max(x.spent.as_secs_f64());
            worst_over = worst_over.max(over(x, took));
            worst_walks_over = worst_walks_over.max(over(x, x.spent.as_secs_f64()));
            budgets.push(x.budget.as_secs_f64() * 1e3);
            fresh.push(
                x.maps
                    .iter()
                    .filter(|((_, st), _)| *st == State::Fresh)
                    .map(|(_, n)| *n as f64)
                    .sum(),
            );
            methods = x
                .maps
                .iter()
                .map(|((m, st), n)| format!("{}/{} {n}", m.as_str(), st.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
        }
        if all.is_none() && missing(&s) == 0 {
            all = Some(i + 2);
        }
    }
    Row {
        config: name.into(),
        first_ms,
        census_ms: median(census),
        entries_ms: median(entries),
        max_spent_ms: max_spent * 1e3,
        budget_ms: if budgets.is_empty() {
            0.0
        } else {
            median(budgets)
        },
        worst_over_ms: seen(worst_over),
        first_over_ms: first_over,
        first_walks_over_ms: first_walks_over,
        worst_walks_over_ms: seen(worst_walks_over),
        fresh: if fresh.is_empty() { 0.0 } else { median(fresh) },
        methods,
        scrapes_to_all: all
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("> {}", WARM + 1)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str, d: u32| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("number"))
            .unwrap_or(d)
    };
    let n = arg("maps", 10_000);
    let k = arg("fill", 64);
    let big = arg("big", 1_000_000);
    let out = args
        .iter()
        .position(|a| a == "out")
        .and_then(|i| args.get(i + 1))
        .cloned();
    raise_nofile(n as u64 + 2048);
    unlimit_memlock();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut report = format!(
        "kernel {}, {} cpus, {n} maps ({} hash of max_entries 1024 with {k} elements, {} arrays), load {}\n\n",
        release.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        n / 2,
        n - n / 2,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    let t = Instant::now();
    let mut maps = Vec::with_capacity(n as usize);
    let mut ours = Vec::new();
    for i in 0..n {
        if i % 2 == 0 {
            let m = create(MapType::Hash, "bench_h", 1024);
            fill(&m, k);
            ours.push(m.info().unwrap().info.id);
            maps.push(m);
        } else {
            maps.push(create(MapType::Array, "bench_a", 1024));
        }
    }
    eprintln!("created {n} maps in {:.1} s", t.elapsed().as_secs_f64());
    let default_budget = bpfmap_exporter::census::entries::DEFAULT_BUDGET;
    let fixed = Budget::Time(Duration::from_millis(50));
    let unbounded = Budget::Time(Duration::from_secs(60));
    let rows = vec![
        run(
            "no counting (--no-collector.entries)",
            Parts::without(&["entries"]),
            Choice::Auto,
            default_budget,
            &[],
        ),
        run(
            &format!("default (method auto, budget {default_budget})"),
            Parts::all(),
            Choice::Auto,
            default_budget,
            &ours,
        ),
        run(
            &format!("method iterate, budget {default_budget}"),
            Parts::all(),
            Choice::Iterate,
            default_budget,
            &ours,
        ),
        run(
            &format!("method iterate, budget {fixed}"),
            Parts::all(),
            Choice::Iterate,
            fixed,
            &ours,
        ),
        run(
            "method iterate, no budget (60s)",
            Parts::all(),
            Choice::Iterate,
            unbounded,
            &ours,
        ),
    ];
    let base = rows[0].census_ms;
    report.push_str("| configuration | first census ms | census ms (median of 11) | vs no counting | entries part ms (median) | entries part / census without counting | budget ms (median) | max walk time of any scrape ms | most a warm scrape's walks passed its budget ms | first scrape's walks passed its budget ms | most a warm scrape's counting passed its budget ms | first scrape's counting passed its budget ms | maps counted afresh per scrape (median) | counts (method/state maps) | scrapes until every hash map is counted |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        report.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:+.0}% | {:.1} | {:.0}% | {:.1} | {:.1} | {:+.2} | {:+.2} | {:+.2} | {:+.2} | {:.0} | {} | {} |\n",
            r.config,
            r.first_ms,
            r.census_ms,
            (r.census_ms / base - 1.0) * 100.0,
            r.entries_ms,
            r.entries_ms / base * 100.0,
            r.budget_ms,
            r.max_spent_ms,
            r.worst_walks_over_ms,
            r.first_walks_over_ms,
            r.worst_over_ms,
            r.first_over_ms,
            r.fresh,
            r.methods,
            r.scrapes_to_all
        ));
    }
    drop(maps);

    // One big hash map, counted by each method.
    let t = Instant::now();
    let m = create(MapType::Hash, "bench_big", big);
    fill(&m, big);
    let id = m.info().unwrap().info.id;
    eprintln!(
        "filled a {big}-element hash map in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    report.push_str(&format!(
        "\nOne hash map of {big} elements (max_entries {big}):\n\n| method | ms (median of 5) | count |\n|---|---|---|\n"
    ));
    for (name, choice) in [("auto", Choice::Auto), ("iterate", Choice::Iterate)] {
        let mut c = Census::load(CensusOpts {
            parts: Parts::from_fn(|p| p == "maps" || p == "entries"),
            entries_method: choice,
            entries_budget: unbounded,
            confirm_delay: Duration::ZERO,
            ..Default::default()
        })
        .expect("census loads");
        let mut times = Vec::new();
        let mut got = (None, None);
        for _ in 0..5 {
            let t = Instant::now();
            let (s, _) = c.take(&[]);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let rec = s.maps.iter().find(|r| r.id == id).unwrap();
            got = (rec.elem_count, s.entries.get(&id).map(|i| i.method));
        }
        let method = got.1.map(Method::as_str).unwrap_or("none");
        report.push_str(&format!(
            "| {name}: {method} (whole census of the node) | {:.1} | {:?} |\n",
            median(times),
            got.0
        ));
    }
    let mut times = Vec::new();
    let mut count = None;
    for _ in 0..5 {
        let t = Instant::now();
        let far = Instant::now() + Duration::from_secs(3600);
        count = match bpfmap_exporter::sys::count_keys(m.as_fd(), 4, u64::MAX, far).unwrap() {
            bpfmap_exporter::sys::KeyWalk::Done(n) => Some(n),
            _ => None,
        };
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report.push_str(&format!(
        "| next_key: BPF_MAP_GET_NEXT_KEY walk alone | {:.1} | {count:?} |\n",
        median(times)
    ));
    print!("{report}");
    if let Some(p) = out {
        std::fs::write(p, &report).unwrap();
    }
}
