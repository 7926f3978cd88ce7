//! The partition of a pair (DESIGN.md "Cluster"): a fixed number of partitions, set when a
//! store is created and named in its format record, so that every node and every tool computes
//! the same owner for a pair.
//!
//! A partition groups pairs of one location, so that a search page at one store touches few
//! owners and a location's shared facts are computed where its pairs live. A location's pairs
//! are spread over `location_spread` partitions by SKU, so that a big fulfilment center is not
//! one hot partition. The function is `xxh3-64(location, slot) mod count`, where `slot` is
//! `xxh3-64(sku) mod location_spread`; it is versioned by [`PARTITION_FUNCTION`] and never
//! changes for an existing store.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::domain::PairKey;

/// The name of the partition function, recorded in a store's format record.
pub const PARTITION_FUNCTION: &str = "xxh3-location-slot-v1";
/// Partitions of a new store unless configured otherwise.
pub const DEFAULT_PARTITION_COUNT: u16 = 4096;
/// Partitions a location's pairs are spread over unless configured otherwise.
pub const DEFAULT_LOCATION_SPREAD: u16 = 4;

/// A partition number, below its scheme's count.
pub type Partition = u16;

/// How pairs map to partitions: fixed for the life of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionScheme {
    /// Number of partitions (1 to 65,535).
    count: u16,
    /// Partitions one location's pairs are spread over (1 to `count`).
    location_spread: u16,
}

impl Default for PartitionScheme {
    fn default() -> Self {
        Self::STANDARD
    }
}

impl PartitionScheme {
    /// The scheme of every store this version creates: 4,096 partitions, each location
    /// spread over 4 of them.
    pub const STANDARD: Self = Self {
        count: DEFAULT_PARTITION_COUNT,
        location_spread: DEFAULT_LOCATION_SPREAD,
    };

    /// A scheme of `count` partitions with each location spread over `location_spread`,
    /// or the reason it is not one.
    pub fn new(count: u16, location_spread: u16) -> Result<Self, String> {
        if count == 0 {
            return Err("partition count must be at least 1".to_owned());
        }
        if location_spread == 0 || location_spread > count {
            return Err(format!(
                "location spread must be 1 to the partition count ({count}), got {location_spread}"
            ));
        }
        Ok(Self {
            count,
            location_spread,
        })
    }

    /// Number of partitions.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Partitions one location's pairs are spread over.
    pub fn location_spread(&self) -> u16 {
        self.location_spread
    }

    /// The partition of `pair`.
    pub fn partition(&self, pair: PairKey) -> Partition {
        let slot = if self.location_spread > 1 {
            (xxh3_64(&pair.sku.to_be_bytes()) % u64::from(self.location_spread)) as u16
        } else {
            0
        };
        self.slot_partition(pair.location, slot)
    }

    /// Every partition holding pairs of `location` (at most its spread; fewer when two of
    /// its slots meet), ascending.
    pub fn location_partitions(&self, location: u32) -> Vec<Partition> {
        let mut partitions: Vec<Partition> = (0..self.location_spread)
            .map(|slot| self.slot_partition(location, slot))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    fn slot_partition(&self, location: u32, slot: u16) -> Partition {
        let mut bytes = [0u8; 6];
        bytes[..4].copy_from_slice(&location.to_be_bytes());
        bytes[4..].copy_from_slice(&slot.to_be_bytes());
        (xxh3_64(&bytes) % u64::from(self.count)) as Partition
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_pairs_keep_their_partition() {
        // The function is part of the on-disk format: these values must never change.
        let scheme = PartitionScheme::default();
        let got: Vec<Partition> = [(1u64, 1u32), (42, 7), (u64::MAX, u32::MAX)]
            .into_iter()
            .map(|(sku, location)| scheme.partition(PairKey::new(sku, location)))
            .collect();
        assert_eq!(got, KNOWN);
    }

    const KNOWN: [Partition; 3] = [792, 1746, 3384];

    #[test]
    fn bad_schemes_say_why() {
        assert!(PartitionScheme::new(0, 1).is_err());
        assert!(PartitionScheme::new(8, 0).is_err());
        assert!(PartitionScheme::new(8, 9).is_err());
        assert!(PartitionScheme::new(8, 8).is_ok());
    }

    proptest! {
        #[test]
        fn a_location_spans_at_most_its_spread(
            location in any::<u32>(),
            skus in prop::collection::vec(any::<u64>(), 1..200),
            count in 1u16..5000,
            spread in 1u16..8,
        ) {
            let scheme = PartitionScheme::new(count, spread.min(count)).expect("a valid scheme");
            let partitions: HashSet<Partition> = skus
                .iter()
                .map(|&sku| scheme.partition(PairKey::new(sku, location)))
                .collect();
            prop_assert!(partitions.len() <= usize::from(scheme.location_spread()));
            prop_assert!(partitions.iter().all(|&p| p < count));
            let listed = scheme.location_partitions(location);
            prop_assert!(partitions.iter().all(|p| listed.contains(p)));
        }
    }
}
