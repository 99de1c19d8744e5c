//! Compiles every `bpf/<name>.bpf.c` into a libbpf-rs skeleton `<name>.skel.rs` in OUT_DIR.
//! The vendored `bpf/vmlinux.h` means no kernel headers are needed to build.
use std::{env, ffi::OsStr, fs, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=.git/HEAD");
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BPFMAP_REVISION={rev}");
    let mut sources: Vec<PathBuf> = fs::read_dir("bpf")
        .expect("bpf/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("file name")
            .to_string();
        let skel = out.join(format!("{stem}.skel.rs"));
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
