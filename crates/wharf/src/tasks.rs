//! Background work inside `wharf serve`: the sync schedules, the sweeper of abandoned uploads and scratch, the
//! `[gc]` and `[scrub]` schedules.
//! Each scheduled entry runs once at start-up and then every interval; the tasks are aborted when the server
//! shuts down.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::store::ContentStore;
use crate::sync::progress::Progress;
use crate::sync::{Mode, Syncer};

/// Spawn one loop per scheduled `[[sync]]` entry.
pub fn start_sync_schedules(syncer: Arc<Syncer>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for i in 0..syncer.entries().len() {
        let Some(every) = syncer.entries()[i].every else { continue };
        let syncer = syncer.clone();
        set.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let entry = &syncer.entries()[i];
                tracing::info!(entry = %entry.name, "scheduled sync starting");
                let r = syncer.run(entry, Mode::Copy, &Progress::silent()).await;
                tracing::info!(
                    entry = %entry.name,
                    tags = r.tags.len(),
                    bytes = r.bytes_copied,
                    errors = r.errors.len(),
                    conflicts = r.conflicts.len(),
                    "scheduled sync finished"
                );
            }
        });
    }
    set
}

/// How often the sweeper runs: a quarter of the upload expiry (a session is removed at most 25% after it
/// expired; requests see it as unknown from the moment it expires), between 1 s and 10 minutes.
pub fn sweep_every(expiry: Duration) -> Duration {
    (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Sweep expired upload sessions and gone processes' scratch every `every` (the start-up sweep runs before
/// the listener opens). A failed sweep is logged and retried next time: the server keeps serving.
pub fn start_sweeper(set: &mut JoinSet<()>, store: Arc<dyn ContentStore>, every: Duration) {
    set.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; start-up already swept
        loop {
            tick.tick().await;
            match store.sweep().await {
                Ok(r) if r.uploads + r.scratch > 0 => {
                    tracing::info!(uploads = r.uploads, scratch = r.scratch, "swept expired uploads and scratch")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired uploads failed; retrying at the next interval"),
            }
        }
    });
}

/// Collect garbage every `every` (first after one interval, not at start-up). A round whose `gc.lock` is held
/// (a `wharf gc` running beside the server) is skipped with a log line; failures are logged and retried.
pub fn start_gc(
    set: &mut JoinSet<()>,
    registry: crate::service::Registry,
    collector: Arc<crate::gc::Collector>,
    every: Duration,
    grace: Duration,
) {
    set.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            match registry.collect(&collector, grace, false).await {
                Ok(r) => tracing::info!(
                    tags_removed = r.tags_removed_count,
                    manifests = r.manifests_deleted,
                    links = r.links_deleted,
                    blobs = r.blobs_deleted,
                    bytes = r.bytes_freed,
                    errors = r.errors.len(),
                    millis = r.duration_ms,
                    "scheduled garbage collection finished"
                ),
                Err(crate::gc::GcError::Busy(who)) => {
                    tracing::info!("scheduled garbage collection skipped: another collection is running{who}")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduled garbage collection failed; retrying at the next interval")
                }
            }
        }
    });
}

/// How often pull times noted for `[[retention]] keep_within` reach the store (a `wharf gc` in another
/// process reads them there; the server's own collections also see the unflushed ones).
const PULL_FLUSH: Duration = Duration::from_secs(10);

/// Write noted pull times every [`PULL_FLUSH`].
pub fn start_pull_flush(set: &mut JoinSet<()>, registry: crate::service::Registry) {
    set.spawn(async move {
        let mut tick = tokio::time::interval(PULL_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = registry.flush_pulls().await {
                tracing::warn!(error = %e, "writing pull times failed; retrying later");
            }
        }
    });
}

/// Scrub every `every` (first after one interval), re-hashing at most `rate` bytes per second; the next pass
/// starts `every` after the previous one ended. A pass whose `scrub.lock` is held is skipped.
pub fn start_scrub(
    set: &mut JoinSet<()>,
    scrubber: Arc<crate::scrub::Scrubber>,
    every: Duration,
    rate: u64,
    events: crate::events::Events,
) {
    set.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match scrubber.run(crate::scrub::ScrubOptions { rate: Some(rate) }).await {
                Ok(r) if r.corrupt_found > 0 => {
                    events.emit(crate::events::Event::global(
                        "scrub.corrupt",
                        serde_json::json!({"corrupt_found": r.corrupt_found, "corrupt": r.corrupt}),
                    ));
                    tracing::warn!(corrupt = r.corrupt_found, "scheduled scrub found corrupt objects")
                }
                Ok(r) => tracing::info!(
                    objects = r.objects_checked,
                    bytes = r.bytes_checked,
                    corrupt = r.corrupt_found,
                    errors = r.errors.len(),
                    millis = r.duration_ms,
                    "scheduled scrub finished"
                ),
                Err(crate::scrub::ScrubError::Busy(who)) => {
                    tracing::info!("scheduled scrub skipped: another scrub is running{who}")
                }
                Err(e) => tracing::warn!(error = %e, "scheduled scrub failed; retrying at the next interval"),
            }
        }
    });
}

/// How often `serve` looks at the mirror cache budget (the cheap estimate) and flushes access times.
pub const BUDGET_CHECK: std::time::Duration = Duration::from_secs(2);
/// Access times are written at least this often.
pub const ACCESS_FLUSH: Duration = Duration::from_secs(30);
/// A full budget pass (measure, evict) runs at least this often, whatever the estimate says.
pub const BUDGET_PASS: Duration = Duration::from_secs(300);

/// The mirror cache budget: a pass at start-up (measures the cache), then every [`BUDGET_CHECK`] the cheap
/// estimate (last measured usage + bytes filled since) and a pass when it is over, or every [`BUDGET_PASS`];
/// access times are flushed every [`ACCESS_FLUSH`] or sooner when the in-memory map fills up.
pub fn start_cache_budget(
    set: &mut JoinSet<()>,
    mirror: Arc<crate::mirror::Mirror>,
    collector: Arc<crate::gc::Collector>,
) {
    set.spawn(async move {
        let mut last_flush = std::time::Instant::now();
        let mut last_pass: Option<std::time::Instant> = None;
        let mut tick = tokio::time::interval(BUDGET_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The periodic check, or at once when a fill pushed the cache over budget.
            tokio::select! {
                _ = tick.tick() => {}
                _ = mirror.over_budget_signal() => {}
            }
            let due = !matches!(last_pass, Some(t) if t.elapsed() < BUDGET_PASS) || mirror.over_budget_estimate();
            if due {
                last_pass = Some(std::time::Instant::now());
                last_flush = std::time::Instant::now();
                match mirror.enforce_budget(&collector).await {
                    Ok(r) if r.evicted > 0 || r.blobs_deleted > 0 => tracing::info!(
                        before = r.bytes_before,
                        after = r.bytes_after,
                        evicted = r.evicted,
                        bytes_evicted = r.bytes_evicted,
                        blobs_deleted = r.blobs_deleted,
                        bytes_freed = r.bytes_freed,
                        "mirror cache over budget: evicted least recently used images"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "mirror cache budget pass failed; retrying later"),
                }
            } else if mirror.flush_due() || last_flush.elapsed() >= ACCESS_FLUSH {
                last_flush = std::time::Instant::now();
                if let Err(e) = mirror.flush_access().await {
                    tracing::warn!(error = %e, "writing mirror access times failed; retrying later");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(sweep_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(sweep_every(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(sweep_every(Duration::from_secs(86_400)), Duration::from_secs(600));
    }
}
