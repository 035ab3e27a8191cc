//! The seasonal baseline: what a series usually does at this time of day or week.
//!
//! With `groups[].seasonality` set (e.g. `[1d, 1w]`), each series learns one
//! [`Profile`] per period: the period is cut into at most [`MAX_BUCKETS`] phase buckets
//! (96 per day is one per 15 minutes), each with a robust centre and its own spread, so
//! that a busy hour's wider noise does not page while a quiet hour's narrower one does.
//! The expected value at time `t` interpolates linearly between the two bucket centres
//! around `t`'s phase (phases are of UTC time since the epoch: days start at 00:00 UTC,
//! weeks on Thursday 00:00 UTC, the epoch's weekday). Of several periods, the longest
//! one that has learned at least [`MIN_PERIODS`] periods of data gives the expectation:
//! `1w` takes over from `1d` once two weeks are known. The detectors then see the
//! **seasonal residual** `u = (x − expected(t)) / spread(t)` instead of the raw value,
//! which the ordinary normaliser ([`crate::normalize`]) z-scores again over the
//! group's history; a well-learned profile makes that second step close to identity.
//!
//! # Learning
//!
//! * **From history at start**: [`SeasonalSeries::fit`] takes samples of weeks of
//!   history (fetched at a coarse step) and sets each bucket to the median and robust
//!   scale ([`RobustStats`], with all the normaliser's fallbacks for mostly-flat and
//!   bursty data) of the samples that fall in it.
//! * **Online**: every new point moves the two buckets around its phase towards itself
//!   (a least-mean-squares step on the piecewise-linear profile, with the residual
//!   clipped at 3 spreads so one spike moves it little, once the bucket has learned 8
//!   points), with a learning rate of `1 / min(count, points of 4 periods)`: the
//!   profile remembers about four periods.
//! * **A pooled spread** over all phases floors each phase's spread at half of it, so
//!   a bucket that happened to see a few calm points does not page on ordinary noise.
//! * **Incidents are not learned**: a point whose final z (after the normaliser) is
//!   beyond [`LEARN_LIMIT`] is left out, so a one-hour outage does not become
//!   tomorrow's expectation. When such points have outnumbered normal ones for
//!   `adapt_after` (a streak that grows on an outlying point and shrinks on a normal
//!   one), the series has shifted level: every centre moves by the mean residual of the
//!   streak and [`Observed::shifted`] tells the caller, who recomputes its residuals.
//!
//! # Cost
//!
//! State per series and period: `B` buckets × 10 bytes (centre and spread as `f32`, a
//! `u16` count) plus 34 bytes, `B = min(period / step, 96)`: 0.99 KB for a period, 1.9 KB for
//! `[1d, 1w]`. The residual row the store keeps beside the raw one adds 8 bytes per
//! history point. No query per cycle beyond the ordinary one; at start one coarse
//! query per metric (at most 10,000 points per series). The alternative, fetching past
//! periods with PromQL `offset` every cycle, needs no learned state but `k` extra
//! queries per metric and period per cycle (3 past weeks and 3 past days: 6 × the query
//! load) and still a residual row per series; it was not chosen.
//!
//! Pure math, no I/O: the store and the offline replay drive it.

use serde::{Deserialize, Serialize};

use crate::normalize::{scale_floor, RobustStats, MEAN_AD_TO_SIGMA};

mod residuals;

pub use residuals::{Extended, SeasonalRow};

/// Most phase buckets per period (one per 15 minutes of a day).
pub const MAX_BUCKETS: usize = 96;
/// A profile gives expectations once its data spans this many periods.
pub const MIN_PERIODS: f64 = 2.0;
/// Points whose final |z| exceeds this are not learned (the z-score detector's
/// default threshold).
pub const LEARN_LIMIT: f64 = 4.0;
/// The profile remembers about this many periods.
const MEMORY_PERIODS: usize = 4;
/// Online residuals are clipped at this many spreads, once a bucket has learned
/// [`WARM_UP_POINTS`] points (before, its spread is too young to clip by).
const CLIP_SPREADS: f64 = 3.0;
/// Points a bucket learns unclipped before its spread is trusted for clipping.
const WARM_UP_POINTS: u16 = 8;
/// A phase's spread is at least this fraction of the profile's pooled spread (the
/// size of the residuals of all phases together): a quiet hour may be twice as quiet as the
/// average one, no quieter, so a handful of calm points cannot make it page on noise.
const POOLED_SPREAD_FLOOR: f64 = 0.5;

/// What the series is expected to do at one point: `x ≈ value ± spread`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected value, in the metric's units.
    pub value: f64,
    /// Spread around it (≈ σ), in the metric's units; > 0.
    pub spread: f64,
}

impl Expectation {
    /// The expectation of a series without seasonality: residuals are raw values.
    pub const IDENTITY: Expectation = Expectation {
        value: 0.0,
        spread: 1.0,
    };

    /// The seasonal residual of `x`.
    #[inline]
    pub fn residual(&self, x: f64) -> f64 {
        (x - self.value) / self.spread
    }
}

/// The learned shape of one series over one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Period, ms.
    period_ms: i64,
    /// Robust centre per bucket (NaN until learned; `null` in JSON).
    #[serde(with = "nan_as_null")]
    centers: Vec<f32>,
    /// Spread per bucket (≈ σ).
    #[serde(with = "nan_as_null")]
    spreads: Vec<f32>,
    /// Points learned per bucket, saturating.
    counts: Vec<u16>,
    /// Time span of the data learned so far, ms.
    learned_ms: i64,
    /// Timestamp of the last point learned, ms.
    last_ms: Option<i64>,
    /// Learning rate floor: 1 / points per bucket in [`MEMORY_PERIODS`] periods.
    memory: u16,
    /// Spread of all phases together (≈ σ of the residuals), once learned.
    #[serde(default)]
    pooled: Option<f32>,
    /// Points learned into `pooled`, saturating.
    #[serde(default)]
    pooled_count: u32,
}

impl Profile {
    /// An empty profile of `period_ms` at `step_ms`.
    pub fn new(period_ms: i64, step_ms: i64) -> Self {
        let per_period = (period_ms / step_ms.max(1)).max(1) as usize;
        let buckets = per_period.min(MAX_BUCKETS);
        let memory = (per_period / buckets * MEMORY_PERIODS).clamp(1, u16::MAX as usize) as u16;
        Profile {
            period_ms,
            centers: vec![f32::NAN; buckets],
            spreads: vec![f32::NAN; buckets],
            counts: vec![0; buckets],
            learned_ms: 0,
            last_ms: None,
            memory,
            pooled: None,
            pooled_count: 0,
        }
    }

    /// The period, ms.
    pub fn period_ms(&self) -> i64 {
        self.period_ms
    }

    /// Number of phase buckets.
    pub fn buckets(&self) -> usize {
        self.centers.len()
    }

    /// `true` once the data learned spans [`MIN_PERIODS`] periods.
    pub fn is_mature(&self) -> bool {
        self.learned_ms as f64 >= MIN_PERIODS * self.period_ms as f64
    }

    /// Bytes of learned state (what the cost figures count).
    pub fn state_bytes(&self) -> usize {
        self.buckets() * (4 + 4 + 2) + 8 * 3 + 2 + 4 + 4
    }

    /// Position of `t_ms` on the bucket axis, in `[0, B)`; bucket `k` is centred on
    /// `k` (phase `(k + 0.5) / B` of the period).
    fn position(&self, t_ms: i64) -> f64 {
        let phase = t_ms.rem_euclid(self.period_ms) as f64 / self.period_ms as f64;
        (phase * self.buckets() as f64 - 0.5).rem_euclid(self.buckets() as f64)
    }

    /// The two buckets around `t_ms` and the weight of the second.
    fn neighbours(&self, t_ms: i64) -> (usize, usize, f64) {
        let pos = self.position(t_ms);
        let lo = (pos.floor() as usize).min(self.buckets() - 1);
        let hi = (lo + 1) % self.buckets();
        (lo, hi, pos - lo as f64)
    }

    /// The expectation at `t_ms`, `None` where neither bucket around it is learned.
    pub fn expectation(&self, t_ms: i64) -> Option<Expectation> {
        let (lo, hi, w) = self.neighbours(t_ms);
        let pick = |k: usize| {
            let (c, s) = (self.centers[k], self.spreads[k]);
            (c.is_finite() && s.is_finite()).then_some((f64::from(c), f64::from(s)))
        };
        let (value, spread) = match (pick(lo), pick(hi)) {
            (Some(a), Some(b)) => (a.0 + (b.0 - a.0) * w, a.1 + (b.1 - a.1) * w),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        let floor = self
            .pooled
            .map_or(0.0, |p| POOLED_SPREAD_FLOOR * f64::from(p));
        Some(Expectation {
            value,
            spread: spread.max(floor).max(scale_floor(value)),
        })
    }

    /// Sets every bucket from `samples` (`(t ms, value)`, any order): each bucket's
    /// centre and spread are the robust statistics of the samples nearest to it.
    pub fn fit(&mut self, samples: &[(i64, f64)]) {
        let b = self.buckets();
        let mut per_bucket: Vec<Vec<f64>> = vec![Vec::new(); b];
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &(t, x) in samples {
            if !x.is_finite() {
                continue;
            }
            let k = (self.position(t).round() as usize) % b;
            per_bucket[k].push(x);
            first = first.min(t);
            last = last.max(t);
        }
        let mut scratch = Vec::new();
        let mut residuals = Vec::new();
        for (k, values) in per_bucket.iter().enumerate() {
            match RobustStats::fit(values, &mut scratch) {
                Some(s) => {
                    self.centers[k] = s.median as f32;
                    self.spreads[k] = s.scale as f32;
                    self.counts[k] = values.len().min(u16::MAX as usize) as u16;
                    residuals.extend(values.iter().map(|x| x - s.median));
                }
                None => {
                    self.centers[k] = f32::NAN;
                    self.spreads[k] = f32::NAN;
                    self.counts[k] = 0;
                }
            }
        }
        if first <= last {
            self.learned_ms = last - first;
            self.last_ms = Some(last);
        }
        // The robust scale of every phase's residuals together.
        self.pooled_count = residuals.len().min(u32::MAX as usize) as u32;
        self.pooled = RobustStats::fit(&residuals, &mut scratch).map(|s| s.scale as f32);
    }

    /// Learns one point: moves the buckets around `t_ms` towards `x`.
    pub fn learn(&mut self, t_ms: i64, x: f64) {
        if !x.is_finite() {
            return;
        }
        if let Some(last) = self.last_ms {
            self.learned_ms += (t_ms - last).max(0);
        }
        self.last_ms = Some(self.last_ms.map_or(t_ms, |l| l.max(t_ms)));
        let (lo, hi, w) = self.neighbours(t_ms);
        let Some(e) = self.expectation(t_ms) else {
            // Neither bucket known: start the nearer one at this point.
            let k = if w < 0.5 { lo } else { hi };
            self.centers[k] = x as f32;
            self.spreads[k] = scale_floor(x) as f32;
            self.counts[k] = 1;
            return;
        };
        let r = x - e.value;
        let young = self.counts[lo].min(self.counts[hi]) < WARM_UP_POINTS;
        let clipped = if young {
            r
        } else {
            r.clamp(-CLIP_SPREADS * e.spread, CLIP_SPREADS * e.spread)
        };
        self.learn_pooled(MEAN_AD_TO_SIGMA * clipped.abs());
        for (k, weight) in [(lo, 1.0 - w), (hi, w)] {
            if !self.centers[k].is_finite() {
                self.centers[k] = x as f32;
                self.spreads[k] = e.spread as f32;
                self.counts[k] = 1;
                continue;
            }
            let n = self.counts[k].saturating_add(1).min(self.memory.max(1));
            let rate = weight / f64::from(n);
            let center = f64::from(self.centers[k]) + rate * clipped;
            let spread = f64::from(self.spreads[k]);
            let spread = spread + rate * (MEAN_AD_TO_SIGMA * clipped.abs() - spread);
            self.centers[k] = center as f32;
            self.spreads[k] = spread.max(scale_floor(center)) as f32;
            if weight >= 0.5 {
                self.counts[k] = self.counts[k].saturating_add(1);
            }
        }
    }

    /// Moves the pooled spread towards one point's residual size (≈ σ units), with a
    /// memory of [`MEMORY_PERIODS`] periods of points.
    fn learn_pooled(&mut self, size: f64) {
        let memory = u32::from(self.memory) * self.buckets() as u32;
        self.pooled_count = self.pooled_count.saturating_add(1);
        let n = self.pooled_count.min(memory.max(1));
        self.pooled = Some(match self.pooled {
            Some(p) => (f64::from(p) + (size - f64::from(p)) / f64::from(n)) as f32,
            None => size as f32,
        });
    }

    /// Moves every centre by `delta` (a level shift adopted).
    fn shift(&mut self, delta: f64) {
        for c in self.centers.iter_mut().filter(|c| c.is_finite()) {
            *c = (f64::from(*c) + delta) as f32;
        }
    }
}

/// What observing one point found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// `true` when the point was learned into the profile.
    pub learned: bool,
    /// `true` when a level shift was adopted at this point: residuals computed before
    /// are out of date.
    pub shifted: bool,
    /// The level change adopted, in the metric's units (0 unless `shifted`).
    pub delta: f64,
}

/// The seasonal state of one series: a profile per period and the level-shift streak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalSeries {
    profiles: Vec<Profile>,
    /// Outlying minus normal points since the streak began (never below 0).
    streak: u32,
    /// Sum of the streak's outlying residuals, metric units.
    streak_sum: f64,
    /// Number of outlying points in the streak.
    streak_points: u32,
}

impl SeasonalSeries {
    /// Empty profiles for `periods_ms` at `step_ms`.
    pub fn new(periods_ms: &[i64], step_ms: i64) -> Self {
        let mut profiles: Vec<Profile> = periods_ms
            .iter()
            .map(|&p| Profile::new(p, step_ms))
            .collect();
        // Longest first: it gives the expectation once mature.
        profiles.sort_by_key(|p| std::cmp::Reverse(p.period_ms));
        SeasonalSeries {
            profiles,
            streak: 0,
            streak_sum: 0.0,
            streak_points: 0,
        }
    }

    /// The profiles, longest period first.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// `true` when the periods (and so the bucket layout) match `periods_ms` at
    /// `step_ms`: a restored state for another configuration is not used.
    pub fn fits_layout(&self, periods_ms: &[i64], step_ms: i64) -> bool {
        let fresh = SeasonalSeries::new(periods_ms, step_ms);
        self.profiles.len() == fresh.profiles.len()
            && self
                .profiles
                .iter()
                .zip(&fresh.profiles)
                .all(|(a, b)| a.period_ms == b.period_ms && a.buckets() == b.buckets())
    }

    /// Learns every profile from history samples (`(t ms, value)`).
    pub fn fit(&mut self, samples: &[(i64, f64)]) {
        for p in &mut self.profiles {
            p.fit(samples);
        }
    }

    /// `true` when some profile gives expectations.
    pub fn is_mature(&self) -> bool {
        self.profiles.iter().any(Profile::is_mature)
    }

    /// The expectation at `t_ms`: from the longest mature profile, else
    /// [`Expectation::IDENTITY`] (the detectors then see raw values).
    pub fn expectation(&self, t_ms: i64) -> Expectation {
        self.profiles
            .iter()
            .filter(|p| p.is_mature())
            .find_map(|p| p.expectation(t_ms))
            .unwrap_or(Expectation::IDENTITY)
    }

    /// Observes the new point `x` at `t_ms`, whose final z (its residual z-scored by
    /// the normaliser) is `z`: learns it unless it is an outlier, and adopts a level
    /// shift once outliers have dominated for `adapt_after_points`.
    pub fn observe(&mut self, t_ms: i64, x: f64, z: f64, adapt_after_points: u32) -> Observed {
        let mut out = Observed {
            learned: false,
            shifted: false,
            delta: 0.0,
        };
        if !x.is_finite() {
            return out;
        }
        let mature = self.is_mature();
        if mature && z.is_finite() && z.abs() > LEARN_LIMIT {
            self.streak += 1;
            self.streak_points += 1;
            self.streak_sum += x - self.expectation(t_ms).value;
            if self.streak >= adapt_after_points.max(1) {
                let delta = self.streak_sum / f64::from(self.streak_points.max(1));
                for p in &mut self.profiles {
                    p.shift(delta);
                }
                self.reset_streak();
                out.shifted = true;
                out.delta = delta;
            }
            return out;
        }
        self.streak = self.streak.saturating_sub(1);
        if self.streak == 0 {
            self.reset_streak();
        }
        for p in &mut self.profiles {
            p.learn(t_ms, x);
        }
        out.learned = true;
        out
    }

    fn reset_streak(&mut self) {
        self.streak = 0;
        self.streak_sum = 0.0;
        self.streak_points = 0;
    }

    /// Bytes of learned state.
    pub fn state_bytes(&self) -> usize {
        self.profiles
            .iter()
            .map(Profile::state_bytes)
            .sum::<usize>()
            + 16
    }
}

/// JSON has no NaN: unlearned buckets are written as `null` and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let v: Vec<Option<f32>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

#[cfg(test)]
mod tests;
