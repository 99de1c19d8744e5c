//! Origins (root): the user stacks that created, pinned and took files of
//! objects, named after the process exited and its binary was deleted, a
//! stripped binary's raw frames, a full store, and a process in another
//! mount namespace. A C program (tests/fixtures/origins.c, built here with
//! frame pointers and debug info) makes each object from its own function;
//! a Go program (tests/fixtures/origins.go) does the same as Go agents do.
//! Nothing is timed tightly: each wait polls up to 60 s.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/origins.c");
const GO_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/origins.go");

/// The fixture built into `dir` (stripped of every symbol when `strip`).
fn build(dir: &Path, strip: bool) -> PathBuf {
    let bin = dir.join("origins");
    let st = Command::new("cc")
        .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(FIXTURE)
        .status()
        .expect("cc (apt-get install gcc)");
    assert!(st.success(), "building {FIXTURE}");
    if strip {
        let st = Command::new("strip").arg("-s").arg(&bin).status().unwrap();
        assert!(st.success(), "strip -s");
        let nm = Command::new("nm").arg(&bin).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&nm.stdout).contains("origin_make_map"),
            "the stripped fixture still names its functions"
        );
    }
    bin
}

/// The Go fixture in `dir`. The build is kept in the target's temp dir and
/// copied from there while it is newer than the source: the matrix guests,
/// whose root is read-only, then run the host's build instead of compiling
/// under emulation.
fn build_go(dir: &Path) -> PathBuf {
    let bin = dir.join("origins_go");
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("origins_go");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(k), Some(src)) = (mtime(&kept), mtime(Path::new(GO_FIXTURE))) {
        if k >= src {
            std::fs::copy(&kept, &bin).expect("copying the kept Go fixture");
            return bin;
        }
    }
    let st = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(GO_FIXTURE)
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOFLAGS", "-buildvcs=false")
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .status()
        .expect("go (apt-get install golang-go; scripts/install-deps.sh installs it)");
    assert!(st.success(), "building {GO_FIXTURE}");
    let part = kept.with_extension("part");
    if std::fs::copy(&bin, &part).is_ok() {
        let _ = std::fs::rename(&part, &kept);
    }
    bin
}

/// Run the Go fixture at `bin` to its exit, sleeping `sleep_ms` after its
/// last call: (map id, program id).
fn run_go(bin: &Path, pins: &Pins, sleep_ms: u32) -> (u32, u32) {
    let out = Command::new(bin)
        .arg(&pins.0)
        .arg(sleep_ms.to_string())
        .output()
        .expect("running the Go fixture");
    assert!(out.status.success(), "Go fixture failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let w: Vec<&str> = s.split_whitespace().collect();
    assert!(w.len() >= 4 && w[0] == "map" && w[2] == "prog", "{s:?}");
    (w[1].parse().unwrap(), w[3].parse().unwrap())
}

/// Whether the ELF file at `bin` has a GNU build id note.
fn has_gnu_build_id(bin: &Path) -> bool {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(bin)
        .output()
        .expect("readelf");
    assert!(out.status.success(), "readelf -n {}", bin.display());
    String::from_utf8_lossy(&out.stdout).contains("NT_GNU_BUILD_ID")
}

/// Pins the fixture makes, removed on drop.
struct Pins(PathBuf);

impl Pins {
    fn new(tag: &str) -> Pins {
        ensure_bpffs();
        let p = PathBuf::from(format!("/sys/fs/bpf/origins_{tag}_{}", std::process::id()));
        for suffix in ["", "_prog", "_link"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        Pins(p)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        // The link pin holds the fixture's sk_lookup link (and its
        // program) in this network namespace: removed with the rest.
        for suffix in ["", "_prog", "_link"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// Run `cmd` (the fixture, or a wrapper ending with it) to its exit:
/// (map id, program id).
fn run(cmd: Command) -> (u32, u32) {
    let (map, prog, _) = run_all(cmd);
    (map, prog)
}

/// As `run`, with the pinned link's id.
fn run_all(mut cmd: Command) -> (u32, u32, u32) {
    let out = cmd.output().expect("running the fixture");
    assert!(out.status.success(), "fixture failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let w: Vec<&str> = s.split_whitespace().collect();
    assert!(
        w.len() >= 8 && w[0] == "map" && w[2] == "prog" && w[6] == "link",
        "{s:?}"
    );
    (
        w[1].parse().unwrap(),
        w[3].parse().unwrap(),
        w[7].parse().unwrap(),
    )
}

fn fixture(bin: &Path, pins: &Pins) -> Command {
    let mut c = Command::new(bin);
    c.arg(&pins.0).arg("1000");
    c
}

fn start(args: &[&str]) -> Exporter {
    start_cmd(Command::new(BIN), args)
}

/// As `start`, with origin records left 4 s in the ring before each read:
/// a fixture run with no sleep exits (and its binary can be deleted)
/// before the reader sees its records.
fn start_reading_late() -> Exporter {
    let mut cmd = Command::new(BIN);
    cmd.env("BPFMAP_TEST_ORIGINS_READ_DELAY_MS", "4000");
    start_cmd(cmd, &[])
}

fn start_cmd(cmd: Command, args: &[&str]) -> Exporter {
    require_root();
    let mut a = vec!["--collector.origins"];
    a.extend_from_slice(args);
    let mut e = Exporter::spawn(cmd, &a);
    e.wait_listening(Duration::from_secs(60));
    // The probes are attached before the listener accepts; the first
    // scrape proves the lifecycle collector loaded.
    e.wait_until("scraped", Duration::from_secs(60), |port| {
        http_get(port, "/metrics").is_some_and(|(c, b)| {
            c == 200 && b.contains("bpfmap_scrape_collector_success{collector=\"lifecycle\"} 1")
        })
    });
    e
}

/// GET `path` as JSON until `ready` holds (60 s at most).
fn json_until(e: &Exporter, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let got = http_get(e.port, path)
            .filter(|(c, _)| *c == 200)
            .and_then(|(_, b)| {
                serde_json::from_str::<Value>(&b)
                    .or_else(|_| serde_json::from_slice(&dechunk(b.as_bytes())))
                    .ok()
            });
        if let Some(v) = got.filter(|v| ready(v)) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{path}: not ready after 60 s: {:?}\nexporter stderr:\n{}",
            http_get(e.port, path),
            e.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fixture's record among `records` (other processes' are skipped).
fn ours(records: &Value) -> Option<&Value> {
    by_comm(records, "origins")
}

fn by_comm<'a>(records: &'a Value, comm: &str) -> Option<&'a Value> {
    records.as_array()?.iter().find(|r| r["comm"] == comm)
}

fn frames(record: &Value) -> Vec<Value> {
    record["stack"]["frames"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The frame naming `function`, asserted to carry file:line.
fn named<'a>(fs: &'a [Value], function: &str) -> &'a Value {
    let f = named_in(fs, function, "origins.c");
    assert!(f["build_id"].as_str().is_some_and(|b| !b.is_empty()), "{f}");
    f
}

/// The frame naming `function`, asserted to carry `file`:line and a file
/// offset.
fn named_in<'a>(fs: &'a [Value], function: &str, file: &str) -> &'a Value {
    let f = fs
        .iter()
        .find(|f| f["function"] == function)
        .unwrap_or_else(|| panic!("no frame names {function}: {fs:#?}"));
    assert_eq!(f["file"], file, "{f}");
    assert!(f["line"].as_u64().is_some_and(|l| l > 0), "{f}");
    assert!(f["file_offset"].as_u64().is_some(), "{f}");
    f
}

/// No runtime address anywhere in an origin: frames carry only build id,
/// file offset, binary path and names.
fn no_addresses(origin: &Value) {
    let s = origin.to_string();
    for key in ["\"ip\"", "\"addr\"", "\"address\"", "file_ptr", "\"ips\""] {
        assert!(!s.contains(key), "{key} served: {s}");
    }
}

fn explain(e: &Exporter, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["explain", "--from", &format!("http://127.0.0.1:{}", e.port)])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "explain: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn metric(e: &Exporter, line_start: &str) -> f64 {
    let (_, body) = http_get(e.port, "/metrics").unwrap();
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in the scrape"))
}

#[test]
fn names_survive_the_process_exit_and_the_binary_deletion() {
    let e = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), false);
    let pins = Pins::new("named");
    let (map, prog, link) = run_all(fixture(&bin, &pins));
    std::fs::remove_file(&bin).unwrap();

    // Other BPF tools on the host take files of every map too: the
    // fixture's own records are told by their comm.
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        let o = &v["maps"][0]["origin"];
        !o["created"].is_null() && ours(&o["files_taken"]).is_some()
    });
    let m = &doc["maps"][0];
    let origin = &m["origin"];
    no_addresses(origin);
    let created = &origin["created"];
    assert_eq!(created["command"], "map_create");
    assert_eq!(created["comm"], "origins");
    let fs = frames(created);
    let f = named(&fs, "origin_make_map");
    assert_eq!(
        f["binary"],
        bin.to_str().unwrap(),
        "the path the process mapped"
    );
    named(&fs, "main");
    assert_eq!(created["stack"]["symbolized"], true);

    let pin = m["holders"]["pin"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["path"]
                .as_str()
                .is_some_and(|x| pins.0.ends_with(x.trim_start_matches('/')))
        })
        .unwrap_or_else(|| panic!("pin holder missing: {}", m["holders"]["pin"]));
    let pinned = &pin["pinned_at"][0];
    assert_eq!(pinned["command"], "obj_pin");
    assert_eq!(pinned["path"], pins.0.to_str().unwrap());
    named(&frames(pinned), "origin_pin");

    let taken = ours(&origin["files_taken"]).unwrap();
    assert_eq!(taken["command"], "map_get_fd_by_id");
    named(&frames(taken), "origin_take_fd");

    let doc = json_until(&e, &format!("/api/v1/programs/{prog}"), |v| {
        !v["programs"][0]["origin"]["created"].is_null()
    });
    let loaded = &doc["programs"][0]["origin"]["created"];
    assert_eq!(loaded["command"], "prog_load");
    named(&frames(loaded), "origin_load_prog");
    let prog_pin = format!("{}_prog", pins.0.to_str().unwrap());
    let pinned = doc["programs"][0]["holders"]["pin"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["pinned_at"].as_array()?.first())
        .unwrap_or_else(|| panic!("no program pin with pinned_at: {}", doc["programs"][0]));
    assert_eq!(pinned["command"], "obj_pin");
    assert_eq!(pinned["path"], prog_pin.as_str());
    named(&frames(pinned), "origin_pin");
    // The program's file taken by id, though that file is gone with the
    // process.
    let doc = json_until(&e, &format!("/api/v1/programs/{prog}"), |v| {
        ours(&v["programs"][0]["origin"]["files_taken"]).is_some()
    });
    let taken = ours(&doc["programs"][0]["origin"]["files_taken"]).unwrap();
    assert_eq!(taken["command"], "prog_get_fd_by_id");
    named(&frames(taken), "origin_take_prog_fd");

    // The link: created (BPF_LINK_CREATE) and pinned from known functions.
    // (Each record is named on its own: the pin's may come after the
    // creation's.)
    let doc = json_until(&e, &format!("/api/v1/links/{link}"), |v| {
        let l = &v["links"][0];
        !l["origin"]["created"].is_null()
            && l["holders"]["pin"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["pinned_at"].as_array().is_some_and(|a| !a.is_empty()))
            })
    });
    let l = &doc["links"][0];
    no_addresses(&l["origin"]);
    let created = &l["origin"]["created"];
    assert_eq!(created["command"], "link_create");
    named(&frames(created), "origin_make_link");
    let link_pin = format!("{}_link", pins.0.to_str().unwrap());
    let pinned = l["holders"]["pin"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["pinned_at"].as_array()?.first())
        .unwrap_or_else(|| panic!("no link pin with pinned_at: {l}"));
    assert_eq!(pinned["path"], link_pin.as_str());
    named(&frames(pinned), "origin_pin");

    let text = explain(&e, &["--id", &map.to_string()]);
    for want in [
        "created at: bpf(map_create)",
        "origin_make_map (origins.c:",
        "pinned at: bpf(obj_pin)",
        "origin_pin (origins.c:",
    ] {
        assert!(text.contains(want), "explain lacks {want:?}:\n{text}");
    }
    let text = explain(&e, &["--prog", &prog.to_string()]);
    assert!(
        text.contains("loaded at: bpf(prog_load)") && text.contains("origin_load_prog (origins.c:"),
        "{text}"
    );
    assert!(metric(&e, "bpfmap_origin_captures_total{cmd=\"map_create\"}") >= 1.0);
}

/// Run the fixture's `deep` mode (a map made from `depth` + 1 frames of
/// `origin_deep`, each with `pad` bytes of stack) and check that `e` names
/// every one of those frames, in order, with the lines they return to.
/// The frames must take more than `min_span` bytes of stack.
fn check_deep_walk(e: &Exporter, bin: &Path, depth: usize, pad: usize, min_span: u64) {
    let pins = Pins::new(&format!("deep{pad}"));
    let out = Command::new(bin)
        .args(["deep", &depth.to_string(), &pad.to_string()])
        .arg(&pins.0)
        .arg("1000")
        .output()
        .expect("running the fixture");
    assert!(out.status.success(), "fixture failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let w: Vec<&str> = s.split_whitespace().collect();
    assert!(w.len() == 4 && w[0] == "map" && w[2] == "span", "{s:?}");
    let (map, span): (u32, u64) = (w[1].parse().unwrap(), w[3].parse().unwrap());
    assert!(
        span > min_span,
        "the frames take {span} bytes, not more than {min_span}"
    );

    let doc = json_until(e, &format!("/api/v1/maps/{map}"), |v| {
        !v["maps"][0]["origin"]["created"].is_null()
    });
    let created = &doc["maps"][0]["origin"]["created"];
    assert_eq!(created["stack"]["truncated"], false, "{created}");
    let fs = frames(created);
    let names: Vec<&str> = fs
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?"))
        .collect();
    // Innermost first: origin_make_map, every call of origin_deep, main.
    let at = names
        .iter()
        .position(|n| *n == "origin_make_map")
        .unwrap_or_else(|| panic!("no origin_make_map frame: {names:?}"));
    assert!(fs.len() > at + 2 + depth, "{names:?}");
    let deep = &fs[at + 1..at + 2 + depth];
    assert!(
        deep.iter().all(|f| f["function"] == "origin_deep"),
        "pad {pad}: {names:?}"
    );
    assert_eq!(names[at + 2 + depth], "main", "pad {pad}: {names:?}");
    // The innermost call returns to where it makes the map, every other
    // one to where it calls itself.
    let lines: Vec<u64> = deep.iter().map(|f| f["line"].as_u64().unwrap()).collect();
    assert!(
        lines[0] != lines[1] && lines[1..].iter().all(|l| *l == lines[1]),
        "pad {pad}: {lines:?}"
    );
}

/// The walk copies the stack a window at a time: frames far apart (one
/// read each, over five pages) and frames close together (several in one
/// window, windows cut at page ends) are both walked whole.
#[test]
fn a_stack_over_several_pages_is_walked_frame_by_frame() {
    let e = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), false);
    check_deep_walk(&e, &bin, 30, 600, 4 * 4096);
    check_deep_walk(&e, &bin, 40, 100, 4096);
}

#[test]
fn a_go_program_is_named_after_it_exits_and_its_binary_is_deleted() {
    let e = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go(dir.path());
    // Go's linker writes no GNU build id unless asked (`-B`), as Go agents
    // ship: frames are then kept as binary path and file offset.
    let build_id = has_gnu_build_id(&bin);
    let pins = Pins::new("go");
    let (map, prog) = run_go(&bin, &pins, 1000);
    std::fs::remove_file(&bin).unwrap();

    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        let o = &v["maps"][0]["origin"];
        !o["created"].is_null() && by_comm(&o["files_taken"], "origins_go").is_some()
    });
    let m = &doc["maps"][0];
    let origin = &m["origin"];
    no_addresses(origin);
    let created = &origin["created"];
    assert_eq!(created["command"], "map_create");
    assert_eq!(created["comm"], "origins_go");
    assert_eq!(created["stack"]["symbolized"], true, "{created}");
    assert_eq!(created["stack"]["truncated"], false, "{created}");
    let fs = frames(created);
    let f = named_in(&fs, "main.originMakeMap", "origins.go");
    assert_eq!(
        f["binary"],
        bin.to_str().unwrap(),
        "the path the process mapped"
    );
    assert_eq!(f["build_id"].is_null(), !build_id, "{f}");
    // The whole chain walks: from the syscall wrapper up to the runtime's
    // entry of main.
    named_in(&fs, "main.main", "origins.go");
    assert!(
        fs.iter().any(|f| f["function"] == "runtime.main"),
        "the walk stops before runtime.main: {fs:#?}"
    );

    let pin = m["holders"]["pin"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["pinned_at"].as_array()?.first())
        .unwrap_or_else(|| panic!("no pin with pinned_at: {}", m["holders"]["pin"]));
    assert_eq!(pin["path"], pins.0.to_str().unwrap());
    named_in(&frames(pin), "main.originPin", "origins.go");
    let taken = by_comm(&origin["files_taken"], "origins_go").unwrap();
    assert_eq!(taken["command"], "map_get_fd_by_id");
    named_in(&frames(taken), "main.originTakeFd", "origins.go");

    let doc = json_until(&e, &format!("/api/v1/programs/{prog}"), |v| {
        !v["programs"][0]["origin"]["created"].is_null()
    });
    let loaded = &doc["programs"][0]["origin"]["created"];
    assert_eq!(loaded["command"], "prog_load");
    named_in(&frames(loaded), "main.originLoadProg", "origins.go");

    let text = explain(&e, &["--id", &map.to_string()]);
    for want in [
        "created at: bpf(map_create)",
        "main.originMakeMap (origins.go:",
        "pinned at: bpf(obj_pin)",
        "main.originPin (origins.go:",
    ] {
        assert!(text.contains(want), "explain lacks {want:?}:\n{text}");
    }
}

#[test]
fn a_go_program_gone_before_its_memory_map_was_read_says_its_frames_cannot_be_placed() {
    // As below: the records wait 4 s in the ring, and the program exits at
    // once. Without a GNU build id the kernel could not place its frames.
    let e = start_reading_late();
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go(dir.path());
    assert!(
        !has_gnu_build_id(&bin),
        "this Go toolchain writes a GNU build id"
    );
    let pins = Pins::new("go_gone");
    let (map, _) = run_go(&bin, &pins, 0);
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        !v["maps"][0]["origin"]["created"].is_null()
    });
    let created = &doc["maps"][0]["origin"]["created"];
    assert_eq!(created["comm"], "origins_go", "{created}");
    let note = created["stack"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("no GNU build id") && note.contains("frames cannot be placed"),
        "{created}"
    );
    for f in frames(created) {
        assert!(
            f["function"].is_null() && f["file_offset"].is_null(),
            "placed: {f}"
        );
    }
    let text = explain(&e, &["--id", &map.to_string()]);
    assert!(text.contains("cannot be placed"), "{text}");
}

#[test]
fn a_binary_deleted_before_it_could_be_read_keeps_build_ids_and_offsets_with_a_note() {
    // Records wait in the ring 4 s before each read: the fixture exits and
    // its binary is deleted before the reader sees its records.
    let e = start_reading_late();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), false);
    let pins = Pins::new("deleted_first");
    let mut c = Command::new(&bin);
    c.arg(&pins.0).arg("0");
    let (map, _) = run(c);
    std::fs::remove_file(&bin).unwrap();
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        !v["maps"][0]["origin"]["created"].is_null()
    });
    let created = &doc["maps"][0]["origin"]["created"];
    assert_eq!(created["comm"], "origins", "{created}");
    let stack = &created["stack"];
    let note = stack["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("the process exited before"), "{stack}");
    let fs = frames(created);
    // The fixture's own frames: its build id and an offset each, no name
    // (no binary of that build was ever read).
    let own: Vec<&Value> = fs
        .iter()
        .filter(|f| {
            f["binary"].is_null() || f["binary"].as_str().is_some_and(|b| b.contains("origins"))
        })
        .filter(|f| !f["build_id"].is_null())
        .collect();
    assert!(!own.is_empty(), "no frame keeps a build id: {stack}");
    for f in &own {
        assert!(f["file_offset"].as_u64().is_some(), "{f}");
        assert!(
            f["function"].as_str() != Some("origin_make_map"),
            "named without its binary: {f}"
        );
    }
    assert!(metric(&e, "bpfmap_origin_process_gone_total") >= 1.0);
}

#[test]
fn a_map_older_than_the_exporter_says_so() {
    require_root();
    let old = map(libbpf_rs::MapType::Array, "origins_old", 4, 4, 1, 0);
    let id = id_of(&old);
    let e = start(&[]);
    let doc = json_until(&e, &format!("/api/v1/maps/{id}"), |v| {
        v["maps"][0].is_object()
    });
    let o = &doc["maps"][0]["origin"];
    assert!(o["created"].is_null(), "{o}");
    assert_eq!(o["created_unknown"], "created before the exporter started");
    let text = explain(&e, &["--id", &id.to_string()]);
    assert!(
        text.contains("created at: unknown (created before the exporter started)"),
        "{text}"
    );
}

#[test]
fn a_stripped_binary_keeps_raw_frames_with_a_note() {
    let e = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), true);
    let pins = Pins::new("stripped");
    let (map, _) = run(fixture(&bin, &pins));
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        !v["maps"][0]["origin"]["created"].is_null()
    });
    let created = &doc["maps"][0]["origin"]["created"];
    let fs = frames(created);
    let own: Vec<&Value> = fs
        .iter()
        .filter(|f| f["binary"] == bin.to_str().unwrap())
        .collect();
    assert!(own.len() >= 2, "the fixture's frames are kept: {fs:#?}");
    for f in &own {
        assert!(f["function"].is_null(), "a stripped binary named: {f}");
        assert!(f["build_id"].as_str().is_some_and(|b| b.len() == 40), "{f}");
        assert!(f["file_offset"].as_u64().is_some(), "{f}");
    }
    let note = created["stack"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("have no name"), "note: {note:?}");
    let text = explain(&e, &["--id", &map.to_string()]);
    assert!(
        text.contains("#1 ?? in ") && text.contains("note: "),
        "{text}"
    );
}

#[test]
fn a_full_store_evicts_counts_and_leaves_the_rest_alone() {
    // Two distinct stacks at most: the fixture's run alone makes five (map,
    // program, two pins, the fd by id), and other tools on the host may add
    // theirs, so which records survive is not known; each that does is
    // whole.
    let e = start(&["--collector.origins.max-stacks=2"]);
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), false);
    let pins = Pins::new("full");
    let (map, _) = run(fixture(&bin, &pins));
    let t = Instant::now();
    while metric(&e, "bpfmap_origin_store_evictions_total") < 3.0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no evictions counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&e, "bpfmap_origin_store_stacks") <= 2.0);
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        v["maps"][0].is_object()
    });
    let m = &doc["maps"][0];
    let o = &m["origin"];
    let mut kept = 0;
    for (list, function) in [
        (&o["files_taken"], "origin_take_fd"),
        (&o["pinned"], "origin_pin"),
    ] {
        for r in list.as_array().into_iter().flatten() {
            if r["comm"] == "origins" {
                named(&frames(r), function);
                kept += 1;
            }
        }
    }
    if o["created"]["comm"] == "origins" {
        named(&frames(&o["created"]), "origin_make_map");
        kept += 1;
    }
    assert!(
        kept <= 2,
        "more of the fixture's stacks than the bound: {o}"
    );
    // Nothing else disturbed: the map, its pin and its creator are there.
    assert_eq!(m["creator"]["process"]["comm"], "origins", "{m}");
    assert_eq!(m["holders"]["pin"].as_array().map(Vec::len), Some(1));
    assert_eq!(m["unexplained"], 0);
    assert_eq!(
        metric(
            &e,
            "bpfmap_scrape_collector_success{collector=\"lifecycle\"}"
        ),
        1.0
    );
}

#[test]
fn a_process_in_another_mount_namespace_is_named_from_its_own_binary() {
    let e = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), false);
    let pins = Pins::new("mntns");
    // A private tmpfs over a directory only that namespace sees: the
    // binary's path does not exist on the host.
    let private = tempfile::tempdir().unwrap();
    let inner = private.path().join("hidden-origins");
    let script = format!(
        "mount -t tmpfs none {p} && cp {b} {i} && exec {i} {pin} 1000",
        p = private.path().display(),
        b = built.display(),
        i = inner.display(),
        pin = pins.0.display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let (map, _) = run(c);
    assert!(
        !inner.exists(),
        "the binary is visible outside its namespace"
    );
    std::fs::remove_file(&built).unwrap();
    let doc = json_until(&e, &format!("/api/v1/maps/{map}"), |v| {
        !v["maps"][0]["origin"]["created"].is_null()
    });
    let fs = frames(&doc["maps"][0]["origin"]["created"]);
    let f = named(&fs, "origin_make_map");
    assert_eq!(f["binary"], inner.to_str().unwrap(), "{f}");
}
