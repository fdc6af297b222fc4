//! `wharf scrub` and `wharf scrub status`.

use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{Access, Core};
use crate::config::Settings;
use crate::scrub::{ScrubOptions, ScrubReport, ScrubStats};

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn print(r: &ScrubReport) {
    let rate = r.rate_bytes_per_sec.map(|b| format!(", at most {b} bytes/s")).unwrap_or_default();
    println!("scrub at {} (unix seconds), {} ms{rate}", r.started_at, r.duration_ms);
    println!(
        "  checked {} objects ({} blobs, {} manifests), {} bytes; {} corrupt",
        r.objects_checked, r.blobs_checked, r.manifests_checked, r.bytes_checked, r.corrupt_found
    );
    for c in &r.corrupt {
        let name = match &c.repository {
            Some(repo) => format!("{repo}@{}", c.digest),
            None => c.digest.clone(),
        };
        println!("  CORRUPT {} {name} (hashes to {})", c.kind, c.found);
        match &c.quarantined_to {
            Some(p) => println!("    moved to {p}"),
            None => println!("    NOT moved (see the errors)"),
        }
        if !c.unlinked_from.is_empty() {
            println!("    unlinked from {}", c.unlinked_from.join(", "));
        }
        println!("    {}", c.note);
    }
    for e in &r.errors {
        println!("  ERROR {e}");
    }
}

/// Exit code of a report: 1 when something was corrupt, 2 when something could not be checked, else 0.
fn code(r: &ScrubReport) -> ExitCode {
    if r.corrupt_found > 0 {
        ExitCode::from(1)
    } else if !r.errors.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Check every object of the data directory once (beside a running server is fine).
pub fn run(settings: Settings, rate: Option<String>) -> CliResult {
    super::defer_to_server();
    let rate = rate.map(|r| crate::config::scrub::parse_rate(&r).map_err(|e| format!("--rate: {e}"))).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let core = Core::build(&settings, Access::Write)?;
        let scrubber = crate::app::scrubber(&settings, core.store.clone(), Arc::new(ScrubStats::default()));
        let report = scrubber.run(ScrubOptions { rate }).await?;
        print(&report);
        Ok(code(&report))
    })
}

/// Print the last stored report.
pub fn status(settings: Settings, json: bool) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let core = Core::build(&settings, Access::ReadOnly)?;
        let last = crate::scrub::last_report(core.store.as_ref()).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "last": last }))?);
        } else {
            match &last {
                Some(r) => print(r),
                None => println!("no scrub has run yet"),
            }
        }
        Ok(last.as_ref().map_or(ExitCode::SUCCESS, code))
    })
}
