//! Background work inside `wharf serve`: the sync schedules. Each scheduled entry runs once at start-up and
//! then every interval; the tasks are aborted when the server shuts down.

use std::sync::Arc;

use tokio::task::JoinSet;

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
