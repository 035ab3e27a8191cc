use crate::config::Fill;
use crate::normalize::Normalizer;

use super::Ring;
use crate::seasonal::SeasonalRow;

/// One entity: its labels and one ring per configured metric that has data.
///
/// Every present ring has the same length and ends at `end_ms`: advancing the entity
/// advances all its rings together, so detectors always see aligned rows.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Entity label pairs (the group's entity labels, sorted by name).
    pub labels: Vec<(String, String)>,
    /// One slot per configured metric; `None` until the metric first returns data.
    pub rows: Vec<Option<Ring>>,
    /// Normaliser per configured metric (of the residuals with a seasonal baseline).
    pub normalizers: Vec<Normalizer>,
    /// Seasonal baseline and residuals per configured metric, when the group has one.
    pub(super) seasonal: Vec<Option<SeasonalRow>>,
    /// Timestamp of the last column (ms); `None` before the first point.
    pub end_ms: Option<i64>,
    /// Last time (agent clock, ms) a query returned this entity.
    pub last_seen_ms: i64,
    /// Points appended since the normalisers were last updated.
    pub(super) new_points: usize,
    cap: usize,
    len: usize,
}

impl Entity {
    pub(super) fn new(
        labels: Vec<(String, String)>,
        metrics: usize,
        cap: usize,
        now_ms: i64,
    ) -> Self {
        Entity {
            labels,
            rows: vec![None; metrics],
            normalizers: vec![Normalizer::new(); metrics],
            seasonal: vec![None; metrics],
            end_ms: None,
            last_seen_ms: now_ms,
            new_points: 0,
            cap,
            len: 0,
        }
    }

    /// Points per row.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` before the first point.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of metrics with data.
    pub fn present_metrics(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    /// Appends columns so that the last one is `ts_ms`, filling new points by `fill`.
    pub(super) fn advance_to(&mut self, ts_ms: i64, step_ms: i64, fill: Fill) {
        let end = match self.end_ms {
            Some(e) if ts_ms <= e => return,
            // Never pad more than the ring holds: older points would be dropped anyway.
            Some(e) => e,
            None => ts_ms - step_ms,
        };
        let steps = ((ts_ms - end) / step_ms).clamp(1, self.cap as i64) as usize;
        for row in self.rows.iter_mut().flatten() {
            let pad = match fill {
                Fill::Previous => row.last().unwrap_or(f64::NAN),
                Fill::Zero => 0.0,
                Fill::None => f64::NAN,
            };
            for _ in 0..steps {
                row.push(pad);
            }
        }
        self.len = (self.len + steps).min(self.cap);
        self.new_points += steps;
        self.end_ms = Some(ts_ms);
    }

    /// Stores `value` of metric `metric` at `ts_ms` (already aligned to the step).
    /// Returns `false` when the point is older than the kept history.
    pub(super) fn set(
        &mut self,
        metric: usize,
        ts_ms: i64,
        value: f64,
        step_ms: i64,
        fill: Fill,
    ) -> bool {
        if self.rows[metric].is_none() {
            // A metric seen for the first time joins with a gap-filled past so that all
            // rows keep the same length.
            let mut ring = Ring::new(self.cap);
            for _ in 0..self.len {
                ring.push(f64::NAN);
            }
            self.rows[metric] = Some(ring);
        }
        self.advance_to(ts_ms, step_ms, fill);
        let Some(end) = self.end_ms else { return false };
        let back = ((end - ts_ms) / step_ms) as usize;
        let Some(row) = self.rows[metric].as_mut() else {
            return false;
        };
        let value = if value.is_finite() {
            value
        } else {
            // NaN and ±Inf are gaps: a detector cannot compare them, and the fill
            // policy says what the user wants in their place.
            match fill {
                Fill::Previous => row.from_end(back + 1).unwrap_or(f64::NAN),
                Fill::Zero => 0.0,
                Fill::None => f64::NAN,
            }
        };
        row.set_from_end(back, value)
    }
}
