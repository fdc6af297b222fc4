//! `wharf verify [--deep] [--json] [--server URL] REF | --all`: is an image complete and consistent?
//! Exit 0 when sound, 1 with one line per problem, 2 on usage or I/O errors.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use oci::RefSpec;

use crate::config::Settings;
use crate::store::fs::FsStore;
use crate::transfer::PlatformSpec;
use crate::verify::{self, ImageReport, Options, Report, Source, Target, Verifier};

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// The arguments of `wharf verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// `repo:tag`, `repo@digest`, or `repo` for every tag of it.
    #[arg(value_name = "REF", required_unless_present = "all", conflicts_with = "all")]
    reference: Option<String>,
    /// Every repository and tag of the local store.
    #[arg(long, conflicts_with = "server")]
    all: bool,
    /// Re-hash every blob against its digest (reads every byte, several blobs at once).
    #[arg(long)]
    deep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Verify on this registry over HTTP (`https://registry.k8s.io`) instead of the local store.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// File with a secret for Basic credentials at --server (a robot token or a password).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// User name sent with the secret.
    #[arg(long, value_name = "NAME", default_value = "robot", requires = "token_file")]
    user: String,
    /// A platform the image must offer (`linux/arm64`, `linux/arm/v7`); repeatable.
    #[arg(long = "require", value_name = "OS/ARCH[/VARIANT]")]
    require: Vec<String>,
}

/// Run `wharf verify`.
pub fn run(settings: Settings, args: VerifyArgs) -> CliResult {
    let required = args
        .require
        .iter()
        .map(|s| PlatformSpec::parse(s).ok_or_else(|| format!("--require {s:?}: expected os/arch or os/arch/variant")))
        .collect::<Result<Vec<_>, _>>()?;
    let target = args.reference.as_deref().map(verify::parse_target).transpose()?;
    let source = match &args.server {
        Some(url) => Source::Remote(Arc::new(super::registry_client(url, args.token_file.as_deref(), &args.user)?)),
        None => {
            let dir = &settings.data_dir;
            if !dir.join("repos").is_dir() {
                return Err(format!("{}: not a Wharf data directory (no repos/ folder)", dir.display()).into());
            }
            // Read-only, as `wharf sync status`: creates, locks and deletes nothing, so it runs beside `serve`.
            Source::Store(Arc::new(FsStore::open_read_only(dir)))
        }
    };
    let verifier = Verifier::new(source, Options { deep: args.deep, required, parallelism: 0 });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let reports = rt.block_on(async {
        match target {
            None => verify::verify_all(&verifier).await,
            Some(Target::One(repo, reference)) => verifier.verify(&repo, &reference).await.map(|r| vec![r]),
            Some(Target::Repo(repo)) => {
                let tags = verifier.source().tags(&repo).await?;
                let targets = tags.into_iter().map(|t| (repo.clone(), RefSpec::Tag(t))).collect();
                verify::verify_many(&verifier, targets).await
            }
        }
    })?;
    let report = Report::new(reports);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if std::io::stdout().is_terminal() {
        print_table(&report.images);
    } else {
        for line in verify::lines(&report.images) {
            println!("{line}");
        }
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The outbound client for `--server`, with Basic credentials from `--token-file`.
fn short(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) if hex.len() > 12 => format!("{algo}:{}…", &hex[..12]),
        _ => d.to_owned(),
    }
}

/// The terminal view: one row per image, then one row per problem.
fn print_table(images: &[ImageReport]) {
    let width = images.iter().map(|i| i.reference.chars().count()).max().unwrap_or(9).clamp(9, 60);
    println!(
        "{:<width$}  {:<20}  {:>9}  {:>12}  {:>10}  STATUS",
        "REFERENCE", "DIGEST", "PLATFORMS", "ATTESTATIONS", "SIGNATURES"
    );
    for i in images {
        let counts = verify::attached_counts(i);
        let status = if i.ok { "ok".to_owned() } else { format!("{} problem(s)", i.problems.len()) };
        println!(
            "{:<width$}  {:<20}  {:>9}  {:>12}  {:>10}  {status}",
            i.reference,
            i.digest.as_ref().map_or_else(|| "-".to_owned(), |d| short(&d.to_string())),
            i.platforms.len(),
            counts["attestations"],
            counts["signatures"],
        );
    }
    if images.iter().any(|i| !i.ok) {
        println!();
        println!("{:<width$}  PROBLEM", "REFERENCE");
        for i in images {
            for p in &i.problems {
                println!("{:<width$}  {p}", i.reference);
            }
        }
    }
}
