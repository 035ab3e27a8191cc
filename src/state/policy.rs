//! How the agent restores and saves its learned state: a bad file at start is set aside,
//! never fatal; a save runs on a blocking thread and is logged and counted. The app calls
//! these at start, on the `state_save_interval` timer, after a catalog label edit and at
//! shutdown. The file format is in the parent module.

use std::path::Path;
use std::time::Instant;

use tracing::info;

use super::{path_in, State};
use crate::clock::now_ms;
use crate::telemetry::Telemetry;

/// The state to start from: the saved file in `dir` when it loads, else a fresh state.
/// An unusable file is moved aside (`*.corrupt-<unix seconds>`) and logged, never fatal:
/// refusing to start would take the node's agent down for good.
pub(crate) fn restore_or_fresh(dir: Option<&Path>) -> State {
    let Some(dir) = dir else {
        return State::default();
    };
    match super::load(dir) {
        Ok(Some(s)) => {
            info!(path = %path_in(dir).display(), groups = s.groups.len(), "State restored.");
            s
        }
        Ok(None) => {
            info!(path = %path_in(dir).display(), "No saved state; starting fresh.");
            State::default()
        }
        Err(e) => {
            let aside = path_in(dir).with_extension(format!("corrupt-{}", now_ms() / 1000));
            let moved = std::fs::rename(path_in(dir), &aside).is_ok();
            tracing::error!(error = %e, moved_to = %aside.display(), moved, "Saved state is unusable; starting fresh.");
            State::default()
        }
    }
}

/// Writes the state file on a blocking thread (it fsyncs); the error, also logged and
/// counted, is returned for callers that answer someone (the label-edit API).
pub(crate) async fn save_off_runtime(
    dir: &Path,
    state: State,
    telemetry: &Telemetry,
) -> Result<(), String> {
    let dir = dir.to_path_buf();
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || super::save(&dir, &state)).await {
        Ok(Ok(bytes)) => {
            telemetry.state_saved(bytes, started.elapsed());
            Ok(())
        }
        Ok(Err(e)) => {
            telemetry.state_save_failed(&e);
            Err(e.to_string())
        }
        Err(e) => {
            telemetry.state_save_failed(&e);
            Err(e.to_string())
        }
    }
}
