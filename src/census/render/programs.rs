//! The program families: aggregates by type (always exact, never capped),
//! the exporter's own programs, the holder sources' completeness, and
//! per-program series for the programs that matter under the budget.
use std::collections::BTreeMap;

use super::RenderOpts;
use crate::census::loaders::verdict;
use crate::census::names::prog_type_label;
use crate::census::programs::ProgHolders;
use crate::census::{ProgRecord, Snapshot};
use crate::metrics::{defs, Families};

/// Per-program series for at most this many programs under the budget,
/// most important first: at 8 series per program, 50 programs stay near
/// 400 series.
pub const DEFAULT_MAX_PROGRAM_SERIES: usize = 50;
/// The largest programs by memory are selected whatever else holds.
pub const TOP_PROGRAMS_BY_MEMORY: usize = 10;

/// Why a program keeps its per-program series, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Keep {
    /// Orphaned: its loader's cgroup is gone and only pins keep it.
    Orphaned,
    /// Some of its references nothing explains.
    Unexplained,
    /// Held by pins and no file, link or tail-call slot (a stale pin
    /// candidate, unless an attachment keeps it working).
    PinsOnly,
    /// Among the largest by memory.
    TopMemory,
    /// Every program is (`all_maps`).
    Any,
}

/// The programs with per-program series (indices into `progs`, in program
/// order) and how many were left out as (budget, cap).
fn select(
    progs: &[ProgRecord],
    holders: &crate::census::ById<ProgHolders>,
    orphaned: &rustc_hash::FxHashSet<u32>,
    opts: &RenderOpts,
) -> (Vec<usize>, usize, usize) {
    let mut keep: Vec<(Keep, u64, usize)> = Vec::new();
    let mut by_memory: Vec<usize> = (0..progs.len()).collect();
    by_memory.sort_by_key(|&i| (std::cmp::Reverse(progs[i].memlock), progs[i].id));
    let top: std::collections::HashSet<usize> =
        by_memory.into_iter().take(TOP_PROGRAMS_BY_MEMORY).collect();
    for (i, p) in progs.iter().enumerate() {
        let h = holders.get(&p.id);
        let why = if orphaned.contains(&p.id) {
            Some(Keep::Orphaned)
        } else if h.and_then(|h| h.unexplained(p.refcnt)).unwrap_or(0) > 0 {
            Some(Keep::Unexplained)
        } else if h.is_some_and(|h| h.pins_only()) {
            Some(Keep::PinsOnly)
        } else if top.contains(&i) {
            Some(Keep::TopMemory)
        } else if opts.all_maps {
            Some(Keep::Any)
        } else {
            None
        };
        if let Some(k) = why {
            keep.push((k, u64::MAX - p.memlock, i));
        }
    }
    let omitted_budget = progs.len() - keep.len();
    let cap = if opts.all_maps {
        usize::MAX
    } else {
        DEFAULT_MAX_PROGRAM_SERIES
    };
    // Orphans keep their series whatever the cap (an orphan alert joins
    // on them), as orphaned maps do.
    let (orphans, mut keep): (Vec<_>, Vec<_>) = keep
        .into_iter()
        .partition(|&(_, _, i)| orphaned.contains(&progs[i].id));
    let cap = cap.saturating_sub(orphans.len());
    keep.sort_unstable();
    let omitted_cap = keep.len().saturating_sub(cap);
    keep.truncate(cap);
    let mut sel: Vec<usize> = keep.into_iter().chain(orphans).map(|(_, _, i)| i).collect();
    sel.sort_unstable();
    (sel, omitted_budget, omitted_cap)
}

pub(crate) fn render_programs(snap: &Snapshot, opts: &RenderOpts, out: &mut Families) {
    let Some(progs) = &snap.programs else {
        return;
    };
    let mut by_type: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in progs {
        let e = by_type
            .entry(prog_type_label(p.prog_type).into_owned())
            .or_default();
        e.0 += 1;
        e.1 += p.memlock;
    }
    for (t, (n, bytes)) in &by_type {
        out.gauge(&defs::PROGRAMS, vec![("prog_type", t.clone())], *n as f64);
        out.gauge(
            &defs::PROGRAMS_MEMORY_BYTES,
            vec![("prog_type", t.clone())],
            *bytes as f64,
        );
    }
    out.gauge(
        &defs::EXPORTER_PROGRAMS,
        vec![],
        snap.own_programs.len() as f64,
    );
    for (source, complete) in &snap.prog_sources {
        out.gauge(
            &defs::PROGRAM_HOLDER_SOURCE_COMPLETE,
            vec![("source", source.to_string())],
            *complete as u8 as f64,
        );
    }
    let withheld = progs
        .iter()
        .filter(|p| {
            snap.prog_holders
                .get(&p.id)
                .is_none_or(|h| h.unexplained(p.refcnt).is_none())
        })
        .count();
    out.gauge(
        &defs::PROGRAMS_UNEXPLAINED_WITHHELD,
        vec![],
        withheld as f64,
    );
    let (sel, budget, cap) = if opts.per_map {
        select(progs, &snap.prog_holders, &snap.prog_orphans.orphaned, opts)
    } else {
        (Vec::new(), 0, 0)
    };
    let disabled = if opts.per_map { 0 } else { progs.len() };
    for (reason, n) in [("budget", budget), ("cap", cap), ("disabled", disabled)] {
        out.gauge(
            &defs::PROGRAM_SERIES_OMITTED,
            vec![("reason", reason.to_string())],
            n as f64,
        );
    }
    render_orphans(snap, progs, out);
    render_loaders(snap, progs, &sel, out);
    for i in sel {
        let p = &progs[i];
        let id = || vec![("id", p.id.to_string())];
        out.gauge(
            &defs::PROGRAM_INFO,
            vec![
                ("id", p.id.to_string()),
                ("name", p.name.clone()),
                ("prog_type", prog_type_label(p.prog_type).into_owned()),
                ("tag", p.tag_hex()),
            ],
            1.0,
        );
        out.gauge(&defs::PROGRAM_REFCOUNT, id(), p.refcnt as f64);
        out.gauge(&defs::PROGRAM_MEMORY_BYTES, id(), p.memlock as f64);
        out.gauge(&defs::PROGRAM_MAPS, id(), p.used_map_cnt as f64);
        if let Some(boot) = snap.boot_unix {
            out.gauge(
                &defs::PROGRAM_LOAD_TIME_SECONDS,
                id(),
                (boot + p.load_time_ns as f64 / 1e9).floor(),
            );
        }
        if let Some(h) = snap.prog_holders.get(&p.id) {
            for (kind, n) in h.iter() {
                if let Some(n) = n.filter(|&n| n > 0) {
                    out.gauge(
                        &defs::PROGRAM_HOLDERS,
                        vec![("id", p.id.to_string()), ("kind", kind.label().to_string())],
                        n as f64,
                    );
                }
            }
            if let Some(u) = h.unexplained(p.refcnt) {
                out.gauge(&defs::PROGRAM_UNEXPLAINED_REFS, id(), u as f64);
            }
        }
    }
}

/// Orphaned programs: node totals, per loading container and pod, and the
/// verdicts withheld by reason (all exact).
fn render_orphans(snap: &Snapshot, progs: &[ProgRecord], out: &mut Families) {
    let o = &snap.prog_orphans;
    let mut bytes = 0u64;
    let mut by_loader: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for p in progs.iter().filter(|p| o.orphaned.contains(&p.id)) {
        bytes += p.memlock;
        let who = snap
            .prog_loaders
            .get(&p.id)
            .and_then(|l| l.known())
            .map_or(("", ""), |l| (l.container_id.as_str(), l.pod_uid.as_str()));
        let e = by_loader.entry(who).or_default();
        e.0 += 1;
        e.1 += p.memlock;
    }
    out.gauge(&defs::PROGRAMS_ORPHANED, vec![], o.orphaned.len() as f64);
    out.gauge(&defs::PROGRAMS_ORPHANED_MEMORY_BYTES, vec![], bytes as f64);
    out.declare(&defs::PROGRAMS_ORPHANED_WITHHELD);
    for (reason, n) in &o.withheld {
        out.gauge(
            &defs::PROGRAMS_ORPHANED_WITHHELD,
            vec![("reason", reason.to_string())],
            *n as f64,
        );
    }
    out.declare(&defs::CREATOR_ORPHANED_PROGRAMS);
    for ((container, pod), (n, mem)) in by_loader {
        let labels = || {
            vec![
                ("container_id", container.to_string()),
                ("pod_uid", pod.to_string()),
            ]
        };
        out.gauge(&defs::CREATOR_ORPHANED_PROGRAMS, labels(), n as f64);
        out.gauge(
            &defs::CREATOR_ORPHANED_PROGRAMS_MEMORY_BYTES,
            labels(),
            mem as f64,
        );
    }
}

/// The loader and orphan verdict of each selected program.
fn render_loaders(snap: &Snapshot, progs: &[ProgRecord], sel: &[usize], out: &mut Families) {
    let known: Vec<(u32, &crate::census::loaders::Loader)> = sel
        .iter()
        .filter_map(|&i| {
            let id = progs[i].id;
            Some((id, snap.prog_loaders.get(&id)?.known()?))
        })
        .collect();
    if !known.is_empty() {
        let mut w = out.raw_with_capacity(&defs::PROGRAM_CREATOR_INFO, known.len() * 200);
        for (id, l) in &known {
            crate::census::creators::write_creator_info(
                &mut w,
                *id,
                l.rec.memcg_id,
                &l.container_id,
                &l.pod_uid,
                &[("comm", &l.rec.comm)],
            );
        }
    }
    let verdicts: Vec<(u32, bool)> = sel
        .iter()
        .filter_map(|&i| {
            let id = progs[i].id;
            let l = snap.prog_loaders.get(&id)?;
            Some((id, verdict(l, &snap.graph, id).ok()?))
        })
        .collect();
    if !verdicts.is_empty() {
        let mut w = out.raw(&defs::PROGRAM_ORPHANED);
        for (id, v) in verdicts {
            w.id_int(id, v as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::programs::{holders, Observed};

    fn prog(id: u32, refcnt: i64, memlock: u64) -> ProgRecord {
        ProgRecord {
            prog_ptr: 0,
            refcnt,
            load_time_ns: 2_000_000_000,
            memlock,
            id,
            prog_type: 6,
            expected_attach_type: 0,
            used_map_cnt: 1,
            tag: [0xab; 8],
            name: format!("p{id}"),
            map_ids: vec![1],
            dst_prog_id: None,
        }
    }

    #[test]
    fn pinned_only_and_largest_programs_get_series_and_the_rest_are_counted() {
        // 30 small programs held by a link each, one large one, and one held
        // only by a pin.
        let mut progs: Vec<ProgRecord> = (1..=30).map(|i| prog(i, 1, 4096)).collect();
        progs.push(prog(100, 1, 1 << 20));
        progs.push(prog(200, 1, 4096));
        let obs = Observed {
            files: Some(vec![]),
            pins: Some(vec![200]),
            links: Some((1..=30).chain([100]).collect()),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
            ..Default::default()
        };
        let snap = Snapshot {
            prog_holders: holders(&progs, &obs),
            programs: Some(progs),
            boot_unix: Some(1_000.0),
            ..Default::default()
        };
        let mut out = Families::new();
        render_programs(&snap, &RenderOpts::default(), &mut out);
        let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
        assert!(
            text.contains("bpfmap_programs{prog_type=\"xdp\"} 32\n"),
            "{text}"
        );
        assert!(text.contains(
            "bpfmap_program_info{id=\"200\",name=\"p200\",prog_type=\"xdp\",tag=\"abababababababab\"} 1\n"
        ));
        assert!(text.contains("bpfmap_program_info{id=\"100\","));
        assert!(text.contains("bpfmap_program_holders{id=\"200\",kind=\"pin\"} 1\n"));
        assert!(text.contains("bpfmap_program_load_time_seconds{id=\"200\"} 1002\n"));
        assert!(text.contains("bpfmap_program_unexplained_refs{id=\"200\"} 0\n"));
        // The pin-only program and the 10 largest (ties by id) have series;
        // the other 21 are counted as left out.
        let series = text.matches("bpfmap_program_info{").count();
        assert_eq!(series, 11);
        assert!(text.contains("bpfmap_program_series_omitted{reason=\"budget\"} 21\n"));
        assert!(text.contains("bpfmap_programs_unexplained_withheld 0\n"));
    }

    #[test]
    fn orphans_keep_their_series_over_the_cap_and_loaders_are_published() {
        use crate::census::loaders::{
            CgroupState, LoadRecord, Loader, ProgLoader, ProgOrphans, Unknown,
        };
        use crate::census::roots::{Graph, Holder, Obj, PinId, Root};
        // 60 pinned-only programs (over the cap of 50); 58..=60, the last
        // by every key of the cap, are orphans.
        let progs: Vec<ProgRecord> = (1..=60).map(|i| prog(i, 1, 4096)).collect();
        let obs = Observed {
            files: Some(vec![]),
            pins: Some((1..=60).collect()),
            links: Some(vec![]),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
            ..Default::default()
        };
        let mut g = Graph::default();
        for i in 1..=60 {
            g.add(
                Obj::Prog(i),
                Holder::Root(Root::Pin(PinId {
                    dev: 1,
                    ino: i as u64,
                })),
            );
        }
        g.finish();
        let loader = |id: u32, state| {
            ProgLoader::Known(Box::new(Loader {
                rec: LoadRecord {
                    load_ns: 0,
                    cgroup_id: 3,
                    memcg_id: 77,
                    id,
                    tgid: 9,
                    pid: 9,
                    comm: "agent".into(),
                },
                cgroup_path: Some("/kubepods/podu/c".into()),
                container_id: "c".into(),
                pod_uid: "u".into(),
                cgroup: state,
            }))
        };
        let mut loaders: crate::census::IdMap<ProgLoader> = (1..=60)
            .map(|i| (i, ProgLoader::Unknown(Unknown::BeforeStart)))
            .collect();
        for i in 58..=60 {
            loaders.insert(i, loader(i, CgroupState::Gone));
        }
        loaders.insert(1, loader(1, CgroupState::Live));
        let orphans = crate::census::loaders::summarize(&progs, &loaders, &g);
        assert_eq!(orphans.orphaned.len(), 3);
        let snap = Snapshot {
            prog_holders: holders(&progs, &obs),
            programs: Some(progs),
            prog_loaders: loaders,
            prog_orphans: ProgOrphans { ..orphans },
            graph: g,
            ..Default::default()
        };
        let mut out = Families::new();
        render_programs(&snap, &RenderOpts::default(), &mut out);
        let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
        assert_eq!(text.matches("bpfmap_program_info{").count(), 50, "{text}");
        assert!(text.contains("bpfmap_program_orphaned{id=\"1\"} 0\n"));
        for i in 58..=60 {
            assert!(text.contains(&format!("bpfmap_program_orphaned{{id=\"{i}\"}} 1\n")));
            assert!(text.contains(&format!(
                "bpfmap_program_creator_info{{id=\"{i}\",cgroup_id=\"77\",container_id=\"c\",pod_uid=\"u\",comm=\"agent\"}} 1\n"
            )));
        }
        assert!(text.contains("bpfmap_programs_orphaned 3\n"));
        assert!(text.contains("bpfmap_programs_orphaned_memory_bytes 12288\n"));
        assert!(
            text.contains("bpfmap_creator_orphaned_programs{container_id=\"c\",pod_uid=\"u\"} 3\n")
        );
        assert!(
            text.contains("bpfmap_programs_orphaned_withheld{reason=\"loaded_before_start\"} 56\n")
        );
        // Unknown loaders publish no info and no verdict.
        assert!(!text.contains("bpfmap_program_orphaned{id=\"4\"}"));
        assert!(!text.contains("bpfmap_program_creator_info{id=\"4\""));
        // Over the cap: the orphans plus the first 47 others, 10 left out.
        assert!(!text.contains("bpfmap_program_info{id=\"57\""));
        assert!(text.contains("bpfmap_program_series_omitted{reason=\"cap\"} 10\n"));
    }

    #[test]
    fn withheld_programs_publish_no_unexplained_count() {
        let progs = vec![prog(1, 2, 4096)];
        let obs = Observed {
            files: Some(vec![]),
            pins: Some(vec![]),
            links: Some(vec![1]),
            slots: Some(vec![]),
            io_uring: Some(vec![]),
            ..Default::default()
        };
        let snap = Snapshot {
            prog_holders: holders(&progs, &obs),
            programs: Some(progs),
            ..Default::default()
        };
        let mut out = Families::new();
        render_programs(&snap, &RenderOpts::all(), &mut out);
        let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
        assert!(text.contains("bpfmap_program_info{id=\"1\""));
        assert!(!text.contains("bpfmap_program_unexplained_refs"), "{text}");
        assert!(text.contains("bpfmap_programs_unexplained_withheld 1\n"));
    }
}
