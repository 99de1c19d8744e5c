use std::process::ExitCode;

use bpfmap_exporter::cli::{Cli, Command};
use bpfmap_exporter::exporter::{Exporter, ScrapeService};
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

fn run() -> anyhow::Result<bool> {
    bpfmap_exporter::sys::tune_allocator();
    let cli = Cli::parse_from_env();
    init_logging(&cli)?;
    bpfmap_exporter::logging::set_repeat_interval(cli.log_repeat_interval);
    cli.validate()?;
    let remote_only = matches!(&cli.command, Some(Command::Explain(a)) if a.remote.from.is_some());
    if !remote_only {
        bpfmap_exporter::limits::ensure_nofile()?;
    }
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
        return Ok(bpfmap_exporter::check::print(&scrape, &ex));
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
        health: service.health(),
        maps: service.shared_maps(),
        web,
        enabled_collectors: bpfmap_exporter::registry::REGISTRY
            .iter()
            .map(|s| s.name)
            .filter(|n| cli.collector_enabled(n))
            .collect(),
        expose_api: cli.web_expose_api,
    };
    let limits = http::Limits {
        header_timeout: cli.web_read_header_timeout,
        idle_timeout: cli.web_idle_timeout,
        write_timeout: cli.web_write_timeout,
        request_timeout: cli.web_request_timeout,
        max_connections: cli.web_max_connections,
        max_api_requests: cli.web_max_api_requests.into(),
    };
    let mut term = rt
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        })
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context("installing the SIGTERM handler"))?;
    rt.block_on(async move {
        let shutdown = async move {
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
            if bpfmap_exporter::limits::out_of_fds(&e) {
                let hint = bpfmap_exporter::limits::out_of_fds_hint();
                eprintln!("bpfmap-exporter: error: {e:#}: {hint}");
            } else {
                eprintln!("bpfmap-exporter: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

// A scrape allocates and frees many small label strings; mimalloc keeps
// that cheap and the heap compact (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
