//! Compiles every `bpf/<name>.bpf.c` into a libbpf-rs skeleton `<name>.skel.rs`
//! in OUT_DIR (and the benchmark's `bpf/bench/*.bpf.c` into `bench_*`, the
//! root tests' `bpf/test/*.bpf.c` into `test_*`).
//! The vendored `bpf/vmlinux.h` means no kernel headers are needed to build.
use std::{env, ffi::OsStr, fs, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    println!("cargo:rerun-if-changed=bpf");
    watch_revision_inputs();
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BPFMAP_REVISION={rev}");
    // The exporter's programs: bpf/<name>.bpf.c -> <name>.skel.rs. The
    // benchmark's own programs: bpf/bench/<name>.bpf.c -> bench_<name>.skel.rs,
    // included only by examples. The root tests' own programs:
    // bpf/test/<name>.bpf.c -> test_<name>.skel.rs, included only by tests.
    for (dir, prefix) in [("bpf", ""), ("bpf/bench", "bench_"), ("bpf/test", "test_")] {
        for src in bpf_sources(dir) {
            let stem = src
                .file_name()
                .and_then(OsStr::to_str)
                .and_then(|n| n.strip_suffix(".bpf.c"))
                .expect("file name")
                .to_string();
            let skel = out.join(format!("{prefix}{stem}.skel.rs"));
            SkeletonBuilder::new()
                .source(&src)
                .clang_args([
                    OsStr::new("-Ibpf"),
                    OsStr::new("-Wall"),
                    OsStr::new("-Wno-unused-function"),
                ])
                .build_and_generate(&skel)
                .unwrap_or_else(|e| panic!("building BPF skeleton for {}: {e:#}", src.display()));
            println!("cargo:rerun-if-changed={}", src.display());
        }
    }
}

/// The `*.bpf.c` files directly in `dir`, sorted.
fn bpf_sources(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}/: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    v.sort();
    v
}

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The revision changes when HEAD moves to another ref or when the ref it
/// names moves (a commit writes the loose ref; `git gc` moves it into
/// packed-refs), so all three are build inputs. Outside a git checkout there
/// is nothing to watch and the revision is "unknown".
fn watch_revision_inputs() {
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) else {
        return;
    };
    let mut inputs = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        inputs.push(git_dir.join(r));
    }
    // A missing input would make cargo rerun this script on every build.
    for p in inputs.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
