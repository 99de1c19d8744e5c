//! The lifecycle benchmark's named baseline: empty twins of the lifecycle
//! attach points (bpf/bench/empty.bpf.c, a skeleton of their own that the
//! exporter does not contain), to measure in the same run what merely being
//! attached at a point costs (the kernel's dispatch, and BPF stats when on),
//! next to what our programs cost there.
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, Skel};
use libbpf_rs::Link;

use bpfmap_exporter::sys;

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/bench_empty.skel.rs"));
}
use skel::{EmptySkel, EmptySkelBuilder};

/// An empty program: (program name, mechanism, attach point).
pub struct EmptyProg {
    pub prog: &'static str,
    pub mechanism: &'static str,
    pub point: &'static str,
}

/// Every empty twin, one per attach mechanism the lifecycle programs use.
pub const EMPTY_PROGS: &[EmptyProg] = &[
    EmptyProg {
        prog: "bench_empty_fexit",
        mechanism: "fexit",
        point: "__x64_sys_bpf",
    },
    EmptyProg {
        prog: "bench_empty_tp",
        mechanism: "tracepoint",
        point: "syscalls:sys_exit_bpf",
    },
    EmptyProg {
        prog: "bench_empty_btf",
        mechanism: "tp_btf",
        point: "tp_btf/sys_exit",
    },
    EmptyProg {
        prog: "bench_empty_raw",
        mechanism: "raw_tp",
        point: "raw_tp/sys_exit",
    },
    EmptyProg {
        prog: "bench_empty_fentry",
        mechanism: "fentry",
        point: "__x64_sys_bpf",
    },
    EmptyProg {
        prog: "bench_empty_kprobe",
        mechanism: "kprobe",
        point: "__x64_sys_bpf",
    },
    EmptyProg {
        prog: "bench_empty_kretprobe",
        mechanism: "kretprobe",
        point: "__x64_sys_bpf",
    },
];

/// One empty program, loaded and attached.
pub struct Floor {
    skel: EmptySkel<'static>,
    _link: Link,
    pub prog: &'static EmptyProg,
}

impl Floor {
    /// Load and attach the empty twin named `prog` (one of EMPTY_PROGS).
    pub fn load(prog: &str, btf_path: Option<PathBuf>) -> anyhow::Result<Floor> {
        let def = EMPTY_PROGS
            .iter()
            .find(|e| e.prog == prog)
            .with_context(|| format!("{prog} is not an empty benchmark program"))?;
        let mut open = bpfmap_exporter::bpf::load::open(
            EmptySkelBuilder::default(),
            btf_path.as_deref(),
            "benchmark floor",
        )?;
        for mut p in open.open_object_mut().progs_mut() {
            let load = p.name().to_string_lossy() == def.prog;
            p.set_autoload(load);
        }
        let skel = open
            .load()
            .with_context(|| format!("loading {}", def.prog))?;
        let link = skel
            .object()
            .progs_mut()
            .find(|p| p.name().to_string_lossy() == def.prog)
            .context("program missing after load")?
            .attach()
            .with_context(|| format!("attaching {} at {}", def.prog, def.point))?;
        Ok(Floor {
            skel,
            _link: link,
            prog: def,
        })
    }

    /// (run_cnt, run_time_ns) of the empty program (kernel BPF stats).
    pub fn run_stats(&self) -> anyhow::Result<(u64, u64)> {
        let p = self
            .skel
            .object()
            .progs()
            .find(|p| p.name().to_string_lossy() == self.prog.prog)
            .context("program missing")?;
        Ok(sys::prog_run_stats(p.as_fd())?)
    }
}
