//! The window store: per-entity ring buffers aligned to the group's step.
//!
//! Owns: turning query results into entities (keyed by the group's entity labels),
//! the sharding filter (DaemonSet node filter or hashmod), ring buffers of bounded
//! length with the gap fill policy, the next range to fetch per metric (incremental
//! after warm-up), the per-series robust normalisers, the seasonal baselines and their
//! residual rows (when the group has `seasonality`), and entity expiry.
//!
//! It does no I/O and reads no clock: every method takes the `now` it must use.

mod entity;
mod group;
mod shard;

pub use crate::ring::Ring;
pub use entity::Entity;
pub use group::{
    CycleOutcome, GroupStore, LevelShift, SeasonalSettings, SeasonalState, StoreConfig, ViewBatch,
};
pub use shard::{shard_hash, ShardFilter};
