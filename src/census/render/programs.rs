//! The program families: aggregates by type (always exact, never capped),
//! the exporter's own programs, the holder sources' completeness, and
//! per-program series for the programs that matter under the budget.
use std::collections::BTreeMap;

use super::RenderOpts;
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
    holders: &crate::census::IdMap<ProgHolders>,
    opts: &RenderOpts,
) -> (Vec<usize>, usize, usize) {
    let mut keep: Vec<(Keep, u64, usize)> = Vec::new();
    let mut by_memory: Vec<usize> = (0..progs.len()).collect();
    by_memory.sort_by_key(|&i| (std::cmp::Reverse(progs[i].memlock), progs[i].id));
    let top: std::collections::HashSet<usize> =
        by_memory.into_iter().take(TOP_PROGRAMS_BY_MEMORY).collect();
    for (i, p) in progs.iter().enumerate() {
        let h = holders.get(&p.id);
        let why = if h.and_then(|h| h.unexplained(p.refcnt)).unwrap_or(0) > 0 {
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
    keep.sort_unstable();
    let omitted_cap = keep.len().saturating_sub(cap);
    keep.truncate(cap);
    let mut sel: Vec<usize> = keep.into_iter().map(|(_, _, i)| i).collect();
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
        select(progs, &snap.prog_holders, opts)
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
