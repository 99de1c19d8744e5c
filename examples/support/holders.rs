//! Live maps for the benchmarks, held by child processes
//! (`bench_census --hold K FIRST`: create K maps named from `bench{FIRST}`,
//! say "ready", hold them until stdin closes), at most [`HOLD_PER_CHILD`]
//! each: a process may not hold 100,000 fds here (the hard RLIMIT_NOFILE is
//! 20,000 and raising it needs CAP_SYS_RESOURCE).
#![allow(dead_code)]
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const HOLD_PER_CHILD: usize = 15_000;

/// The holder children, killed on drop.
pub struct Holders {
    bench_census: PathBuf,
    children: Vec<(Child, usize)>,
}

impl Holders {
    /// No maps yet; `bench_census` is the binary the children run.
    pub fn new(bench_census: impl Into<PathBuf>) -> Holders {
        Holders {
            bench_census: bench_census.into(),
            children: Vec::new(),
        }
    }

    /// How many maps the children hold.
    pub fn held(&self) -> usize {
        self.children.iter().map(|(_, k)| k).sum()
    }

    /// Start children until they hold at least `n` maps.
    pub fn grow_to(&mut self, n: usize) {
        while self.held() < n {
            let k = (n - self.held()).min(HOLD_PER_CHILD);
            let mut c = Command::new(&self.bench_census)
                .args(["--hold", &k.to_string(), &self.held().to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawning a map holder");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
                &mut line,
            )
            .unwrap();
            assert_eq!(line.trim(), "ready", "map holder failed to create {k} maps");
            self.children.push((c, k));
        }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for (c, _) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (VmHWM:, VmRSS:), in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}
