//! Cached baseline embeddings.
//!
//! A baseline window does not change once it lies in the past, and the Siamese encoder
//! is a pure function of it (the input scaling uses the baseline's own statistics,
//! [`super::features`]), so its embedding is computed once per (interface, KPI,
//! baseline range) and reused while the current window grows (DESIGN.md). An
//! interface keeps entries for one baseline range at a time: when its baseline moves
//! (a new deployment, the next offset window), [`EmbeddingCache::keep_only`] drops the
//! old range's entries. The cache holds plain vectors, whatever the model's hidden size.

use std::collections::HashMap;

use super::baseline::Range;
use super::Kpi;

/// What an embedding was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BaselineKey {
    /// Interface (e.g. the route).
    pub interface: String,
    /// KPI.
    pub kpi: Kpi,
    /// Baseline range.
    pub range: Range,
}

/// Embeddings by baseline, with hit and miss counts.
#[derive(Debug, Default)]
pub(crate) struct EmbeddingCache {
    map: HashMap<BaselineKey, Vec<f32>>,
    hits: u64,
    misses: u64,
}

impl EmbeddingCache {
    /// An empty cache.
    #[cfg(test)]
    fn new() -> Self {
        Self::default()
    }

    /// The cached embedding of `key`, or `compute()`'s result, stored on success.
    pub(crate) fn get_or_compute<E>(
        &mut self,
        key: BaselineKey,
        compute: impl FnOnce() -> Result<Vec<f32>, E>,
    ) -> Result<Vec<f32>, E> {
        if let Some(z) = self.map.get(&key) {
            self.hits += 1;
            return Ok(z.clone());
        }
        self.misses += 1;
        let z = compute()?;
        self.map.insert(key, z.clone());
        Ok(z)
    }

    /// Drops the entries of `interface` whose baseline is not `range` (its baseline moved).
    pub(crate) fn keep_only(&mut self, interface: &str, range: Range) {
        self.map
            .retain(|k, _| k.interface != interface || k.range == range);
    }

    /// Drops the entries of interfaces for which `keep` is false (they disappeared).
    pub(crate) fn retain_interfaces(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.map.retain(|k, _| keep(&k.interface));
    }

    /// Number of cached embeddings.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` when nothing is cached.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `(hits, misses)` since creation.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(interface: &str, kpi: Kpi, start_ms: i64) -> BaselineKey {
        BaselineKey {
            interface: interface.into(),
            kpi,
            range: Range {
                start_ms,
                end_ms: start_ms + 1000,
            },
        }
    }

    #[test]
    fn computes_once_per_baseline() {
        let mut c = EmbeddingCache::new();
        let mut calls = 0;
        for _ in 0..3 {
            let z = c
                .get_or_compute::<()>(key("search", Kpi::ResponseTime, 0), || {
                    calls += 1;
                    Ok(vec![1.0, 2.0])
                })
                .unwrap();
            assert_eq!(z, vec![1.0, 2.0]);
        }
        assert_eq!(calls, 1);
        assert_eq!(c.stats(), (2, 1));
        // A failed computation is not cached.
        assert!(c
            .get_or_compute(key("search", Kpi::Throughput, 0), || Err("boom"))
            .is_err());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_moved_baseline_invalidates_only_that_interface() {
        let mut c = EmbeddingCache::new();
        for k in [
            key("search", Kpi::ResponseTime, 0),
            key("search", Kpi::Throughput, 0),
            key("home", Kpi::ResponseTime, 0),
        ] {
            c.get_or_compute::<()>(k, || Ok(vec![0.0])).unwrap();
        }
        let moved = key("search", Kpi::ResponseTime, 5000);
        c.keep_only("search", moved.range);
        assert_eq!(c.len(), 1, "only home's entry survives");
        let mut recomputed = false;
        c.get_or_compute::<()>(key("home", Kpi::ResponseTime, 0), || {
            recomputed = true;
            Ok(vec![0.0])
        })
        .unwrap();
        assert!(!recomputed);
        c.retain_interfaces(|i| i != "home");
        assert!(c.is_empty());
    }
}
