//! The command line: the only place that prints to the terminal or uses `anyhow`-style error reporting.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod sync;

use crate::app::App;
use crate::config::{Config, ConfigError, Overrides, Settings};
use crate::sync::Mode;

/// Wharf: a self-hosted OCI registry and pull-through mirror.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, long_about = None, arg_required_else_help = true)]
pub struct Cli {
    /// TOML configuration file (see docs/config.example.toml).
    #[arg(long, global = true, env = "WHARF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Root directory of the local content store [default: ./wharf-data].
    #[arg(long, global = true, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry (OCI Distribution API on /v2/).
    Serve {
        /// Address to listen on [default: 127.0.0.1:5000].
        #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Pull-through mirror tools.
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Run every [[sync]] entry once (or show their last reports with `wharf sync status`).
    Sync {
        #[command(subcommand)]
        action: Option<SyncCommand>,
        /// Print the plan (tags, digests) without copying anything.
        #[arg(long, conflicts_with = "check")]
        dry_run: bool,
        /// Report drift from the upstream without copying; exit code 1 when anything differs.
        #[arg(long)]
        check: bool,
        /// Only the entry with this name (default `<upstream>/<repository>`).
        #[arg(long, value_name = "NAME")]
        entry: Option<String>,
        /// No progress bars, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Show the last run of every entry: tags, digests, platforms, bytes, errors, conflicts.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MirrorCommand {
    /// Show per-upstream health and cache counters of a running Wharf.
    Status {
        /// Base URL of the running Wharf [default: http://<WHARF_LISTEN or 127.0.0.1:5000>].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and report every problem.
    Check {
        /// The file (defaults to --config / WHARF_CONFIG).
        file: Option<PathBuf>,
    },
}

fn load(file: Option<&PathBuf>) -> Result<Config, ConfigError> {
    file.map_or_else(|| Ok(Config::default()), |f| Config::load(f))
}

/// Logs for one-shot commands: warnings and up unless RUST_LOG says otherwise (progress goes to stderr).
fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Keep the process small under many parallel transfers: glibc's default of one malloc arena per thread and
/// a mmap threshold that grows after every large free make transfer buffers (128–512 KiB, allocated on one
/// thread and freed on another) pile up as retained heap. Two arenas and a fixed threshold return them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called once at start-up before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Entry point of the `wharf` binary.
pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wharf: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Version => {
            println!("wharf {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let Some(file) = file.or(cli.config) else {
                return Err("config check needs a file (argument, --config or WHARF_CONFIG)".into());
            };
            let config = Config::load(&file)?;
            Settings::resolve(config, Overrides::default())?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Mirror(MirrorCommand::Status { url, json }) => {
            let url = url.unwrap_or_else(|| {
                let listen = std::env::var("WHARF_LISTEN").unwrap_or_else(|_| crate::config::DEFAULT_LISTEN.to_owned());
                format!("http://{listen}")
            });
            mirror_status(&url, json)
        }
        Command::Sync { action, dry_run, check, entry, no_progress } => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            match action {
                Some(SyncCommand::Status { json }) => sync::status(settings, json),
                None => {
                    let mode = if dry_run {
                        Mode::DryRun
                    } else if check {
                        Mode::Check
                    } else {
                        Mode::Copy
                    };
                    sync::run(settings, mode, entry, !no_progress)
                }
            }
        }
        Command::Serve { listen } => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen, data_dir: cli.data_dir })?;
            init_tracing();
            serve(settings)
        }
    }
}

fn serve(settings: Settings) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let data_dir = settings.data_dir.clone();
        let app = App::build(settings)?;
        let (addr, server) = app.serve(shutdown_signal()).await?;
        tracing::info!(%addr, data_dir = %data_dir.display(), "wharf is serving the OCI registry API on /v2/");
        println!("wharf listening on {addr}");
        server.await?;
        tracing::info!("shut down cleanly");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn mirror_status(url: &str, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let endpoint = format!("{}/_wharf/mirror", url.trim_end_matches('/'));
    let body: serde_json::Value = rt.block_on(async {
        let resp = reqwest::get(&endpoint).await.map_err(|e| format!("{endpoint}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{endpoint}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| format!("{endpoint}: {e}"))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let ups = body["upstreams"].as_array().cloned().unwrap_or_default();
    if ups.is_empty() {
        println!("no upstreams configured");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<8} {:>8} {:>8} {:>7} {:>7} {:>14}  url / last error",
        "UPSTREAM", "STATE", "HITS", "MISSES", "STALE", "ERRORS", "BYTES"
    );
    let mut unhealthy = false;
    for u in ups {
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        let state = u["health"]["state"].as_str().unwrap_or("?");
        unhealthy |= state != "closed";
        println!(
            "{:<24} {:<8} {:>8} {:>8} {:>7} {:>7} {:>14}  {}",
            u["name"].as_str().unwrap_or("?"),
            state,
            n("hits"),
            n("misses"),
            n("stale_served"),
            n("errors"),
            n("bytes_fetched"),
            u["url"].as_str().unwrap_or("?")
        );
        if let Some(e) = u["health"]["last_error"].as_str() {
            println!("{:<24} last error: {e}", "");
        }
    }
    Ok(if unhealthy { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
