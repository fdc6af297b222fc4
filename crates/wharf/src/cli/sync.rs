//! `wharf sync` and `wharf sync status`.

use std::process::ExitCode;

use crate::app::{Access, Core};
use crate::config::Settings;
use crate::sync::progress::Progress;
use crate::sync::report::Report;
use crate::sync::Mode;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

fn short(d: &Option<String>) -> String {
    d.as_deref().map(|d| d.chars().take(19).collect()).unwrap_or_else(|| "-".into())
}

fn print(r: &Report) {
    println!("{} ({} {} → {}, {})", r.entry, r.upstream, r.repository, r.destination, r.mode);
    for t in &r.tags {
        let present = t.platforms.iter().filter(|p| p.present).count();
        let platforms =
            if t.platforms.is_empty() { String::new() } else { format!("  {present}/{} platforms", t.platforms.len()) };
        let previous = t.previous.as_ref().map(|p| format!("  (was {})", short(&Some(p.clone())))).unwrap_or_default();
        println!("  {:<24} {:<10} {}{platforms}{previous}", t.tag, t.action, short(&t.digest));
        if !t.missing_platforms.is_empty() {
            println!("    MISSING required platform(s): {}", t.missing_platforms.join(", "));
        }
    }
    println!(
        "  {} blobs copied ({} bytes), {} already present, {} manifests written",
        r.blobs_copied, r.bytes_copied, r.blobs_skipped, r.manifests_copied
    );
    for c in &r.conflicts {
        println!("  CONFLICT {}: immutable tag moved upstream to {}; kept {}", c.tag, c.upstream, c.kept);
    }
    for e in &r.errors {
        println!("  ERROR {e}");
    }
    if let Some(s) = &r.stopped_early {
        println!("  STOPPED EARLY: {s}");
    }
}

/// Run the entries once.
pub fn run(settings: Settings, mode: Mode, only: Option<String>, progress: bool) -> CliResult {
    if settings.config.syncs.is_empty() {
        return Err("no [[sync]] entries in the configuration (pass --config FILE)".into());
    }
    let rt = runtime()?;
    rt.block_on(async move {
        // Beside a running server is fine: every store write is an atomic rename, and in-flight files stay in
        // this process's own scratch folder.
        let core = Core::build(&settings, Access::Write)?;
        let progress = Progress::new(progress);
        let reports = match &only {
            None => core.syncer.run_all(mode, &progress).await,
            Some(name) => match core.syncer.entries().iter().find(|e| e.name == *name) {
                Some(entry) => vec![core.syncer.run(entry, mode, &progress).await],
                None => return Err(format!("no [[sync]] entry named {name:?}").into()),
            },
        };
        let mut failed = false;
        for r in &reports {
            print(r);
            failed |= r.failed() || (mode == Mode::Check && r.drifted());
        }
        Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

/// Print the stored reports.
pub fn status(settings: Settings, json: bool) -> CliResult {
    let rt = runtime()?;
    rt.block_on(async move {
        let core = Core::build(&settings, Access::ReadOnly)?;
        let reports = core.syncer.reports().await;
        if json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "entries": reports }))?);
        } else if reports.is_empty() {
            println!("no sync has run yet");
        }
        if !json {
            for r in &reports {
                if r.finished_at > 0 {
                    println!("last run: {} (unix seconds)", r.finished_at);
                }
                print(r);
            }
        }
        Ok(if reports.iter().any(Report::failed) { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}
