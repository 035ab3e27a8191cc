use crate::config::Shard;
use crate::series::Series;

/// Stable 64-bit FNV-1a hash of an entity key: the same key lands on the same agent on
/// every platform and release (Rust's `DefaultHasher` promises neither).
pub fn shard_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Decides which series and entities this agent keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardFilter(pub Shard);

impl ShardFilter {
    /// Node mode looks at the series' node label; hash mode at the entity key.
    pub fn keeps(&self, series: &Series, entity_key: &str) -> bool {
        match &self.0 {
            Shard::All => true,
            Shard::Node { name, label } => series.label(label) == Some(name.as_str()),
            Shard::Hash { .. } => self.owns_key(entity_key),
        }
    }

    /// Whether this agent owns work known by a key alone, with no series labels to look
    /// at (a regression interface): hash mode hashes the key; node mode cannot tell, so
    /// every agent owns it.
    pub fn owns_key(&self, key: &str) -> bool {
        match &self.0 {
            Shard::Hash { total, index } => shard_hash(key) % total == *index,
            Shard::All | Shard::Node { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: vec![],
        }
    }

    #[test]
    fn node_mode_keeps_only_this_node() {
        let f = ShardFilter(Shard::Node {
            name: "n1".into(),
            label: "node".into(),
        });
        assert!(f.keeps(&series(&[("node", "n1")]), "k"));
        assert!(!f.keeps(&series(&[("node", "n2")]), "k"));
        assert!(!f.keeps(&series(&[]), "k"));
        assert!(
            f.owns_key("k"),
            "a key alone has no node: every agent owns it"
        );
    }

    #[test]
    fn hash_mode_partitions_entities() {
        let keys: Vec<String> = (0..3000).map(|i| format!("pod=\"p{i}\"")).collect();
        let mut counts = [0usize; 3];
        for k in &keys {
            let owners: Vec<u64> = (0..3)
                .filter(|&i| {
                    let f = ShardFilter(Shard::Hash { total: 3, index: i });
                    assert_eq!(f.keeps(&series(&[]), k), f.owns_key(k));
                    f.owns_key(k)
                })
                .collect();
            assert_eq!(owners.len(), 1, "each entity has exactly one owner");
            counts[owners[0] as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "balanced: {counts:?}");
        assert_eq!(shard_hash("abc"), 0xe71fa2190541574b);
    }
}
