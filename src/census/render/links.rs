//! The link families: counts by type (always exact, never capped), the
//! exporter's own links, and per-link series for the links that matter
//! under the budget: those only pins keep (a stale pin keeps an attached
//! program running after its owner is gone).
use std::collections::BTreeMap;

use super::RenderOpts;
use crate::census::links::link_type_label;
use crate::census::Snapshot;
use crate::metrics::{defs, Families};

/// Per-link series for at most this many links (3 series each).
pub const DEFAULT_MAX_LINK_SERIES: usize = 50;

pub(crate) fn render_links(snap: &Snapshot, opts: &RenderOpts, out: &mut Families) {
    let Some(links) = &snap.links else {
        return;
    };
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for l in links {
        *by_type
            .entry(link_type_label(l.link_type).into_owned())
            .or_default() += 1;
    }
    for (t, n) in &by_type {
        out.gauge(&defs::LINKS, vec![("link_type", t.clone())], *n as f64);
    }
    out.gauge(&defs::EXPORTER_LINKS, vec![], snap.own_links as f64);
    let pins_only = |id: u32| snap.link_holders.get(&id).is_some_and(|h| h.pins_only());
    let mut sel: Vec<usize> = (0..links.len())
        .filter(|&i| opts.per_map && (opts.all_maps || pins_only(links[i].id)))
        .collect();
    let budget = if opts.per_map {
        links.len() - sel.len()
    } else {
        0
    };
    let cap = if opts.all_maps {
        usize::MAX
    } else {
        DEFAULT_MAX_LINK_SERIES
    };
    let capped = sel.len().saturating_sub(cap);
    sel.truncate(cap);
    let disabled = if opts.per_map { 0 } else { links.len() };
    for (reason, n) in [("budget", budget), ("cap", capped), ("disabled", disabled)] {
        out.gauge(
            &defs::LINK_SERIES_OMITTED,
            vec![("reason", reason.to_string())],
            n as f64,
        );
    }
    for i in sel {
        let l = &links[i];
        out.gauge(
            &defs::LINK_INFO,
            vec![
                ("id", l.id.to_string()),
                ("link_type", link_type_label(l.link_type).into_owned()),
                ("prog_id", l.prog_id.to_string()),
            ],
            1.0,
        );
        if let Some(h) = snap.link_holders.get(&l.id) {
            for (kind, n) in h.iter() {
                if let Some(n) = n.filter(|&n| n > 0) {
                    out.gauge(
                        &defs::LINK_HOLDERS,
                        vec![("id", l.id.to_string()), ("kind", kind.to_string())],
                        n as f64,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::census::LinkRecord;
    use crate::census::links::LinkHolders;

    #[test]
    fn counts_by_type_and_series_for_pinned_only_links() {
        let links: Vec<LinkRecord> = (1..=60)
            .map(|id| LinkRecord {
                id,
                link_type: if id % 2 == 0 { 6 } else { 3 },
                prog_id: 100 + id,
                iter_map_id: None,
            })
            .collect();
        let mut snap = Snapshot {
            links: Some(links),
            own_links: 4,
            ..Default::default()
        };
        for id in 1..=60 {
            let pinned = id <= 55;
            snap.link_holders.insert(
                id,
                LinkHolders {
                    files: Some(u64::from(!pinned)),
                    pins: Some(u64::from(pinned)),
                    io_uring: Some(0),
                },
            );
        }
        let mut out = Families::new();
        render_links(&snap, &RenderOpts::default(), &mut out);
        let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
        assert!(
            text.contains("bpfmap_links{link_type=\"xdp\"} 30\n"),
            "{text}"
        );
        assert!(text.contains("bpfmap_links{link_type=\"cgroup\"} 30\n"));
        assert!(text.contains("bpfmap_exporter_links 4\n"));
        // 55 held only by pins: 50 get series, 5 are over the cap; the 5
        // held by files are left to the budget.
        assert_eq!(text.matches("bpfmap_link_info{").count(), 50);
        assert!(text.contains("bpfmap_link_series_omitted{reason=\"cap\"} 5\n"));
        assert!(text.contains("bpfmap_link_series_omitted{reason=\"budget\"} 5\n"));
        assert!(text.contains("bpfmap_link_info{id=\"2\",link_type=\"xdp\",prog_id=\"102\"} 1\n"));
        assert!(text.contains("bpfmap_link_holders{id=\"2\",kind=\"pin\"} 1\n"));
        assert!(!text.contains("bpfmap_link_holders{id=\"2\",kind=\"file\"}"));
    }
}
