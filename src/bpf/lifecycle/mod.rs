//! The lifecycle skeleton (bpf/lifecycle.bpf.c): opened with its
//! read-only configuration, loaded with the chosen program set, its counter
//! slots handed to the programs, and each probe attached along its chain of
//! attach points.
pub mod records;

use std::collections::BTreeSet;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, Skel};
use libbpf_rs::{Link, MapCore, MapFlags};

pub mod probes;

use probes::{Choice, KernelCaps, Mode, ProbeDef};

#[allow(clippy::all, missing_docs, non_camel_case_types, unused)]
pub(crate) mod skel {
    include!(concat!(env!("OUT_DIR"), "/lifecycle.skel.rs"));
}
pub use skel::{LifecycleSkel, LifecycleSkelBuilder, OpenLifecycleSkel};

/// The last map id the creation path recorded (the programs' `.bss`).
pub fn last_recorded(skel: &LifecycleSkel<'static>) -> u32 {
    skel.maps
        .bss_data
        .as_deref()
        // SAFETY: the .bss map is mmaped for the skeleton's life; the
        // kernel writes this u32 concurrently, so read it volatile.
        .map(|b| unsafe { std::ptr::read_volatile(&b.last_id) })
        .unwrap_or(0)
}

/// What a lifecycle load is configured with.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `--btf.path` for CO-RE, when given.
    pub btf_path: Option<std::path::PathBuf>,
    /// Per-process series carry the pid.
    pub pid_label: bool,
    /// Creations are logged through the ring buffer.
    pub log_events: bool,
    /// Kernel counter slots: distinct (process, counter) pairs kept apart.
    pub counter_slots: u32,
    /// Capture user stacks (`--collector.origins`), with the kernel's build
    /// ids too when `origins_build_id`.
    pub origins: bool,
    pub origins_build_id: bool,
}

/// Bytes of the origins ring buffer when origins are on (about 490
/// records: a loader's burst of creations while the reader normalizes).
pub const ORIGINS_RING_BYTES: u32 = 1 << 20;

/// Open the lifecycle BPF object (with `btf_path` for CO-RE when given).
pub fn open_skel(btf_path: Option<&std::path::Path>) -> anyhow::Result<OpenLifecycleSkel<'static>> {
    crate::bpf::load::open(LifecycleSkelBuilder::default(), btf_path, "lifecycle")
}

pub(crate) fn open_and_load(
    set: &BTreeSet<&'static str>,
    opts: &LoadConfig,
    caps: &KernelCaps,
) -> anyhow::Result<LifecycleSkel<'static>> {
    let skel = crate::bpf::load::load_counted("lifecycle", || open_configured(set, opts, caps))?;
    fill_free_slots(&skel.maps.free_slots, opts.counter_slots)?;
    Ok(skel)
}

/// The lifecycle object opened and configured for `set`, not loaded yet.
fn open_configured(
    set: &BTreeSet<&'static str>,
    opts: &LoadConfig,
    caps: &KernelCaps,
) -> anyhow::Result<OpenLifecycleSkel<'static>> {
    let mut open = open_skel(opts.btf_path.as_deref())?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.with_pid = opts.pid_label as u32;
        ro.log_events = opts.log_events as u32;
        ro.have_rdonly_cast = caps.rdonly_cast as u32;
        ro.origins_on = opts.origins as u32;
        ro.origins_build_id = (opts.origins && opts.origins_build_id) as u32;
        ro.self_tgid = std::process::id();
    }
    if opts.origins {
        open.maps.origins.set_max_entries(ORIGINS_RING_BYTES)?;
    } else {
        open.maps.origin_seen.set_max_entries(1)?;
    }
    if !opts.log_events {
        open.maps.events.set_max_entries(4096)?;
    }
    anyhow::ensure!(
        opts.counter_slots > 0,
        "lifecycle counter slots must be at least 1"
    );
    open.maps.slots.set_max_entries(opts.counter_slots)?;
    open.maps.counts.set_max_entries(opts.counter_slots)?;
    open.maps.free_slots.set_max_entries(opts.counter_slots)?;
    for mut p in open.open_object_mut().progs_mut() {
        let name = p.name().to_string_lossy().into_owned();
        p.set_autoload(set.contains(name.as_str()));
    }
    Ok(open)
}

/// Hand every counter slot to the programs (before anything is attached).
fn fill_free_slots(q: &libbpf_rs::Map<'_>, n: u32) -> anyhow::Result<()> {
    for slot in 0..n {
        q.update(&[], &slot.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("filling the free counter slots ({slot})"))?;
    }
    Ok(())
}

/// Attach every probe along its chain; first attach that works wins.
pub(crate) fn attach(
    skel: &LifecycleSkel<'static>,
    plan: &[ProbeDef],
    loaded: &BTreeSet<&'static str>,
    census: bool,
    final_pass: bool,
) -> (Vec<Link>, Vec<Choice>, Vec<&'static str>) {
    let mut links = Vec::new();
    let mut choices: Vec<Choice> = Vec::new();
    let mut progs_used = Vec::new();
    for def in plan {
        let mut chosen = None;
        for cand in &def.chain {
            if def.name == "map_destroy" && !census {
                // --no-collector.maps: nothing finds destructions, so
                // nothing is timed either.
                continue;
            }
            if cand.mode == Mode::Census {
                if census {
                    chosen = Some(Choice {
                        probe: def.name,
                        mode: Mode::Census,
                        attached: true,
                        point: cand.point.to_string(),
                    });
                    break;
                }
                continue; // --no-collector.maps: nothing finds destructions
            }
            if cand.progs.is_empty() {
                // map_create through the syscall-exit program.
                let sys = choices.iter().find(|c| c.probe == "map_syscalls");
                if let Some(sys) = sys.filter(|c| c.attached) {
                    chosen = Some(Choice {
                        probe: def.name,
                        mode: sys.mode,
                        attached: true,
                        point: sys.point.clone(),
                    });
                    break;
                }
                continue;
            }
            if !cand.progs.iter().all(|g| loaded.contains(g)) {
                continue;
            }
            let mut got = Vec::new();
            let mut err = None;
            for g in cand.progs {
                let prog = skel
                    .object()
                    .progs_mut()
                    .find(|p| p.name().to_string_lossy() == *g);
                match prog.map(|p| p.attach()) {
                    Some(Ok(l)) => got.push(l),
                    Some(Err(e)) => {
                        err = Some(format!("{e}"));
                        break;
                    }
                    None => {
                        err = Some("program not loaded".into());
                        break;
                    }
                }
            }
            match err {
                None => {
                    links.extend(got);
                    progs_used.extend(cand.progs.iter().copied());
                    chosen = Some(Choice {
                        probe: def.name,
                        mode: cand.mode,
                        attached: true,
                        point: cand.point.to_string(),
                    });
                    break;
                }
                Some(e) if final_pass => {
                    tracing::info!(
                        probe = def.name,
                        mode = cand.mode.as_str(),
                        point = cand.point,
                        error = %e,
                        "attach failed, trying the next mode"
                    );
                }
                Some(_) => {}
            }
        }
        let c = chosen.unwrap_or_else(|| Choice {
            probe: def.name,
            mode: Mode::None,
            attached: false,
            point: "none".into(),
        });
        choices.push(c);
    }
    (links, choices, progs_used)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use libbpf_rs::skel::OpenSkel;

    use super::probes::{plan, KernelCaps};

    /// Probe plans name programs by string; every name a plan can choose on
    /// any kernel is a program of the object, and every program of the
    /// object is reachable from some plan (nothing ships unused).
    #[test]
    fn plan_names_are_exactly_the_object_programs() {
        let funcs = [
            "__x64_sys_bpf",
            "map_create",
            "bpf_map_free_deferred",
            "bpf_map_inc",
            "bpf_map_inc_with_uref",
            "bpf_map_inc_not_zero",
            "bpf_map_put",
            "bpf_map_put_with_uref",
        ];
        let every = |inner: bool| KernelCaps {
            btf_funcs: funcs
                .iter()
                .map(|s| s.to_string())
                .chain(inner.then(|| "__bpf_map_inc_not_zero".to_string()))
                .collect(),
            tp_btf_sys_exit: true,
            kprobe_pmu: true,
            kallsyms: funcs
                .iter()
                .map(|s| s.to_string())
                .chain(inner.then(|| "__bpf_map_inc_not_zero".to_string()))
                .collect(),
            tracefs_sys_exit_bpf: true,
            task_pt_regs: true,
            rdonly_cast: true,
            sys_bpf_regs: true,
        };
        let planned: BTreeSet<&str> = [every(true), every(false)]
            .iter()
            .flat_map(plan)
            .flat_map(|d| d.chain.into_iter().flat_map(|c| c.progs.iter().copied()))
            .collect();
        let open = super::open_skel(None).expect("the lifecycle object opens without privileges");
        let object: BTreeSet<String> = open
            .open_object()
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        let object: BTreeSet<&str> = object.iter().map(String::as_str).collect();
        assert_eq!(planned, object);
    }
}
