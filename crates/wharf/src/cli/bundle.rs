//! `wharf bundle export` and `wharf bundle import`: air-gap bundles (an OCI image layout in a tar file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use oci::RefSpec;

use crate::app::{Access, Core};
use crate::bundle::export::{ExportItem, ExportOptions};
use crate::bundle::import::ImportOptions;
use crate::config::Settings;
use crate::policy::routing::cache_repo;
use crate::store::fs::FsStore;
use crate::transfer::{Destination, PlatformSpec};
use crate::upstream::Upstream;
use crate::verify::Source;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// `wharf bundle ...`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write images (every platform, their referrers) to one tar file in OCI image layout.
    Export(ExportArgs),
    /// Verify a bundle (Wharf's or any OCI layout tar, such as skopeo's oci-archive) and load it.
    Import(ImportArgs),
}

/// A registry over HTTP instead of the local store.
#[derive(Debug, Args)]
pub struct Remote {
    /// Read from (export) or write to (import) this registry (`https://wharf.example:5000`) instead of the
    /// local store in --data-dir.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File with a secret for Basic credentials at --server (a robot token or a password).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// User name sent with the secret.
    #[arg(long, value_name = "NAME", default_value = "robot", requires = "token_file")]
    user: String,
}

/// `wharf bundle export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Images as `repo:tag` or `repo@digest`.
    #[arg(value_name = "REF", required_unless_present = "lock")]
    refs: Vec<String>,
    /// Also every image of this lock file (`wharf images lock`), at its locked digest, named as locked.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// The bundle file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Only these platforms of multi-platform images (`linux/arm64`); repeatable [default: all].
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<String>,
    /// Leave referrers (signatures, SBOMs, attestations) out.
    #[arg(long)]
    no_referrers: bool,
    /// Incremental: leave out the blobs the other side has, given a bundle it imported before or its lock
    /// file (`wharf images lock`); repeatable.
    #[arg(long = "since", value_name = "BUNDLE|LOCK")]
    since: Vec<PathBuf>,
    #[command(flatten)]
    remote: Remote,
}

/// `wharf bundle import`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Repository prefix for every image; for entries named by a tag only, the repository.
    #[arg(long, value_name = "REPO-PREFIX")]
    to: Option<String>,
    /// Move existing tags that point at other content.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    remote: Remote,
}

fn remote(url: &str, r: &Remote) -> Result<Arc<Upstream>, Box<dyn std::error::Error>> {
    Ok(Arc::new(super::registry_client(url, r.token_file.as_deref(), &r.user)?))
}

fn items(args: &ExportArgs) -> Result<Vec<ExportItem>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for r in &args.refs {
        let (repo, reference) = crate::bundle::parse_ref(r)?;
        let name = match &reference {
            RefSpec::Tag(t) => format!("{repo}:{t}"),
            // An image asked for by digest is named by its repository and the digest's first hex digits.
            RefSpec::Digest(d) => format!("{repo}:sha256-{}", &d.hex()[..16.min(d.hex().len())]),
        };
        out.push(ExportItem { name, repo, reference });
    }
    if let Some(path) = &args.lock {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--lock {}: {e}", path.display()))?;
        let lock = crate::images::Lock::parse(&text).map_err(|e| format!("--lock {}: {e}", path.display()))?;
        for (key, locked) in &lock.images {
            let r: oci::reference::Reference = key.parse().map_err(|e| format!("--lock: {key:?}: {e}"))?;
            let digest = locked.digest.parse().map_err(|e| format!("--lock: {key:?}: {e}"))?;
            // Where Wharf keeps it (mirror cache or sync): the one cache-name formula.
            let repo = cache_repo(&r.registry, &r.repo).map_err(|e| format!("--lock: {key:?}: {e}"))?;
            let name = match &r.tag {
                Some(t) => format!("{repo}:{t}"),
                None => format!("{repo}:sha256-{}", &locked.digest.trim_start_matches("sha256:")[..16]),
            };
            out.push(ExportItem { name, repo, reference: RefSpec::Digest(digest) });
        }
    }
    Ok(out)
}

/// Run `wharf bundle ...`.
pub fn run(settings: Settings, cmd: BundleCommand) -> CliResult {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd {
        BundleCommand::Export(args) => {
            let platforms = args
                .platforms
                .iter()
                .map(|s| PlatformSpec::parse(s).ok_or_else(|| format!("--platform {s:?}: expected os/arch[/variant]")))
                .collect::<Result<Vec<_>, _>>()?;
            let items = items(&args)?;
            let source = match &args.remote.server {
                Some(url) => Source::Remote(remote(url, &args.remote)?),
                None => {
                    let dir = &settings.data_dir;
                    if !dir.join("repos").is_dir() {
                        return Err(format!("{}: not a Wharf data directory (no repos/ folder)", dir.display()).into());
                    }
                    // Read-only: runs beside `serve`.
                    Source::Store(Arc::new(FsStore::open_read_only(dir)))
                }
            };
            let started = std::time::Instant::now();
            let inv = rt.block_on(async {
                let mut skip = std::collections::HashSet::new();
                for p in &args.since {
                    let text = std::fs::read(p).map_err(|e| format!("--since {}: {e}", p.display()))?;
                    // A lock file is JSON; anything else is taken for a bundle.
                    match std::str::from_utf8(&text).ok().and_then(|t| crate::images::Lock::parse(t).ok()) {
                        Some(lock) => {
                            let mut held = Vec::new();
                            for (key, locked) in &lock.images {
                                let r: oci::reference::Reference =
                                    key.parse().map_err(|e| format!("--since {}: {key:?}: {e}", p.display()))?;
                                let repo = cache_repo(&r.registry, &r.repo).map_err(|e| format!("{key:?}: {e}"))?;
                                held.push((repo, locked.digest.parse().map_err(|e| format!("{key:?}: {e}"))?));
                            }
                            skip.extend(crate::bundle::export::held_by(&source, &held).await?);
                        }
                        None => skip.extend(crate::bundle::export::carried_by(p)?),
                    }
                }
                let opts = ExportOptions { platforms, no_referrers: args.no_referrers, skip };
                Ok::<_, Box<dyn std::error::Error>>(
                    crate::bundle::export::export(source, items, opts, &args.output).await?,
                )
            })?;
            for i in &inv.images {
                let platforms =
                    if i.platforms.is_empty() { String::new() } else { format!(" [{}]", i.platforms.join(", ")) };
                println!("{} {}{platforms}, {} referrers", i.name, i.digest, i.referrers);
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "wrote {}: {} images, {} blobs, {} bytes in {secs:.1}s ({:.0} MB/s){}",
                args.output.display(),
                inv.images.len(),
                inv.blobs,
                inv.bytes,
                inv.bytes as f64 / secs.max(1e-6) / 1e6,
                if inv.omitted_blobs > 0 {
                    format!("; {} blobs left out (the other side has them)", inv.omitted_blobs)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Import(args) => {
            let opts = ImportOptions { to: args.to.clone(), force: args.force };
            let started = std::time::Instant::now();
            let report = rt.block_on(async {
                let (dest, pins) = match &args.remote.server {
                    Some(url) => (Destination::Remote(remote(url, &args.remote)?), None),
                    None => {
                        let core = Core::build(&settings, Access::Write)?;
                        (Destination::Local(core.store.clone()), Some(core.store.clone()))
                    }
                };
                Ok::<_, Box<dyn std::error::Error>>(crate::bundle::import::import(&args.file, dest, pins, opts).await?)
            })?;
            for (name, digest) in &report.images {
                println!("{name} {digest}");
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "imported {}: {} images, {} manifests, {} blobs written ({} bytes, {:.0} MB/s), {} already present",
                args.file.display(),
                report.images.len(),
                report.manifests,
                report.blobs_written,
                report.bytes_written,
                report.bytes_written as f64 / secs.max(1e-6) / 1e6,
                report.blobs_present
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
