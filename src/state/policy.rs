//! How the agent claims, restores and saves its learned state: a directory another agent
//! holds is fatal at start; any other trouble with the directory is not (the agent keeps
//! learning in memory, and every save that fails is logged and counted by cause); a bad
//! file at start is set aside. A save runs on a blocking thread. The app calls these at
//! start, on the `state_save_interval` timer, after a catalog label edit and at shutdown.
//! The file format is in the parent module.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::{path_in, Error, State, StateDir};
use crate::clock::now_ms;
use crate::telemetry::Telemetry;

/// Claims `dir` for this agent (its lock) and removes a partial save a killed
/// predecessor left. Fails only when another agent holds the directory; a directory
/// that cannot be written (read-only, no permission) is logged at ERROR, and each save
/// tries it again (claiming it first when it could not be locked).
pub(crate) fn claim(dir: &Path, telemetry: &Telemetry) -> Result<Arc<StateDir>, Error> {
    let (state_dir, trouble) = StateDir::claim(dir)?;
    if let Some(e) = trouble {
        telemetry.state_dir_unwritable(&dir.display(), e.cause(), &e);
    }
    if state_dir.is_locked() && super::remove_partial_save(dir) {
        info!(state_dir = %dir.display(), "Removed the temp file of a save that did not finish; the state file is the last complete one.");
    }
    Ok(Arc::new(state_dir))
}

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

/// Adds to `state`, from the file in `dir`, the groups of `names` it lacks (groups
/// still busy in a cycle at shutdown or at a periodic save): a save without them would
/// drop everything they learned, and the file holds their last saved state.
pub(crate) async fn keep_saved_groups(dir: &Arc<StateDir>, state: &mut State, names: &[String]) {
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !state.groups.contains_key(*n))
        .collect();
    if missing.is_empty() {
        return;
    }
    let path = dir.path().to_path_buf();
    let Ok(Ok(Some(saved))) = tokio::task::spawn_blocking(move || super::load(&path)).await else {
        return;
    };
    for name in missing {
        if let Some(s) = saved.groups.get(name) {
            info!(group = %name, "Group busy in a cycle; the state file keeps what the last save holds for it.");
            state.groups.insert(name.clone(), s.clone());
        }
    }
}

/// Writes the state file on a blocking thread (it fsyncs), after making sure this
/// agent still holds the directory; the error, also logged and counted by cause, is
/// returned for callers that answer someone (the label-edit API).
pub(crate) async fn save_off_runtime(
    dir: &Arc<StateDir>,
    state: State,
    telemetry: &Telemetry,
) -> Result<(), String> {
    let dir = dir.clone();
    let started = Instant::now();
    let saved = tokio::task::spawn_blocking(move || {
        dir.ensure_locked()?;
        super::save(dir.path(), &state)
    })
    .await;
    match saved {
        Ok(Ok(bytes)) => {
            telemetry.state_saved(bytes, started.elapsed());
            Ok(())
        }
        Ok(Err(e)) => {
            telemetry.state_save_failed(e.cause(), &e);
            Err(e.to_string())
        }
        Err(e) => {
            telemetry.state_save_failed("panic", &e);
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_missing_at_shutdown_keeps_its_saved_state() {
        let dir = tempfile::tempdir().unwrap();
        let (state_dir, _) = StateDir::claim(dir.path()).unwrap();
        let state_dir = Arc::new(state_dir);
        let snap = |v: u64| {
            std::collections::BTreeMap::from([("uniad".to_string(), serde_json::json!(v))])
        };
        let mut saved = State::default();
        saved.groups.insert("busy".into(), snap(1));
        saved.groups.insert("idle".into(), snap(1));
        saved.groups.insert("removed".into(), snap(1));
        super::super::save(dir.path(), &saved).unwrap();

        // "idle" stopped in time with newer state; "busy" did not stop; "removed" is
        // no longer configured.
        let mut now = State::default();
        now.groups.insert("idle".into(), snap(2));
        let names = ["busy".to_string(), "idle".to_string()];
        keep_saved_groups(&state_dir, &mut now, &names).await;
        assert_eq!(now.groups.get("busy"), Some(&snap(1)));
        assert_eq!(now.groups.get("idle"), Some(&snap(2)));
        assert!(!now.groups.contains_key("removed"));
    }
}
