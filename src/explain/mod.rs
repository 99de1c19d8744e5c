//! `bpfmap-exporter explain`: one census, then for the selected maps every
//! fact and every holder by identity. [`report`] is a pure function of an
//! [`Input`]: the [`Snapshot`] (taken with `keep_files`), the [`Extras`]
//! (program, outer-map slot and link identities) and the creator processes
//! the lifecycle collector recorded, so the running exporter serves the same
//! JSON (`/api/v1/maps`, src/api.rs). The JSON schema is documented in
//! docs/explain.md ("JSON API").
mod extras;
mod links;
mod programs;
mod remote;
mod report;
mod select;
mod text;

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::census::{Census, CensusOpts};

pub use extras::{gather_extras, Extras, ProgramIdentity};
pub use links::{link_report, link_text, page_links, select_link, write_link_report};
pub use programs::{
    page_programs, pin_report, pin_text, program_report, program_text, select_program,
    write_program_report,
};
pub use report::{age, report, write_report, Input};
pub use select::{page, select, several_named, Filter, Page, Selector, MAX_LIMIT};
pub use text::text;

/// Version of the JSON document's shape.
pub const SCHEMA_VERSION: u32 = 4;

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("select").required(true).args(["id", "name", "pin", "pid", "prog", "link"])))]
pub struct ExplainArgs {
    /// The map with this id.
    #[arg(long)]
    pub id: Option<u32>,
    /// The map with this name (an error if several maps have it).
    #[arg(long)]
    pub name: Option<String>,
    /// What is pinned at this path on a bpffs (a map or a program), and
    /// what removing that pin alone would free.
    #[arg(long)]
    pub pin: Option<PathBuf>,
    /// The program with this id.
    #[arg(long)]
    pub prog: Option<u32>,
    /// The link with this id: its program, holders and roots.
    #[arg(long)]
    pub link: Option<u32>,
    /// Every map this process holds (fds and mmaps) or has in flight to it.
    #[arg(long)]
    pub pid: Option<u32>,
    /// text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    #[command(flatten)]
    pub remote: remote::RemoteArgs,
}

pub use crate::collector::CreatorProcesses;

/// Why creator processes are unknown in a standalone census.
pub const STANDALONE_PROCESSES: &str =
    "the lifecycle collector does not run in a standalone explain \
     (explain --from http://<node>:9863 asks a running exporter, which records creations)";

/// Run the subcommand: one census (or one request to a running exporter
/// with `--from`), print, error on a bad selector.
pub fn run(args: &ExplainArgs, btf_path: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(url) = &args.remote.from {
        return remote::run_from(args, url);
    }
    let sel = if args.prog.is_some() || args.link.is_some() {
        None // a program or a link, chosen once the census is taken
    } else if let Some(id) = args.id {
        Some(Selector::Id(id))
    } else if let Some(n) = &args.name {
        Some(Selector::Name(n.clone()))
    } else if let Some(p) = &args.pin {
        let canon = std::fs::canonicalize(p)
            .with_context(|| format!("--pin {}: no such file", p.display()))?;
        Some(Selector::Pin(canon))
    } else if let Some(pid) = args.pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--pid {pid}: no such process");
        }
        Some(Selector::Pid(pid))
    } else {
        bail!("choose a map with --id, --name, --pin or --pid, a program with --prog, or a link with --link");
    };
    let mut census = Census::load(CensusOpts {
        btf_path,
        keep_files: true,
        ..Default::default()
    })?;
    let (snap, rep) = census.take(&[]);
    let failed: Vec<String> = rep
        .outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.name.to_string())
        .collect();
    if !snap.maps_ok {
        bail!("the map census failed: {}", failed.join(", "));
    }
    // A program: by id, or by its pin.
    let prog_ids = match (&args.prog, &sel) {
        (Some(id), _) => {
            Some(select_program(&snap, *id).map_err(|e| anyhow::anyhow!("--prog {id}: {e}"))?)
        }
        (None, Some(Selector::Pin(p))) => select::pinned(&snap, p)
            .filter(|x| x.info.kind == crate::census::fdinfo::ObjKind::Prog)
            .map(|x| select_program(&snap, x.info.id))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        _ => None,
    };
    let ids = match (&prog_ids, &sel) {
        (None, Some(sel)) => select(&snap, sel).map_err(anyhow::Error::msg)?,
        _ => Vec::new(),
    };
    let x = gather_extras(&snap);
    let attr = crate::k8s::CgroupAttributor::new("/proc", None);
    let attribution = |tgid: u32, cg: u64| {
        use crate::k8s::Attributor;
        let i = attr.identify(tgid, cg);
        (i.container_id, i.pod_uid)
    };
    let inp = Input {
        snap: &snap,
        extras: &x,
        attribution: &attribution,
        failed: &failed,
        processes: Err(STANDALONE_PROCESSES),
        now_unix: now_unix(),
        max_holders: usize::MAX,
    };
    let link_ids = match args.link {
        Some(id) => Some(select_link(&snap, id).map_err(|e| anyhow::anyhow!("--link {id}: {e}"))?),
        None => None,
    };
    let mut doc = match (&prog_ids, &link_ids) {
        (_, Some(l)) => link_report(&inp, &page_links(l, None, usize::MAX)),
        (Some(p), None) => program_report(&inp, &page_programs(p, None, usize::MAX)),
        (None, None) => report(&inp, &page(&snap, &ids, &Filter::default())),
    };
    if let Some(Selector::Pin(p)) = &sel {
        if let Some(x) = select::pinned(&snap, p) {
            let id = crate::census::roots::PinId {
                dev: x.dev,
                ino: x.ino,
            };
            doc["pin"] = pin_report(&snap, &x.mount, &x.path, id);
        }
    }
    print(
        args,
        &doc,
        ids.is_empty() && prog_ids.is_none() && link_ids.is_none(),
    )
}

pub(super) fn print(args: &ExplainArgs, doc: &Value, none: bool) -> anyhow::Result<()> {
    if args.output == "json" {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut out, doc)?;
        writeln!(out)?;
        out.flush()?;
    } else {
        if doc.get("links").is_some() {
            print!("{}", link_text(doc));
        } else if doc.get("programs").is_some() {
            print!("{}", program_text(doc));
        } else {
            print!("{}", text(doc));
        }
        if let Some(pin) = doc.get("pin") {
            print!("{}", pin_text(pin));
        }
        if none {
            println!("process {} holds no map", args.pid.unwrap_or(0));
        }
    }
    Ok(())
}

/// Now, Unix seconds.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::holders::HolderKind;
    use crate::census::holders::{compute, Observed};
    use crate::census::testutil::map_record;
    use crate::census::Creator;
    use crate::census::{FileRecord, IdMap, MapRecord, Snapshot};
    use crate::collector::CreatorProcess;
    use serde_json::json;

    fn map(id: u32, refcnt: i64, creator: Creator) -> MapRecord {
        MapRecord {
            map_ptr: id as u64,
            refcnt,
            map_type: 2,
            value_size: 4,
            creator,
            ..map_record(id)
        }
    }

    fn file(tgid: u32, fd: u32, ptr: u64, map_id: u32, vm: u64) -> FileRecord {
        FileRecord {
            file_ptr: ptr,
            cgroup_id: 1,
            tgid,
            pid: tgid,
            fd,
            map_id,
            comm: b"agent".to_vec(),
            vm_start: vm,
            vm_end: if vm > 0 { vm + 0x1000 } else { 0 },
            sock_ino: 0,
        }
    }

    /// Maps 1..=5: 1 held by 3 processes' fds, 2 unexplained (refcnt 2, one
    /// file), 3 creator gone, 4 mmap-only, 5 plain.
    fn snapshot() -> Snapshot {
        let maps = vec![
            map(1, 1, Creator::Root),
            map(2, 2, Creator::Live(7)),
            map(3, 1, Creator::Gone(8)),
            map(4, 1, Creator::Root),
            map(5, 1, Creator::Root),
        ];
        let files = vec![
            file(10, 3, 0xa, 1, 0),
            file(11, 3, 0xa, 1, 0),
            file(12, 4, 0xa, 1, 0),
            file(10, 5, 0xb, 2, 0),
            file(10, 6, 0xc, 3, 0),
            file(10, 7, 0xe, 5, 0),
        ];
        let vmas = vec![file(13, 0, 0xd, 4, 0x7f00_0000)];
        let obs = Observed {
            files: Some(files.clone()),
            vmas: Some(vmas.clone()),
            ..crate::census::testutil::observed_all_known()
        };
        Snapshot {
            holders: compute(&maps, &obs),
            maps,
            maps_ok: true,
            features: crate::census::Features {
                map_memcg: true,
                ..Default::default()
            },
            creator_paths: Some(
                [
                    (7, "/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1".to_string()),
                    (8, "/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-777788889999".to_string()),
                ]
                .into_iter()
                .collect(),
            ),
            files: Some(files),
            vmas: Some(vmas),
            ..Default::default()
        }
    }

    fn no_attr(_: u32, _: u64) -> (String, String) {
        (String::new(), String::new())
    }

    #[test]
    fn filters_and_paging_select_by_id_with_a_continuation() {
        let s = snapshot();
        let all: Vec<u32> = (1..=5).collect();
        let p = page(&s, &all, &Filter::default());
        assert_eq!(
            (p.ids.clone(), p.total, p.next_after),
            (all.clone(), 5, None)
        );
        let f = |unexplained, creator_gone| Filter {
            unexplained,
            creator_gone,
            ..Filter::default()
        };
        assert_eq!(page(&s, &all, &f(true, false)).ids, vec![2]);
        assert_eq!(page(&s, &all, &f(false, true)).ids, vec![3]);
        assert!(page(&s, &all, &f(true, true)).ids.is_empty());
        let two = Filter {
            limit: 2,
            ..Filter::default()
        };
        let p = page(&s, &[5, 1, 3, 2, 4, 99], &two);
        assert_eq!(
            (p.ids.clone(), p.total, p.next_after),
            (vec![1, 2], 5, Some(2))
        );
        let p = page(
            &s,
            &all,
            &Filter {
                after: Some(2),
                ..two.clone()
            },
        );
        assert_eq!((p.ids, p.next_after), (vec![3, 4], Some(4)));
        let p = page(
            &s,
            &all,
            &Filter {
                after: Some(4),
                ..two
            },
        );
        assert_eq!((p.ids, p.next_after), (vec![5], None));
    }

    #[test]
    fn report_lists_every_kind_bounds_lists_and_names_the_creator_process() {
        let s = snapshot();
        let mut by_id = IdMap::default();
        by_id.insert(
            2,
            CreatorProcess {
                pid: 4242,
                comm: "agent".into(),
                cgroup_id: 9,
                created_unix: 1000.0,
            },
        );
        let procs = CreatorProcesses {
            by_id,
            start_max: 1,
            origins: None,
        };
        let x = Extras::default();
        let inp = Input {
            snap: &s,
            extras: &x,
            attribution: &no_attr,
            failed: &[],
            processes: Ok(&procs),
            now_unix: 1000.0 + 3.0 * 3600.0 + 5.0,
            max_holders: 2,
        };
        let doc = report(&inp, &page(&s, &[1, 2, 3, 4], &Filter::default()));
        assert_eq!(doc["schema_version"], json!(SCHEMA_VERSION));
        let maps = doc["maps"].as_array().unwrap();
        let labels: Vec<&str> = HolderKind::ALL.iter().map(|k| k.label()).collect();
        for m in maps {
            let mut keys: Vec<&str> = m["holders"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            keys.sort_unstable();
            let mut want = labels.clone();
            want.sort_unstable();
            assert_eq!(keys, want);
        }
        // Map 1: three processes share one file; two listed, one omitted.
        assert_eq!(maps[0]["holders"]["file"].as_array().unwrap().len(), 2);
        assert_eq!(maps[0]["holders_omitted"], json!({"file": 1}));
        assert_eq!(maps[0]["holder_counts"]["file"], json!(1));
        // Map 1 is id <= start_max: pre-existing.
        assert!(maps[0]["creator"]["process_unknown"]
            .as_str()
            .unwrap()
            .contains("existed before"));
        // Map 2: its creator process, pod and container; unexplained 1.
        let c = &maps[1]["creator"];
        assert_eq!(
            (
                c["container_id"].clone(),
                c["pod_uid"].clone(),
                c["gone"].clone()
            ),
            (
                json!("c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"),
                json!("0a1b2c3d-1111-2222-3333-444455556666"),
                json!(false)
            )
        );
        assert_eq!(c["process"]["pid"], json!(4242));
        assert_eq!(c["process"]["age_seconds"], json!(10805.0));
        assert_eq!(maps[1]["unexplained"], json!(1));
        // Map 3: gone, charged to the pod; no record.
        assert_eq!(maps[2]["creator"]["gone"], json!(true));
        assert!(maps[2]["creator"]["process_unknown"]
            .as_str()
            .unwrap()
            .contains("recorded no creation"));
        // Map 4: an mmap with its range.
        assert_eq!(
            maps[3]["holders"]["mmap"],
            json!([{"pid": 13, "comm": "agent", "size_bytes": 4096, "fd": null, "in_fd_table": false}])
        );
        let t = text(&doc);
        for want in [
            "created by pid 4242 (agent), 3h ago",
            "... and 1 more file holders",
            "mmap pid 13 comm \"agent\" 4096 bytes (file no longer in an fd table)",
            "creating cgroup gone",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        // Standalone: the process is unknown and says how to learn it.
        let inp = Input {
            processes: Err(STANDALONE_PROCESSES),
            max_holders: usize::MAX,
            ..inp
        };
        let doc = report(&inp, &page(&s, &[2], &Filter::default()));
        assert!(text(&doc).contains("explain --from"));
        assert!(doc["maps"][0]["holders_omitted"] == json!({}));
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(45.0), "45s");
        assert_eq!(age(600.0), "10m");
        assert_eq!(age(3.0 * 3600.0), "3h");
        assert_eq!(age(3.0 * 86400.0), "3d");
        assert_eq!(age(-5.0), "0s");
    }

    #[test]
    fn the_written_document_is_the_report_and_a_byte_bound_cuts_the_page() {
        let s = snapshot();
        let x = Extras::default();
        let inp = Input {
            snap: &s,
            extras: &x,
            attribution: &no_attr,
            failed: &[],
            processes: Err("off"),
            now_unix: 0.0,
            max_holders: 2,
        };
        let p = page(&s, &[1, 2, 3, 4, 5], &Filter::default());
        let whole = report(&inp, &p);
        let mut out = Vec::new();
        write_report(&inp, &p, usize::MAX, &mut out).unwrap();
        assert_eq!(out, {
            let mut v = serde_json::to_vec(&whole).unwrap();
            v.push(b'\n');
            v
        });
        // Room for about two maps: the page ends after them, resumable.
        let one = serde_json::to_vec(&whole["maps"][0]).unwrap().len();
        let mut out = Vec::new();
        write_report(&inp, &p, 2 * one + 2, &mut out).unwrap();
        let cut: Value = serde_json::from_slice(&out).unwrap();
        let ids: Vec<u64> = cut["maps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert!(!ids.is_empty() && ids.len() < 5, "{ids:?}");
        assert_eq!(cut["truncated"], json!(true));
        assert_eq!(cut["next_after"], json!(ids.last().unwrap()));
        assert_eq!(cut["total"], json!(5));
        // A first object larger than the bound is still written whole.
        let mut out = Vec::new();
        write_report(&inp, &p, 1, &mut out).unwrap();
        let cut: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(cut["maps"].as_array().unwrap().len(), 1);
        assert_eq!(cut["next_after"], json!(1));
    }
}
