//! The `kiln` binary: parses the command line, loads the config, and starts a mode.

use clap::{Parser, Subcommand};
use kiln_worker::config::{Config, Mode};
use kiln_worker::{modes, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in mimalloc v2 and v3;
/// libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Returns freed memory to the OS at once instead of after mimalloc's default 10 ms: jobs free
/// tens of megabytes of pixels each, and a delayed purge keeps a backlog of them resident
/// (benches/soak.py: peak RSS about 450 MiB with the default, about 300 MiB with this).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
///
/// Also turns transparent huge pages off for the process (`prctl(PR_SET_THP_DISABLE)`, what
/// mimalloc's own `MIMALLOC_ALLOW_THP=0` does), unless `MIMALLOC_ALLOW_THP` is set: with the
/// immediate purge, every job's buffers were faulted back in as fresh 2 MiB pages, often
/// through the kernel's direct compaction (a fifth of a 100-page PDF render's samples sat in
/// page faults and compaction), and a partly used huge page counts whole in RSS. Measured on
/// that render job (`kiln run` of benches/render_pdf.sh's document): peak RSS 105 → 72 MB and
/// about 10 % less wall time.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide mimalloc option; safe to call at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes one integer argument and touches no
        // memory of ours. Not fatal when refused (a kernel without THP): only more memory.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) } != 0 {
            eprintln!("kiln: could not turn transparent huge pages off: {}", std::io::Error::last_os_error());
        }
    }
}

/// kiln: a media-processing compute worker (thumbnails first; transcode, infer and render to come).
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    /// Config file (TOML); else KILN_CONFIG, else ./kiln.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs jobs from a JSON/JSONL file, or stdin with `-`; prints results as JSONL.
    /// Exits 0 when every job succeeded, 1 when any did not.
    Run {
        /// JSON or JSONL file of job envelopes, or `-` for stdin.
        file: String,
    },
    /// Serves the HTTP API until SIGTERM, then drains.
    Serve,
    /// Serves Lambda invocations through the Runtime API (chosen by default when
    /// AWS_LAMBDA_RUNTIME_API is set).
    Lambda,
    /// Prints what this host offers, as JSON.
    Probe,
    /// Routes jobs to workers (the latency-aware router of the hybrid design) until SIGTERM.
    Route,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Loads the config as the mode that would run (KILN_MODE, else lambda when
    /// AWS_LAMBDA_RUNTIME_API is set, else serve) and runs its start-up checks without
    /// starting it. Prints a summary as JSON and exits 0, or prints the error and exits 2.
    Check,
}

/// How long the end of the process waits for the runtime's tasks and the span export.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    tune_allocator();
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = cfg.log.clone();
    if matches!(cli.command, Some(Command::Run { .. })) && std::env::var_os("KILN_LOG").is_none() {
        // `kiln run` keeps stderr for its progress bar and real problems.
        log.level = "warn".into();
    }
    if let Some(Command::Config { action: ConfigAction::Check }) = &cli.command {
        telemetry::init_logging(&log);
        return match modes::check(&cfg, mode_from_env(&cfg)) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kiln: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let command = match cli.command {
        Some(c) => c,
        None => match mode_from_env(&cfg) {
            Mode::Serve => Command::Serve,
            Mode::Lambda => Command::Lambda,
            Mode::Route => Command::Route,
        },
    };
    if matches!(command, Command::Lambda) {
        if let Err(e) = modes::prepare_lambda_env() {
            eprintln!("kiln: {e}");
            return ExitCode::from(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("kiln-io").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The OTLP exporter (when OTEL_EXPORTER_OTLP_*ENDPOINT is set) batches on this runtime.
    let otel = {
        let _in_runtime = rt.enter();
        telemetry::init_logging(&log)
    };
    // A panicking job is reported as `internal` by the runtime; log the panic as an event too.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "a job panicked")));
    let outcome = match command {
        Command::Run { file } => rt.block_on(modes::run(cfg, &file)).map(|ok| if ok { 0 } else { 1 }),
        Command::Serve => rt.block_on(modes::serve(cfg)).map(|()| 0),
        Command::Lambda => rt.block_on(modes::lambda(cfg, started)).map(|()| 0),
        Command::Route => rt.block_on(modes::route(cfg)).map(|()| 0),
        Command::Config { .. } => Ok(0),
        Command::Probe => serde_json::to_string_pretty(&modes::probe(&cfg)).map_err(Into::into).map(|s| {
            println!("{s}");
            0
        }),
    };
    // The modes return once their results are out (serve: after the grace period and the
    // cancellations it forces). A job thread stuck in a call that never returns does not hold
    // the process (job threads are not joined), and neither may a blocking task of the runtime
    // stuck the same way (a read of a FIFO, a hung store call): dropping the runtime would wait
    // for it forever, so it gets a short, bounded shutdown instead.
    otel.shutdown(RUNTIME_SHUTDOWN);
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// With no subcommand: KILN_MODE, else Lambda when AWS_LAMBDA_RUNTIME_API is set, else serve.
fn mode_from_env(cfg: &Config) -> Mode {
    cfg.mode.unwrap_or(if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() { Mode::Lambda } else { Mode::Serve })
}
