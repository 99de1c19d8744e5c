//! Choosing attach points per probe from the running kernel, loading only
//! the chosen programs, and reporting what was attached where.
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// How a probe is attached (the `mode` label of `bpfmap_probe_attached`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Tracepoint,
    Census,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fentry => "fentry",
            Mode::Fexit => "fexit",
            Mode::Kprobe => "kprobe",
            Mode::Kretprobe => "kretprobe",
            Mode::Tracepoint => "tracepoint",
            Mode::Census => "census",
            Mode::None => "none",
        }
    }

    /// Program classes dropped one by one when a load fails.
    fn class(self) -> u8 {
        match self {
            Mode::Fentry | Mode::Fexit => 0,
            Mode::Kprobe | Mode::Kretprobe => 1,
            _ => 2,
        }
    }
}

/// One way to attach a probe.
#[derive(Debug, Clone)]
pub struct Cand {
    pub mode: Mode,
    /// Programs to load and attach (all must attach).
    pub progs: &'static [&'static str],
    /// Human-readable attach point (`point=` in --check, logs).
    pub point: &'static str,
}

#[derive(Debug, Clone)]
pub struct ProbeDef {
    pub name: &'static str,
    pub chain: Vec<Cand>,
}

/// What the kernel offers, read once at startup.
#[derive(Debug, Clone, Default)]
pub struct KernelCaps {
    /// FUNC names present in the kernel BTF (only the ones we ask about).
    pub btf_funcs: HashSet<String>,
    /// `btf_trace_sys_exit` exists (tp_btf/sys_exit).
    pub tp_btf_sys_exit: bool,
    /// A kprobe PMU exists (/sys/bus/event_source/devices/kprobe).
    pub kprobe_pmu: bool,
    /// Text symbols in /proc/kallsyms (only the ones we ask about).
    pub kallsyms: HashSet<String>,
    /// syscalls:sys_exit_bpf is readable in tracefs.
    pub tracefs_sys_exit_bpf: bool,
    /// bpf_task_pt_regs() exists (5.15+), needed by the classic tracepoint.
    pub task_pt_regs: bool,
    /// The bpf_rdonly_cast kfunc exists (6.2+): the creation path reads the
    /// new file and map with direct loads instead of probe reads.
    pub rdonly_cast: bool,
    /// `__x64_sys_bpf`'s first parameter is a pointer to a complete
    /// `struct pt_regs` in the kernel BTF. 5.10's BTF has only a forward
    /// declaration there, and the verifier refuses fexit programs that read
    /// it ("arg0 type FWD is not a struct"): fexit is then not even tried.
    pub sys_bpf_regs: bool,
}

/// Whether FUNC `name`'s first parameter is a pointer to a complete struct
/// (not a forward declaration) in `btf`: what a fentry/fexit program needs
/// to read the argument's fields.
pub fn first_param_is_struct(btf: &libbpf_rs::btf::Btf<'_>, name: &str) -> bool {
    use libbpf_rs::btf::types::{Func, FuncProto};
    use libbpf_rs::btf::{BtfKind, BtfType};
    let Some(func) = btf.type_by_name::<Func>(name) else {
        return false;
    };
    let Some(proto) = func.next_type().and_then(|t| FuncProto::try_from(t).ok()) else {
        return false;
    };
    let Some(param) = proto.get(0) else {
        return false;
    };
    let Some(ty) = btf.type_by_id::<BtfType<'_>>(param.ty) else {
        return false;
    };
    let ty = ty.skip_mods_and_typedefs();
    if ty.kind() != BtfKind::Ptr {
        return false;
    }
    ty.next_type()
        .map(|t| t.skip_mods_and_typedefs().kind() == BtfKind::Struct)
        .unwrap_or(false)
}

pub const INTERESTING_FUNCS: &[&str] = &[
    "map_create",
    "__x64_sys_bpf",
    "bpf_map_inc",
    "bpf_map_inc_with_uref",
    "__bpf_map_inc_not_zero",
    "bpf_map_inc_not_zero",
    "bpf_map_put",
    "bpf_map_put_with_uref",
    "bpf_task_pt_regs",
    "bpf_map_free_deferred",
];

impl KernelCaps {
    pub fn read(btf_path: &Path) -> anyhow::Result<KernelCaps> {
        use anyhow::Context;
        use libbpf_rs::btf::types::{Func, Typedef};
        let btf = libbpf_rs::btf::Btf::from_path(btf_path)
            .with_context(|| format!("reading BTF from {}", btf_path.display()))?;
        let btf_funcs = INTERESTING_FUNCS
            .iter()
            .filter(|f| btf.type_by_name::<Func>(f).is_some())
            .map(|f| f.to_string())
            .collect();
        let tp_btf_sys_exit = btf.type_by_name::<Typedef>("btf_trace_sys_exit").is_some();
        let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        let mut kallsyms = HashSet::new();
        if kprobe_pmu {
            if let Ok(s) = std::fs::read_to_string("/proc/kallsyms") {
                kallsyms = parse_kallsyms(&s, INTERESTING_FUNCS);
            }
        }
        let tracefs_sys_exit_bpf = [
            "/sys/kernel/tracing/events/syscalls/sys_exit_bpf/id",
            "/sys/kernel/debug/tracing/events/syscalls/sys_exit_bpf/id",
        ]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok());
        let task_pt_regs = btf.type_by_name::<Func>("bpf_task_pt_regs").is_some();
        let rdonly_cast = btf.type_by_name::<Func>("bpf_rdonly_cast").is_some();
        let sys_bpf_regs = first_param_is_struct(&btf, "__x64_sys_bpf");
        Ok(KernelCaps {
            btf_funcs,
            tp_btf_sys_exit,
            kprobe_pmu,
            kallsyms,
            tracefs_sys_exit_bpf,
            task_pt_regs,
            rdonly_cast,
            sys_bpf_regs,
        })
    }
}

/// Text symbols among `wanted` in a /proc/kallsyms dump.
pub fn parse_kallsyms(s: &str, wanted: &[&str]) -> HashSet<String> {
    let wanted: HashSet<&str> = wanted.iter().copied().collect();
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let _addr = it.next()?;
            let ty = it.next()?;
            let name = it.next()?;
            (matches!(ty, "t" | "T") && wanted.contains(name)).then(|| name.to_string())
        })
        .collect()
}

macro_rules! refcount_probe {
    ($f:literal, $fe:literal, $kp:literal) => {
        (
            $f,
            &[$fe] as &'static [&'static str],
            &[$kp] as &'static [&'static str],
        )
    };
}

/// Every probe with its attach chain, best first, filtered by what the
/// kernel has. Pure (tested without root).
pub fn plan(caps: &KernelCaps) -> Vec<ProbeDef> {
    let mut out = Vec::new();
    let has_func = |f: &str| caps.btf_funcs.contains(f);
    let has_kprobe = |f: &str| caps.kprobe_pmu && caps.kallsyms.contains(f);

    let mut sys = Vec::new();
    if has_func("__x64_sys_bpf") && caps.sys_bpf_regs {
        sys.push(Cand {
            mode: Mode::Fexit,
            progs: &["fexit_sys_bpf"],
            point: "__x64_sys_bpf",
        });
    }
    if caps.tracefs_sys_exit_bpf && caps.task_pt_regs {
        sys.push(Cand {
            mode: Mode::Tracepoint,
            progs: &["tp_sys_exit_bpf"],
            point: "syscalls:sys_exit_bpf",
        });
    }
    if caps.tp_btf_sys_exit {
        sys.push(Cand {
            mode: Mode::Tracepoint,
            progs: &["btf_sys_exit"],
            point: "tp_btf/sys_exit",
        });
    }
    sys.push(Cand {
        mode: Mode::Tracepoint,
        progs: &["raw_sys_exit"],
        point: "raw_tp/sys_exit",
    });
    out.push(ProbeDef {
        name: "map_syscalls",
        chain: sys,
    });

    let mut create = Vec::new();
    if has_func("map_create") {
        create.push(Cand {
            mode: Mode::Fexit,
            progs: &["fexit_map_create"],
            point: "map_create",
        });
    }
    if has_kprobe("map_create") {
        create.push(Cand {
            mode: Mode::Kretprobe,
            progs: &["kret_map_create"],
            point: "map_create",
        });
    }
    // Last resort: the bpf() exit program (map_syscalls, in its mode) sees
    // BPF_MAP_CREATE's fd.
    create.push(Cand {
        mode: Mode::Tracepoint,
        progs: &[],
        point: "bpf() exit (map_syscalls)",
    });
    out.push(ProbeDef {
        name: "map_create",
        chain: create,
    });

    // Destructions are found by the census everywhere (ids leaving it);
    // where a probe attaches, the kernel times each one.
    let mut destroy = Vec::new();
    if has_func("bpf_map_free_deferred") {
        destroy.push(Cand {
            mode: Mode::Fentry,
            progs: &["fe_map_free_deferred"],
            point: "bpf_map_free_deferred",
        });
    }
    if has_kprobe("bpf_map_free_deferred") {
        destroy.push(Cand {
            mode: Mode::Kprobe,
            progs: &["kp_map_free_deferred"],
            point: "bpf_map_free_deferred",
        });
    }
    destroy.push(Cand {
        mode: Mode::Census,
        progs: &[],
        point: "map ids leaving the census",
    });
    out.push(ProbeDef {
        name: "map_destroy",
        chain: destroy,
    });

    let funcs = [
        refcount_probe!("bpf_map_inc", "fe_bpf_map_inc", "kp_bpf_map_inc"),
        refcount_probe!(
            "bpf_map_inc_with_uref",
            "fe_bpf_map_inc_with_uref",
            "kp_bpf_map_inc_with_uref"
        ),
        refcount_probe!(
            "__bpf_map_inc_not_zero",
            "fe___bpf_map_inc_not_zero",
            "kp___bpf_map_inc_not_zero"
        ),
        refcount_probe!(
            "bpf_map_inc_not_zero",
            "fe_bpf_map_inc_not_zero",
            "kp_bpf_map_inc_not_zero"
        ),
        refcount_probe!("bpf_map_put", "fe_bpf_map_put", "kp_bpf_map_put"),
        (
            "bpf_map_put_with_uref",
            &["fe_bpf_map_put_with_uref", "fx_bpf_map_put_with_uref"] as &'static [&'static str],
            &["kp_bpf_map_put_with_uref", "kr_bpf_map_put_with_uref"] as &'static [&'static str],
        ),
    ];
    for (f, fe, kp) in funcs {
        let mut chain = Vec::new();
        // bpf_map_inc_not_zero() only wraps __bpf_map_inc_not_zero(): probe
        // the inner function where it exists, or each increment counts twice.
        let covered = f == "bpf_map_inc_not_zero"
            && (has_func("__bpf_map_inc_not_zero") || has_kprobe("__bpf_map_inc_not_zero"));
        if !covered {
            if has_func(f) {
                chain.push(Cand {
                    mode: Mode::Fentry,
                    progs: fe,
                    point: f,
                });
            }
            if has_kprobe(f) {
                chain.push(Cand {
                    mode: Mode::Kprobe,
                    progs: kp,
                    point: f,
                });
            }
        }
        out.push(ProbeDef { name: f, chain });
    }
    out
}

/// Program sets to try loading, largest first: when the kernel refuses a
/// load (fentry under lockdown, bpf_get_func_ret before 5.17, ...), the
/// next set drops a class of programs.
pub fn load_attempts(plan: &[ProbeDef]) -> Vec<BTreeSet<&'static str>> {
    let all: Vec<(Mode, &'static str)> = plan
        .iter()
        .flat_map(|p| {
            p.chain
                .iter()
                .flat_map(|c| c.progs.iter().map(|&g| (c.mode, g)))
        })
        .collect();
    let set = |keep: &dyn Fn(Mode, &str) -> bool| -> BTreeSet<&'static str> {
        all.iter()
            .filter(|(m, g)| keep(*m, g))
            .map(|(_, g)| *g)
            .collect()
    };
    // Programs that a kernel may refuse on its own (verifier differences)
    // are dropped alone first, so they never cost a whole class.
    // (fexit_sys_bpf is only planned where its pt_regs argument is a complete
    // struct in the BTF, which 5.10 lacks; see KernelCaps::sys_bpf_regs.)
    let shaky = |g: &str| matches!(g, "fexit_map_create" | "fexit_sys_bpf");
    let tp = |g: &str| g == "tp_sys_exit_bpf";
    let candidates = vec![
        set(&|_, _| true),
        set(&|_, g| g != "fexit_map_create"),
        set(&|_, g| !shaky(g)),
        set(&|_, g| !tp(g)),
        set(&|_, g| !shaky(g) && !tp(g)),
        set(&|m, _| m.class() != 0),
        set(&|m, g| m.class() != 0 && !tp(g)),
        set(&|m, _| m.class() == 2),
        set(&|m, g| m.class() == 2 && !tp(g)),
        set(&|m, g| m.class() == 2 && g == "raw_sys_exit"),
    ];
    let mut v: Vec<BTreeSet<&'static str>> = Vec::new();
    for c in candidates {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// What one probe ended up with.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub probe: &'static str,
    pub mode: Mode,
    pub attached: bool,
    pub point: String,
}

impl Choice {
    pub fn check_line(&self) -> String {
        format!(
            "probe={} mode={} attached={} point={}",
            self.probe,
            self.mode.as_str(),
            self.attached as u8,
            self.point.replace(' ', "_")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(funcs: &[&str], kprobes: bool) -> KernelCaps {
        KernelCaps {
            btf_funcs: funcs.iter().map(|s| s.to_string()).collect(),
            tp_btf_sys_exit: true,
            kprobe_pmu: kprobes,
            kallsyms: if kprobes {
                funcs.iter().map(|s| s.to_string()).collect()
            } else {
                HashSet::new()
            },
            tracefs_sys_exit_bpf: false,
            task_pt_regs: true,
            rdonly_cast: true,
            sys_bpf_regs: funcs.contains(&"__x64_sys_bpf"),
        }
    }

    #[test]
    fn this_host_without_kprobes_keeps_fentry_then_tracepoint() {
        let p = plan(&caps(INTERESTING_FUNCS, false));
        let create = p.iter().find(|p| p.name == "map_create").unwrap();
        let modes: Vec<_> = create.chain.iter().map(|c| c.mode).collect();
        assert_eq!(modes, vec![Mode::Fexit, Mode::Tracepoint]);
        let put = p.iter().find(|p| p.name == "bpf_map_put").unwrap();
        assert_eq!(put.chain.len(), 1);
        let wrapper = p.iter().find(|p| p.name == "bpf_map_inc_not_zero").unwrap();
        assert!(
            wrapper.chain.is_empty(),
            "covered by __bpf_map_inc_not_zero"
        );
        let sys = p.iter().find(|p| p.name == "map_syscalls").unwrap();
        let points: Vec<_> = sys.chain.iter().map(|c| c.point).collect();
        assert_eq!(
            points,
            vec!["__x64_sys_bpf", "tp_btf/sys_exit", "raw_tp/sys_exit"]
        );
    }

    #[test]
    fn debian_5_10_has_no_map_create_function() {
        let funcs: Vec<&str> = INTERESTING_FUNCS
            .iter()
            .copied()
            .filter(|f| *f != "map_create" && *f != "bpf_task_pt_regs")
            .collect();
        let mut c = caps(&funcs, true);
        // 5.10's BTF: __x64_sys_bpf exists, its pt_regs is a FWD.
        c.sys_bpf_regs = false;
        let p = plan(&c);
        let create = p.iter().find(|p| p.name == "map_create").unwrap();
        assert_eq!(create.chain.len(), 1);
        assert_eq!(create.chain[0].mode, Mode::Tracepoint);
        let inc = p.iter().find(|p| p.name == "bpf_map_inc").unwrap();
        let modes: Vec<_> = inc.chain.iter().map(|c| c.mode).collect();
        assert_eq!(modes, vec![Mode::Fentry, Mode::Kprobe]);
        let sys = p.iter().find(|p| p.name == "map_syscalls").unwrap();
        assert!(
            sys.chain.iter().all(|c| c.mode != Mode::Fexit),
            "fexit on __x64_sys_bpf is not tried when its pt_regs is a FWD"
        );
        assert!(load_attempts(&p)
            .iter()
            .all(|s| !s.contains("fexit_sys_bpf")));
    }

    /// A raw BTF blob (what /sys/kernel/btf/vmlinux holds) with
    /// `long __x64_sys_bpf(const struct pt_regs *regs)`, pt_regs complete
    /// or only forward-declared.
    fn sys_bpf_btf(complete: bool) -> Vec<u8> {
        // Strings: offsets 0 "", 1 "pt_regs", 9 "long", 14 "regs",
        // 19 "__x64_sys_bpf", 33 "di".
        let strs = b"\0pt_regs\0long\0regs\0__x64_sys_bpf\0di\0";
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        let mut t: Vec<u32> = Vec::new();
        if complete {
            // [1] STRUCT pt_regs, size 8, one member di: long at bit 0
            t.extend([1, info(4, 1), 8, 33, 4, 0]);
        } else {
            // [1] FWD struct pt_regs
            t.extend([1, info(7, 0), 0]);
        }
        t.extend([0, info(10, 0), 1]); // [2] CONST -> 1
        t.extend([0, info(2, 0), 2]); // [3] PTR -> 2
        t.extend([9, info(1, 0), 8, (1 << 24) | 64]); // [4] INT long, signed, 64 bits
        t.extend([0, info(13, 1), 4, 14, 3]); // [5] FUNC_PROTO long (regs: [3])
        t.extend([19, info(12, 1), 5]); // [6] FUNC __x64_sys_bpf, global
        let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend(0xeb9fu16.to_le_bytes());
        b.extend([1u8, 0]); // version, flags
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strs.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strs);
        b
    }

    #[test]
    fn sys_bpf_regs_is_read_from_btf() {
        for complete in [true, false] {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), sys_bpf_btf(complete)).unwrap();
            let btf = libbpf_rs::btf::Btf::from_path(f.path()).expect("parses");
            assert_eq!(
                first_param_is_struct(&btf, "__x64_sys_bpf"),
                complete,
                "complete={complete}"
            );
            assert!(!first_param_is_struct(&btf, "no_such_function"));
        }
    }

    #[test]
    fn load_attempts_shrink_by_class() {
        let p = plan(&caps(INTERESTING_FUNCS, true));
        let a = load_attempts(&p);
        assert!(a[0].contains("fe_bpf_map_inc") && a[0].contains("kp_bpf_map_inc"));
        assert!(!a[1].contains("fexit_map_create") && a[1].contains("fe_bpf_map_inc"));
        assert!(!a[2].contains("fexit_sys_bpf") && a[2].contains("fe_bpf_map_inc"));
        // Every set with fentry programs comes before the first without.
        let first_without = a
            .iter()
            .position(|s| !s.contains("fe_bpf_map_inc"))
            .unwrap();
        assert!(a[first_without..]
            .iter()
            .all(|s| !s.contains("fe_bpf_map_inc")));
        assert!(a[first_without].contains("kp_bpf_map_inc"));
        let tp_only = a
            .iter()
            .position(|s| s.iter().all(|g| !g.starts_with('k') && !g.starts_with('f')))
            .unwrap();
        assert!(tp_only > first_without);
        assert_eq!(
            a.last().unwrap().iter().copied().collect::<Vec<_>>(),
            vec!["raw_sys_exit"]
        );
        let mut tracefs = caps(INTERESTING_FUNCS, true);
        tracefs.tracefs_sys_exit_bpf = true;
        let a = load_attempts(&plan(&tracefs));
        let i = a
            .iter()
            .position(|s| !s.contains("tp_sys_exit_bpf"))
            .unwrap();
        assert!(
            a[i].contains("fe_bpf_map_inc"),
            "tracepoint refused alone first"
        );
    }

    #[test]
    fn kallsyms_text_symbols_only() {
        let s = "ffff t map_create\nffff T bpf_map_inc\nffff d bpf_map_put\nffff t other\n";
        let got = parse_kallsyms(s, INTERESTING_FUNCS);
        assert!(got.contains("map_create") && got.contains("bpf_map_inc"));
        assert!(!got.contains("bpf_map_put"));
    }

    #[test]
    fn check_line_format() {
        let c = Choice {
            probe: "bpf_map_put",
            mode: Mode::None,
            attached: false,
            point: "no attach point".into(),
        };
        assert_eq!(
            c.check_line(),
            "probe=bpf_map_put mode=none attached=0 point=no_attach_point"
        );
    }
}
