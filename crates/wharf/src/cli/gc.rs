//! `wharf gc` (retention rules, then one collection) and `wharf gc status`.

use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{Access, Core};
use crate::config::Settings;
use crate::gc::{GcReport, GcStats, DEFAULT_GRACE};
use crate::service::Registry;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn print(r: &GcReport) {
    let what = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "garbage collection at {} (unix seconds), grace {}s, {} ms{}",
        r.started_at,
        r.grace_secs,
        r.duration_ms,
        if r.dry_run { ", DRY RUN" } else { "" }
    );
    println!(
        "  {} repositories scanned; {what} {} manifests, {} blob links, {} pool blobs ({} bytes)",
        r.repositories_scanned, r.manifests_deleted, r.links_deleted, r.blobs_deleted, r.bytes_freed
    );
    if r.pool_blobs > 0 {
        println!("  blob pool before the sweep: {} blobs, {} bytes", r.pool_blobs, r.pool_bytes);
    }
    if r.tags_removed_count > 0 {
        let how = if r.dry_run { "would remove" } else { "removed" };
        println!("  retention {how} {} tags:", r.tags_removed_count);
        for t in &r.tags_removed {
            println!("    {}:{} ({}) {}", t.repository, t.tag, t.digest, t.reason);
        }
    }
    for repo in &r.repositories {
        println!("  {:<40} {} manifests, {} links", repo.repository, repo.manifests_deleted, repo.links_deleted);
    }
    for e in &r.errors {
        println!("  ERROR {e}");
    }
}

/// Run one collection on the data directory (beside a running server is fine: see docs/ARCHITECTURE.md).
pub fn run(settings: Settings, grace: Option<String>, dry_run: bool) -> CliResult {
    super::defer_to_server();
    let grace = match grace {
        Some(g) => crate::config::sync::parse_duration(&g).map_err(|e| format!("--grace: {e}"))?,
        None => match &settings.config.gc {
            Some(gc) => gc.grace().map_err(|e| format!("gc.grace: {e}"))?,
            None => DEFAULT_GRACE,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let core = Core::build(&settings, Access::Write)?;
        let collector = crate::app::gc_collector(&settings, core.store.clone(), Arc::new(GcStats::default()));
        let registry = Registry::new(core.store.clone())
            .with_tag_policy(crate::app::tag_policy(&settings.config)?)
            .with_retention(crate::app::retention(&settings.config)?);
        let report = registry.collect(&collector, grace, dry_run).await?;
        print(&report);
        Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Print the last stored report.
pub fn status(settings: Settings, json: bool) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let core = Core::build(&settings, Access::ReadOnly)?;
        let last = crate::gc::last_report(core.store.as_ref()).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "last": last }))?);
        } else {
            match &last {
                Some(r) => print(r),
                None => println!("no garbage collection has run yet"),
            }
        }
        Ok(if last.is_some_and(|r| !r.errors.is_empty()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}
