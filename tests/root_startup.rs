//! The exporter started as the DaemonSet starts it: in a fresh memory
//! cgroup limited to the DaemonSet's memory limit. It must serve, and its
//! start-up peak (user plus kernel memory, which includes what the verifier
//! and the maps charge on kernels that account them) must leave the limit
//! at least 2x headroom. A collector whose maps the kernel cannot allocate
//! under that limit (a real ENOMEM) is turned off alone, and says why.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_bpfmap-exporter");
const MEMCG_RUN: &str = "scripts/memcg-run.sh";

/// `resources.limits.memory` of deploy/daemonset.yaml, in bytes.
fn daemonset_memory_limit() -> u64 {
    let y = std::fs::read_to_string("deploy/daemonset.yaml").expect("deploy/daemonset.yaml");
    let limits = &y[y.find("limits:").expect("a limits: block")..];
    let v = limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("limits.memory")
        .trim();
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "" => 1,
        other => panic!("limits.memory unit {other} not understood"),
    }
}

struct Started {
    script: Child,
    port: u16,
    peak_file: PathBuf,
    stderr_file: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The exporter under scripts/memcg-run.sh with `limit`, serving /healthz.
fn start_in_memcg(limit: u64, env: &[(&str, &str)], extra: &[&str]) -> Started {
    let dir = std::env::temp_dir().join(format!("bpfmap-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let peak_file = dir.join("peak");
    let stderr_file = dir.join("stderr");
    let port = free_port();
    let script = Command::new(MEMCG_RUN)
        .arg("--limit")
        .arg(limit.to_string())
        .arg("--out")
        .arg(&peak_file)
        .arg("--")
        .arg(BIN)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .expect("scripts/memcg-run.sh runs (tests run from the checkout)");
    let mut s = Started {
        script,
        port,
        peak_file,
        stderr_file,
        _dir: TempDir(dir),
    };
    let t = Instant::now();
    loop {
        if let Some((200, _)) = http_get(port, "/healthz") {
            return s;
        }
        if let Some(st) = s.script.try_wait().unwrap() {
            panic!(
                "the exporter exited ({st}) before /healthz answered, under a {limit}-byte memory limit: {}; {}",
                std::fs::read_to_string(&s.peak_file).unwrap_or_default(),
                std::fs::read_to_string(&s.stderr_file).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "/healthz never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM the exporter, wait for the script, and return its peak line's
/// fields and the exporter's stderr.
fn stop(mut s: Started) -> (std::collections::HashMap<String, String>, String) {
    let st = Command::new("pkill")
        .args(["-TERM", "-P", &s.script.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "no exporter under memcg-run.sh to stop");
    let st = s.script.wait().unwrap();
    let line = std::fs::read_to_string(&s.peak_file).unwrap();
    let stderr = std::fs::read_to_string(&s.stderr_file).unwrap();
    assert!(
        st.success(),
        "the exporter did not exit cleanly ({st}): {line}; {stderr}"
    );
    let fields = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (fields, stderr)
}

fn metric_line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(series))
}

#[test]
fn starts_and_serves_under_the_daemonsets_memory_limit_with_2x_headroom() {
    require_root();
    ensure_bpffs();
    let limit = daemonset_memory_limit();
    let s = start_in_memcg(limit, &[], &[]);
    let (code, body) = http_get(s.port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    assert_eq!(
        metric_line(&body, "bpfmap_scrape_collector_success{collector=\"maps\"}"),
        Some("bpfmap_scrape_collector_success{collector=\"maps\"} 1"),
        "the census ran"
    );
    assert!(
        !body.contains("bpfmap_collector_unavailable"),
        "every collector loaded under the limit: {:?}",
        body.lines()
            .filter(|l| l.contains("unavailable"))
            .collect::<Vec<_>>()
    );
    let (peak, _) = stop(s);
    let bytes: u64 = peak["memcg_peak_bytes"].parse().unwrap();
    eprintln!(
        "start-up and one scrape: peak {:.1} MiB ({}), kernel memory {} under a {} MiB limit",
        bytes as f64 / 1048576.0,
        peak["peak_source"],
        peak["memcg_kmem_peak_bytes"],
        limit >> 20
    );
    assert!(
        bytes > 0 && bytes * 2 <= limit,
        "start-up peak {bytes} bytes leaves the DaemonSet's {limit}-byte limit less than 2x headroom"
    );
}

/// Whether BPF maps are charged to their creator's memory cgroup here.
/// Proves it either way: a 64 MiB array map is created from a cgroup
/// limited to 32 MiB. Charged (5.11+), the kernel refuses it with ENOMEM
/// (map memory is allocated with __GFP_RETRY_MAYFAIL: no OOM kill);
/// uncharged (5.10: RLIMIT_MEMLOCK instead), it is created.
fn maps_charged_to_memcg() -> bool {
    let pin = Path::new("/sys/fs/bpf").join(format!("bpfmap_t_memcg_{}", std::process::id()));
    let out = Command::new(MEMCG_RUN)
        .args([
            "--limit",
            &(32u64 << 20).to_string(),
            "--",
            "bpftool",
            "map",
            "create",
        ])
        .arg(&pin)
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "4096",
            "entries",
            "16384",
            "name",
            "t_memcg_big",
        ])
        .output()
        .unwrap();
    let created = out.status.success();
    let _ = std::fs::remove_file(&pin);
    let err = String::from_utf8_lossy(&out.stderr);
    if !created {
        assert!(
            err.contains("Cannot allocate memory") || err.contains("ENOMEM"),
            "the 64 MiB map failed for another reason than memory: {err}"
        );
    }
    !created
}

#[test]
fn a_collector_whose_maps_do_not_fit_is_turned_off_alone() {
    require_root();
    ensure_bpffs();
    let charged = maps_charged_to_memcg();
    if !kernel_at_least(5, 11) {
        // The absence, proven above: a map bigger than the limit was
        // created, so no memory limit can make a load fail with ENOMEM.
        assert!(
            !charged,
            "kernel before 5.11 charged a map to its memory cgroup"
        );
        eprintln!("kernel before 5.11: BPF memory is not charged to memory cgroups (proven); no ENOMEM to degrade on");
        return;
    }
    assert!(
        charged,
        "a 5.11+ kernel did not charge a map to its memory cgroup"
    );
    let limit = daemonset_memory_limit();
    // 2^27 lifecycle counter slots: the slots hash alone needs 2 GiB of
    // buckets, which the kernel cannot charge under the limit.
    let s = start_in_memcg(
        limit,
        &[("BPFMAP_TEST_LIFECYCLE_SLOTS", &(1u32 << 27).to_string())],
        &[],
    );
    let (code, body) = http_get(s.port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    for (series, want) in [
        (
            "bpfmap_collector_unavailable{collector=\"lifecycle\",reason=\"out_of_memory\"}",
            Some("1"),
        ),
        (
            "bpfmap_scrape_collector_success{collector=\"lifecycle\"}",
            Some("0"),
        ),
        (
            "bpfmap_scrape_collector_success{collector=\"maps\"}",
            Some("1"),
        ),
        (
            "bpfmap_scrape_collector_success{collector=\"files\"}",
            Some("1"),
        ),
        (
            "bpfmap_scrape_collector_success{collector=\"pins\"}",
            Some("1"),
        ),
        ("bpfmap_collector_unavailable{collector=\"maps\"", None),
    ] {
        let got = metric_line(&body, series).map(|l| l.rsplit(' ').next().unwrap());
        assert_eq!(got, want, "{series}");
    }
    assert!(
        body.contains("\nbpfmap_exporter_maps "),
        "the census still publishes (its own maps at least)"
    );
    let (_, stderr) = stop(s);
    assert!(
        stderr.contains("lifecycle collector unavailable") && stderr.contains("ran out of memory"),
        "the log names the collector and the cause: {stderr}"
    );
}
