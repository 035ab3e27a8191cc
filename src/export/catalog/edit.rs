//! Label edits: what the catalog's PUT and DELETE send to the app, and what comes back.
//!
//! The edit travels admin server → app → the group's loop, which applies it to the
//! ADSketch detector between cycles (the detector owns the labels), republishes the
//! series into the [`PatternCatalog`], and answers; the app then saves the state file
//! before the HTTP answer goes out, so a 200 means the labels survive a crash.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::board::PatternCatalog;
use crate::detect::adsketch::{LabelError, LabelOp, Pattern};

/// One label edit on one pattern of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEdit {
    /// Entity group.
    pub group: String,
    /// Entity key.
    pub entity: String,
    /// Metric name.
    pub metric: String,
    /// Pattern id.
    pub id: u64,
    /// The change.
    pub op: LabelOp,
}

/// A successful edit.
#[derive(Debug, Clone, PartialEq)]
pub struct EditOutcome {
    /// The pattern after the edit.
    pub pattern: Pattern,
    /// `true` when the state file was written with the edit; `false` without a
    /// `state_dir` (the labels then live until the process ends).
    pub persisted: bool,
}

/// Why an edit was not applied, or not saved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    /// No group of that name runs.
    #[error("no group {0:?}")]
    UnknownGroup(String),
    /// The group does not run the ADSketch detector.
    #[error("group {0:?} does not run the adsketch detector")]
    NotEnabled(String),
    /// The detector refused the edit; nothing changed.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The agent is shutting down or the group stopped before taking the edit.
    #[error("the agent cannot take the edit now ({0}); nothing changed, try again")]
    Unavailable(&'static str),
    /// The group did not answer in time (it takes edits between cycles); the edit is
    /// still queued and may be applied when the running cycle ends.
    #[error("the group did not answer within {0} s; the edit may still be applied when its cycle ends (check GET /api/v1/patterns/{{series}})")]
    TimedOut(u64),
    /// The edit is applied in memory but the state file could not be written.
    #[error("the labels are applied but could not be saved: {0}")]
    NotSaved(String),
}

/// The reply half of a [`LabelEditRequest`].
pub(crate) type EditReply = oneshot::Sender<Result<EditOutcome, EditError>>;

/// An edit and where to answer.
#[derive(Debug)]
pub struct LabelEditRequest {
    /// The edit.
    pub edit: LabelEdit,
    /// Where the app answers.
    pub reply: EditReply,
}

/// What the admin server needs for the catalog: the published patterns and the
/// channel to the app for edits.
#[derive(Debug, Clone)]
pub struct CatalogHandle {
    /// Published patterns.
    pub patterns: Arc<PatternCatalog>,
    /// Edits go to the app's main loop.
    pub edits: mpsc::Sender<LabelEditRequest>,
}
