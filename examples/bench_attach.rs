//! The attachment parts' cost (root): `cgroups`, `map_programs` and
//! `program_targets`, over C test cgroups in the cgroup v2 hierarchy (every
//! tenth with a cgroup_skb program attached without a link) and D devmap
//! entries with a program, for R censuses. Prints each part's median and
//! maximum seconds (from the census report) and the whole census's median
//! with and without the three parts.
//!   bench_attach [C [D [R]]]      (default 2000 2000 21)
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bpfmap_exporter::census::{Census, CensusOpts, Parts};
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

fn load(ty: u32, attach: u32, ret: i32) -> OwnedFd {
    let mut insns = [
        libbpf_sys::bpf_insn::default(),
        libbpf_sys::bpf_insn::default(),
    ];
    insns[0].code = 0xb7;
    insns[0].imm = ret;
    insns[1].code = 0x95;
    let lic = std::ffi::CString::new("GPL").unwrap();
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        ..Default::default()
    };
    // SAFETY: insns, lic and opts outlive the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            ty,
            std::ptr::null(),
            lic.as_ptr(),
            insns.as_ptr(),
            2,
            &mut opts,
        )
    };
    assert!(
        fd >= 0,
        "bpf_prog_load: {}",
        std::io::Error::from_raw_os_error(-fd)
    );
    // SAFETY: a fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (ncg, ndev, rounds) = (arg(1, 2000), arg(2, 2000), arg(3, 21));
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = bpfmap_exporter::census::attach::hierarchy_root(
        &bpfmap_exporter::census::attach::cgroup2_mounts(&mi),
    )
    .expect("a cgroup v2 hierarchy");
    let base = root.join(format!("bench-attach-{}", std::process::id()));
    std::fs::create_dir(&base).unwrap();
    let cg_prog = load(
        libbpf_sys::BPF_PROG_TYPE_CGROUP_SKB,
        libbpf_sys::BPF_CGROUP_INET_INGRESS,
        1,
    );
    let mut dirs = Vec::new();
    for i in 0..ncg {
        // Two levels: 50 per parent.
        let parent = base.join(format!("p{}", i / 50));
        let _ = std::fs::create_dir(&parent);
        let d = parent.join(format!("c{i}"));
        std::fs::create_dir(&d).unwrap();
        if i % 10 == 0 {
            let f = std::fs::File::open(&d).unwrap();
            // SAFETY: valid fds.
            let rc = unsafe {
                libbpf_sys::bpf_prog_attach(
                    cg_prog.as_raw_fd(),
                    f.as_raw_fd(),
                    libbpf_sys::BPF_CGROUP_INET_INGRESS,
                    0,
                )
            };
            assert_eq!(rc, 0, "attach");
        }
        dirs.push(d);
    }
    let xdp = load(libbpf_sys::BPF_PROG_TYPE_XDP, libbpf_sys::BPF_XDP_DEVMAP, 2);
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let dm = MapHandle::create(
        MapType::DevmapHash,
        Some("bench_devmap"),
        4,
        8,
        ndev.max(1) as u32,
        &opts,
    )
    .expect("devmap_hash");
    let mut v = 1u32.to_ne_bytes().to_vec();
    v.extend_from_slice(&xdp.as_raw_fd().to_ne_bytes());
    for k in 0..ndev as u32 {
        dm.update(&k.to_ne_bytes(), &v, MapFlags::ANY)
            .expect("devmap entry");
    }
    let parts = ["cgroups", "map_programs", "program_targets"];
    let mut with = Census::load(CensusOpts::default()).expect("census");
    let mut without = Census::load(CensusOpts {
        parts: Parts::without(&parts),
        ..Default::default()
    })
    .expect("census");
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
    let (mut t_with, mut t_without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let (s, report) = with.take(&[]);
        t_with.push(t.elapsed().as_secs_f64());
        for o in &report.outcomes {
            if let Some(i) = parts.iter().position(|p| *p == o.name) {
                assert!(o.ok, "{}: {:?}", o.name, o.error);
                per[i].push(o.seconds);
            }
        }
        assert!(s.attachments.len() >= ncg / 10 + ndev);
        let t = std::time::Instant::now();
        let _ = without.take(&[]);
        t_without.push(t.elapsed().as_secs_f64());
    }
    println!("{ncg} cgroups ({} with a program), {ndev} devmap entries with a program, {rounds} censuses", ncg.div_ceil(10));
    println!("| part | median ms | max ms |\n|---|---|---|");
    for (p, v) in parts.iter().zip(per.iter_mut()) {
        let max = v.iter().copied().fold(0.0, f64::max);
        println!("| {p} | {:.2} | {:.2} |", median(v) * 1e3, max * 1e3);
    }
    println!(
        "| census, all parts | {:.2} | |\n| census, without the three | {:.2} | |",
        median(&mut t_with) * 1e3,
        median(&mut t_without) * 1e3
    );
    drop(dm);
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    for i in (0..ncg).step_by(50) {
        let _ = std::fs::remove_dir(base.join(format!("p{}", i / 50)));
    }
    let _ = std::fs::remove_dir(&base);
}
