//! The link families: counts by type (always exact, never capped), the
//! exporter's own links, and per-link series for the links that matter
//! under the budget: those only pins keep (a stale pin keeps an attached
//! program running after its owner is gone).
use std::collections::BTreeMap;

use super::RenderOpts;
use crate::census::links::{attach_type_label, link_type_label, target_text};
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
                ("attach_type", attach_type_label(l).unwrap_or_default()),
                (
                    "target",
                    target_text(l, |id| snap.cgroup_paths.get(&id).cloned()),
                ),
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
                ..Default::default()
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
        assert!(text.contains(
            "bpfmap_link_info{id=\"2\",link_type=\"xdp\",prog_id=\"102\",attach_type=\"\",target=\"not told by this kernel\"} 1\n"
        ));
        assert!(text.contains("bpfmap_link_holders{id=\"2\",kind=\"pin\"} 1\n"));
        assert!(!text.contains("bpfmap_link_holders{id=\"2\",kind=\"file\"}"));
    }

    #[test]
    fn link_info_carries_attach_type_and_target() {
        use crate::bpf::census::{LinkDevice, LinkTarget};
        let rec = |id: u32, link_type: u32, target: LinkTarget, cgroup| LinkRecord {
            id,
            link_type,
            prog_id: 100 + id,
            cgroup,
            target,
            ..Default::default()
        };
        let links = vec![
            // tcx ingress on a device of a namespace.
            rec(
                1,
                11,
                LinkTarget {
                    attach_type: Some(46),
                    device: Some(LinkDevice {
                        ifindex: 5,
                        name: Some("veth0".into()),
                    }),
                    netns: Some(4026532000),
                    ..Default::default()
                },
                None,
            ),
            // A cgroup link the cgroups part resolved, and one it did not.
            rec(
                2,
                3,
                LinkTarget {
                    attach_type: Some(0),
                    ..Default::default()
                },
                Some((77, 0)),
            ),
            rec(3, 3, LinkTarget::default(), Some((78, 1))),
            // A flow dissector netns link.
            rec(
                4,
                5,
                LinkTarget {
                    attach_type: Some(17),
                    netns: Some(4026531840),
                    ..Default::default()
                },
                None,
            ),
            // An xdp link whose device is gone.
            rec(
                5,
                6,
                LinkTarget {
                    detached: true,
                    ..Default::default()
                },
                None,
            ),
            // fentry on a kernel function.
            rec(
                6,
                2,
                LinkTarget {
                    attach_type: Some(24),
                    trampoline: Some((1, 777)),
                    ..Default::default()
                },
                None,
            ),
        ];
        let mut snap = Snapshot {
            links: Some(links),
            ..Default::default()
        };
        snap.cgroup_paths.insert(77, "/sys/fs/cgroup/app".into());
        for id in 1..=6 {
            snap.link_holders.insert(
                id,
                LinkHolders {
                    files: Some(0),
                    pins: Some(1),
                    io_uring: Some(0),
                },
            );
        }
        let mut out = Families::new();
        render_links(&snap, &RenderOpts::default(), &mut out);
        let text = String::from_utf8(out.encode_text(&[]).unwrap()).unwrap();
        for want in [
            "{id=\"1\",link_type=\"tcx\",prog_id=\"101\",attach_type=\"tcx_ingress\",target=\"dev veth0 (ifindex 5, netns 4026532000)\"} 1",
            "{id=\"2\",link_type=\"cgroup\",prog_id=\"102\",attach_type=\"cgroup_inet_ingress\",target=\"cgroup /sys/fs/cgroup/app (id 77)\"} 1",
            "{id=\"3\",link_type=\"cgroup\",prog_id=\"103\",attach_type=\"\",target=\"cgroup id 78\"} 1",
            "{id=\"4\",link_type=\"netns\",prog_id=\"104\",attach_type=\"flow_dissector\",target=\"netns 4026531840\"} 1",
            "{id=\"5\",link_type=\"xdp\",prog_id=\"105\",attach_type=\"\",target=\"detached: its target is gone or it was detached, its program runs nowhere\"} 1",
            "{id=\"6\",link_type=\"tracing\",prog_id=\"106\",attach_type=\"trace_fentry\",target=\"vmlinux BTF id 777\"} 1",
        ] {
            assert!(
                text.contains(&format!("bpfmap_link_info{want}\n")),
                "{want} in {text}"
            );
        }
    }
}
