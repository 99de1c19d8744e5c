use std::process::ExitCode;

use bpfmap_exporter::cli::{Cli, Command};
use bpfmap_exporter::exporter::{Exporter, Scrape, ScrapeService};
use bpfmap_exporter::http;

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    bpfmap_exporter::logging::init(&cli.log_level, &cli.log_format)?;
    // Route libbpf's own log lines into tracing.
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |lvl, msg: String| {
        let msg = msg.trim_end();
        match lvl {
            libbpf_rs::PrintLevel::Warn
                if bpfmap_exporter::logging::libbpf_warning_expected(msg) =>
            {
                tracing::debug!(target: "libbpf", expected_fallback = true, "{msg}")
            }
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => tracing::info!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => tracing::debug!(target: "libbpf", "{msg}"),
        }
    })));
    Ok(())
}

fn print_check(scrape: &Scrape, ex: &Exporter) -> bool {
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
            println!("bpffs mount={m} reachable=0 (mounted in another mount namespace; walking it through /proc/<pid>/root needs CAP_SYS_PTRACE)");
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
    for v in bpfmap_exporter::bpf::load::verifier_stats() {
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
    match bpfmap_exporter::census::creators::own_memory_usage() {
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
        println!("error={}", bpfmap_exporter::census::PID_NAMESPACE_ERROR);
        ok = false;
    }
    println!("result={}", if ok { "ok" } else { "failed" });
    ok
}

fn run() -> anyhow::Result<bool> {
    bpfmap_exporter::sys::tune_allocator();
    let cli = Cli::parse_from_env();
    init_logging(&cli)?;
    cli.validate()?;
    if let Some(Command::SimulateLeak(args)) = &cli.command {
        bpfmap_exporter::simulate::run(args)?;
        return Ok(true);
    }
    if let Some(Command::Explain(args)) = &cli.command {
        bpfmap_exporter::explain::run(args, cli.btf_path.clone())?;
        return Ok(true);
    }

    if cli.check {
        let mut ex = Exporter::new(&cli.exporter_opts())?;
        let scrape = ex.scrape();
        return Ok(print_check(&scrape, &ex));
    }

    // Bind and read the web config before loading BPF: a busy port or a bad
    // file is the first thing reported.
    let mut addrs = Vec::new();
    for a in &cli.listen {
        addrs.extend(http::parse_listen(a)?);
    }
    let listeners = http::bind(&addrs)?;
    let web = std::sync::Arc::new(bpfmap_exporter::web::Web::load(
        cli.web_config_file.as_deref(),
    )?);
    let (service, scrapes) = ScrapeService::start(cli.exporter_opts())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let st = http::State {
        telemetry_path: cli.telemetry_path.clone(),
        scrapes,
        healthy: service.healthy(),
        web,
        enabled_collectors: bpfmap_exporter::registry::REGISTRY
            .iter()
            .map(|s| s.name)
            .filter(|n| cli.collector_enabled(n))
            .collect(),
    };
    let limits = http::Limits {
        header_timeout: cli.web_read_header_timeout,
        idle_timeout: cli.web_idle_timeout,
        max_connections: cli.web_max_connections,
    };
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutting down");
        };
        http::serve(listeners, st, limits, shutdown).await
    })?;
    drop(rt);
    service.join();
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bpfmap-exporter: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

// A scrape allocates and frees many small label strings; mimalloc keeps
// that cheap and the heap compact (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
