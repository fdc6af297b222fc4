//! The command line: the only place that prints to the terminal or uses `anyhow`-style error reporting.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bundle;
mod gc;
mod images;
mod nodes;
mod scrub;
mod sync;
mod tag;
mod token;
mod verify;

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
        /// Copy the images of this lock file (`wharf images lock`) at their locked digests, instead of the
        /// configured [[sync]] entries.
        #[arg(long, value_name = "FILE", conflicts_with = "entry")]
        lock: Option<PathBuf>,
    },
    /// Runtime configuration that points nodes and builders at Wharf (containerd, docker, podman, k3s,
    /// buildkit, kind).
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Image references in Dockerfiles and YAML: scan, lock to digests through Wharf, rewrite.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Robot tokens: secrets for machines (CI) with their own repository permissions.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Tag moves on hosted repositories (compare-and-swap, aliases, rollback) and their history.
    #[command(subcommand)]
    Tag(TagCommand),
    /// Collect garbage once: unreachable manifests, unneeded blob links, unlinked pool blobs (or show the last
    /// report with `wharf gc status`). Safe beside a running `wharf serve`.
    Gc {
        #[command(subcommand)]
        action: Option<GcCommand>,
        /// Keep content written or linked within this long (`90s`, `30m`, `1h`; `0s` keeps nothing)
        /// [default: `[gc] grace`, else 1h].
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// Delete nothing; report what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check that images are complete and consistent: child manifests, config platforms, blob presence and
    /// sizes (with --deep, every digest), required platforms; attestations and signatures listed per platform.
    /// Exit 0 when sound, 1 with one line per problem, 2 on usage or I/O errors.
    Verify(verify::VerifyArgs),
    /// Re-hash every stored blob and manifest once; corrupt ones are moved to `quarantine/` in the data
    /// directory (exit code 1 when any was found, 0 when all are sound, 2 on errors). Or show the last report
    /// with `wharf scrub status`. Safe beside a running `wharf serve`.
    Scrub {
        #[command(subcommand)]
        action: Option<ScrubCommand>,
        /// Bytes re-hashed per second at most (`50MiB`, `500MB`, `1GiB`) [default: unlimited].
        #[arg(long, value_name = "SIZE")]
        rate: Option<String>,
    },
    /// Air-gap bundles: `wharf bundle export REF... -o FILE` writes images (every platform, referrers) as an
    /// OCI image layout in one tar; `wharf bundle import FILE` verifies every digest and loads it, pinned.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ScrubCommand {
    /// Show the last scrub's report.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GcCommand {
    /// Show the last collection's report.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TagCommand {
    /// Point REPO:TAG at DIGEST (a manifest in the repository); with --expect only if it points at OLD now.
    Set {
        /// `repository:tag`.
        target: String,
        /// The manifest digest.
        digest: String,
        /// Compare-and-swap: the digest the tag must point at now.
        #[arg(long, value_name = "OLD")]
        expect: Option<String>,
    },
    /// Point REPO:ALIAS at what REPO:TARGET points at now (a moving alias over immutable versions).
    Alias {
        /// `repository:alias` (e.g. `app:1.29`).
        alias: String,
        /// `repository:tag` (e.g. `app:1.29.3`).
        target: String,
    },
    /// Show the moves of REPO:TAG, or of every tag of REPO.
    History {
        /// `repository` or `repository:tag`.
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move REPO:TAG back to where it pointed before its last move, or to --to DIGEST.
    Rollback {
        /// `repository:tag`.
        target: String,
        /// The digest to move it to.
        #[arg(long, value_name = "DIGEST")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Print every image reference found: `reference<TAB>file:line`.
    Scan {
        #[command(flatten)]
        inputs: images::Inputs,
    },
    /// Resolve every reference through Wharf to its digest (and each platform's) and write a lock file.
    Lock {
        #[command(flatten)]
        inputs: images::Inputs,
        #[command(flatten)]
        server: images::Server,
        /// The lock file.
        #[arg(long, short = 'o', value_name = "FILE", default_value = "wharf.lock")]
        output: PathBuf,
        /// Compare with the existing lock file instead: exit 1 when a reference is missing or stale.
        #[arg(long)]
        check: bool,
    },
    /// Rewrite references in place to Wharf's name and/or to the digests of a lock file.
    Rewrite {
        #[command(flatten)]
        inputs: images::Inputs,
        /// Wharf's `host:port`: references become `<registry>/<origin host>/<repository>`.
        #[arg(long, value_name = "HOST:PORT")]
        registry: Option<String>,
        /// Pin references to the digests of the lock file (`@sha256:…`, the tag kept).
        #[arg(long)]
        pin: bool,
        /// The lock file `--pin` reads.
        #[arg(long, value_name = "FILE", default_value = "wharf.lock")]
        lock: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
    /// Generate the files for one runtime format (every configured upstream; printed, or written under --out).
    Config {
        #[command(flatten)]
        args: nodes::NodeArgs,
        /// Directory to write the files into (printed to stdout without it).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Install the files on this node (atomically; unchanged files are left alone, changed ones backed up).
    Apply {
        #[command(flatten)]
        args: nodes::NodeArgs,
        /// Root of the node's filesystem.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret once (stdout; the only copy).
    Create {
        /// Unique among active tokens; the caller is `robot:<NAME>` in rules and logs.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What it may do: `REPOS:ACTIONS` (globs or `re:`; actions pull, push, delete, admin). Repeatable.
        #[arg(long = "allow", value_name = "REPOS:ACTIONS", required = true)]
        allow: Vec<String>,
        /// Lifetime: `90s`, `12h`, `30d` (at most 366d), or `never`.
        #[arg(long, value_name = "DURATION")]
        expires: String,
    },
    /// List tokens: name, id, allow list, created, expires, state (never the secret).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or the active token with this name.
    Revoke {
        /// The token's name or id.
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
    },
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
            if let Some(tls) = &config.server.tls {
                // Read the files too: a certificate that does not load should fail here, not at start-up.
                match crate::tls::load(tls) {
                    Ok(loaded) => {
                        for w in loaded.warnings {
                            eprintln!("warning: {}: {w}", file.display());
                        }
                    }
                    Err(issues) => return Err(ConfigError::Invalid { file, issues }.into()),
                }
            }
            // Users and rules as the server would build them: an unreadable or malformed htpasswd file fails here.
            if let Some(path) = config.auth.as_ref().and_then(|a| a.htpasswd.as_ref()) {
                if let Err(reason) = crate::auth::load_htpasswd(path) {
                    let issues = vec![crate::config::ConfigIssue { key: "auth.htpasswd".into(), reason }];
                    return Err(ConfigError::Invalid { file, issues }.into());
                }
            }
            // OIDC key files as the server would load them (jwks_url sets are fetched by the server only).
            let oidc = config.auth.as_ref().map(|a| a.oidc.as_slice()).unwrap_or_default();
            let issues: Vec<_> = oidc
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    let reason = crate::auth::oidc::load_jwks_file(o.jwks_file.as_ref()?).err()?.to_string();
                    Some(crate::config::ConfigIssue { key: format!("auth.oidc[{i}].jwks_file"), reason })
                })
                .collect();
            if !issues.is_empty() {
                return Err(ConfigError::Invalid { file, issues }.into());
            }
            Settings::resolve(config, Overrides::default())?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tag(cmd) => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            match cmd {
                TagCommand::Set { target, digest, expect } => tag::set(settings, &target, &digest, expect.as_deref()),
                TagCommand::Alias { alias, target } => tag::alias(settings, &alias, &target),
                TagCommand::History { target, json } => tag::history(settings, &target, json),
                TagCommand::Rollback { target, to } => tag::rollback(settings, &target, to.as_deref()),
            }
        }
        Command::Images(ImagesCommand::Scan { inputs }) => images::scan(&inputs),
        Command::Images(ImagesCommand::Lock { inputs, server, output, check }) => {
            images::lock(&inputs, &server, &output, check)
        }
        Command::Images(ImagesCommand::Rewrite { inputs, registry, pin, lock }) => {
            images::rewrite(&inputs, registry, pin.then_some(lock.as_path()))
        }
        Command::Nodes(NodesCommand::Config { args, out }) => {
            nodes::config(&args, &load(cli.config.as_ref())?, out.as_deref())
        }
        Command::Nodes(NodesCommand::Apply { args, root }) => nodes::apply(&args, &load(cli.config.as_ref())?, &root),
        Command::Mirror(MirrorCommand::Status { url, json }) => {
            let url = url.unwrap_or_else(|| {
                let listen = std::env::var("WHARF_LISTEN").unwrap_or_else(|_| crate::config::DEFAULT_LISTEN.to_owned());
                format!("http://{listen}")
            });
            mirror_status(&url, json)
        }
        Command::Sync { action, dry_run, check, entry, no_progress, lock } => {
            let mut config = load(cli.config.as_ref())?;
            if let Some(lock) = lock {
                config.syncs = vec![crate::config::sync::SyncConfig { lock: Some(lock), ..Default::default() }];
            }
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
        Command::Token(cmd) => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            match cmd {
                TokenCommand::Create { name, allow, expires } => token::create(settings, &name, &allow, &expires),
                TokenCommand::List { json } => token::list(settings, json),
                TokenCommand::Revoke { name_or_id } => token::revoke(settings, &name_or_id),
            }
        }
        Command::Gc { action, grace, dry_run } => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            match action {
                Some(GcCommand::Status { json }) => gc::status(settings, json),
                None => gc::run(settings, grace, dry_run),
            }
        }
        Command::Bundle(cmd) => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            bundle::run(settings, cmd)
        }
        Command::Verify(args) => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            verify::run(settings, args)
        }
        Command::Scrub { action, rate } => {
            let config = load(cli.config.as_ref())?;
            let settings = Settings::resolve(config, Overrides { listen: None, data_dir: cli.data_dir })?;
            init_tracing_quiet();
            match action {
                Some(ScrubCommand::Status { json }) => scrub::status(settings, json),
                None => scrub::run(settings, rate),
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
        let tls = settings.config.server.tls.is_some();
        let app = App::build(settings)?;
        let (addr, server) = app.serve(shutdown_signal()).await?;
        let scheme = if tls { "https" } else { "http" };
        tracing::info!(%addr, scheme, data_dir = %data_dir.display(), "wharf is serving the OCI registry API on /v2/");
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
        if u["max_bytes"].is_u64() || n("evictions") > 0 {
            let limit = u["max_bytes"].as_u64().map_or("-".to_owned(), |b| b.to_string());
            println!(
                "{:<24} cache {} bytes, budget {limit}, {} evictions ({} bytes)",
                "",
                n("cache_bytes"),
                n("evictions"),
                n("bytes_evicted")
            );
        }
    }
    if let Some(max) = body["budget"]["max_bytes"].as_u64() {
        println!("mirror cache: {} of {max} bytes", body["budget"]["cache_bytes"].as_u64().unwrap_or(0));
    }
    Ok(if unhealthy { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// A client for a registry given on the command line (`--server URL`, with `--token-file` and `--user` for
/// Basic credentials), for commands that read or write a registry instead of the local store.
pub(crate) fn registry_client(
    url: &str,
    token_file: Option<&std::path::Path>,
    user: &str,
) -> Result<crate::upstream::Upstream, Box<dyn std::error::Error>> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("--server {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("--server {url:?}: expected http(s)://host[:port]").into());
    }
    let password = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|e| format!("--token-file {}: {e}", p.display()))?.trim().to_owned(),
        ),
        None => None,
    };
    let cfg = crate::config::upstream::UpstreamConfig {
        name: parsed.host_str().unwrap_or_default().to_owned(),
        url: url.trim_end_matches('/').to_owned(),
        username: password.as_ref().map(|_| user.to_owned()),
        password,
        ..Default::default()
    };
    Ok(crate::upstream::Upstream::from_config(&cfg)?)
}

/// Lower this process's CPU priority (nice 10): `wharf gc` and `wharf scrub` run beside a serving `wharf serve`
/// and should take the CPU it leaves, not add to its request latency. Best effort: an error changes nothing.
pub(crate) fn defer_to_server() {
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(error = %e, "could not lower the CPU priority");
    }
}
