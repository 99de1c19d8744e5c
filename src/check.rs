//! `--check`: one census and every collector loaded, printed as
//! `key=value` lines (features, holder sources, attach modes, what each
//! program cost the verifier, the memory cgroup's peak, each collector's
//! outcome). True when every collector succeeded.
use crate::exporter::{Exporter, Scrape};

/// Print the summary of `scrape`; true when nothing failed.
pub fn print(scrape: &Scrape, ex: &Exporter) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel={}", release.trim());
    let s = &scrape.snapshot;
    if let Some(c) = ex.census() {
        let f = c.features();
        println!("feature=task_vma available={}", f.task_vma as u8);
        println!("feature=elem_count available={}", f.elem_count as u8);
        println!("feature=elem_iter available={}", f.elem_iter as u8);
        match &f.map_memcg_off {
            Some(why) => println!("feature=map_memcg available=0 reason={why:?}"),
            None => println!("feature=map_memcg available={}", f.map_memcg as u8),
        }
        println!("feature=iter_unix available={}", f.iter_unix as u8);
    }
    let per_map: Vec<Option<i64>> = s
        .maps
        .iter()
        .map(|m| s.holders.get(&m.id).and_then(|h| h.unexplained(m.refcnt)))
        .collect();
    let withheld = per_map.iter().filter(|u| u.is_none()).count();
    // A count that is not known is not printed as a number.
    let unexplained = if withheld == 0 && (s.maps.is_empty() || !s.holders.is_empty()) {
        per_map.iter().flatten().sum::<i64>().to_string()
    } else {
        "unknown".to_string()
    };
    println!(
        "maps={} own_maps={} memory_bytes={} processes={} pins={} unexplained_refs={} unexplained_withheld_maps={}",
        s.maps.len(),
        s.own.len(),
        s.memory
            .iter()
            .filter(|(id, _)| s.maps.iter().any(|m| m.id == **id))
            .map(|(_, b)| b)
            .sum::<u64>(),
        s.processes.len(),
        s.inventory.as_ref().map(|i| i.pins.len()).unwrap_or(0),
        unexplained,
        withheld
    );
    if let Some(inv) = &s.inventory {
        for m in &inv.unreachable {
            if inv.hidden.contains(m) {
                println!("bpffs mount={m} reachable=0 (hidden under another mount at the same mount point: bpffs mounted twice?)");
            } else {
                println!("bpffs mount={m} reachable=0 (mounted in another mount namespace; walking it through /proc/<pid>/root needs CAP_SYS_PTRACE)");
            }
        }
    }
    for (source, complete) in &s.sources {
        if !complete {
            println!("source={source} complete=0");
        }
    }
    for c in ex.collectors() {
        for line in c.check_lines() {
            println!("{line}");
        }
    }
    let mut ok = true;
    for p in &scrape.report.outcomes {
        println!(
            "collector={} success={} seconds={:.6}",
            p.name, p.ok as u8, p.seconds
        );
        if let Some(e) = &p.error {
            println!("collector={} error={e}", p.name);
            ok = false;
        }
    }
    // What loading cost: the verifier's work per program, and the memory
    // cgroup's high-water mark (user plus kernel memory) so far.
    for v in crate::bpf::load::verifier_stats() {
        println!(
            "program={} object={} verified_insns={} peak_states={} total_states={} verify_usec={}",
            v.program,
            v.object,
            v.insns,
            v.peak_states,
            v.total_states,
            v.usec.map_or("unknown".to_string(), |u| u.to_string())
        );
    }
    match crate::census::creators::own_memory_usage() {
        Some(u) => println!(
            "memcg={} usage_bytes={} peak_bytes={} kmem_peak_bytes={}",
            u.dir.display(),
            u.current,
            u.peak.map_or("unknown".to_string(), |p| p.to_string()),
            u.kmem_peak.map_or("unknown".to_string(), |p| p.to_string())
        ),
        None => println!("memcg=unknown (no readable memory cgroup of this process)"),
    }
    if s.host_pid_namespace == Some(false) {
        println!("error={}", crate::census::PID_NAMESPACE_ERROR);
        ok = false;
    }
    println!("result={}", if ok { "ok" } else { "failed" });
    ok
}
