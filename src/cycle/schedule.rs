//! When a group's cycles run: one per tick of `interval`, never two at once; ticks
//! missed while a cycle runs are skipped and counted as overruns. Between cycles the
//! loop answers snapshot requests (state saves) and catalog label edits, so the runner
//! is only ever touched by its own task.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::{CycleContext, GroupRunner};
use crate::clock::now_ms;
use crate::detect::Snapshot;
use crate::export::catalog::{EditError, EditOutcome, LabelEdit};

/// Where a group loop sends its detectors' snapshots.
pub type SnapshotReply = oneshot::Sender<BTreeMap<String, Snapshot>>;
/// A catalog label edit and where its outcome goes.
pub type EditRequest = (LabelEdit, oneshot::Sender<Result<EditOutcome, EditError>>);

/// A group's loop: one cycle per tick, never two at once. Ticks missed while a cycle
/// runs are skipped and counted as overruns.
pub async fn group_loop(
    mut runner: GroupRunner,
    ctx: CycleContext,
    mut stop: watch::Receiver<bool>,
    mut snapshots: mpsc::Receiver<SnapshotReply>,
    mut labels: mpsc::Receiver<EditRequest>,
) -> GroupRunner {
    let interval = runner.config().interval;
    let name = runner.config().name.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(reply) = snapshots.recv() => {
                let _ = reply.send(runner.snapshots());
            }
            Some((edit, reply)) = labels.recv() => {
                let _ = reply.send(runner.edit_labels(&edit, &ctx.catalog));
            }
            _ = ticker.tick() => {
                let started = Instant::now();
                let (r, _) = runner.run_cycle(&ctx, now_ms()).await;
                runner = r;
                let missed = started.elapsed().as_nanos() / interval.as_nanos().max(1);
                for _ in 0..missed {
                    ctx.telemetry.cycle_overran(&name, interval);
                }
            }
        }
    }
    runner
}
