//! Where each partition belongs: rendezvous hashing over the live members, region-aware
//! (DESIGN.md "Cluster": placement).
//!
//! A partition's **home region** is the region of most of the catalog locations whose pairs
//! it holds (ties to the first region by name; none without catalog locations). Its target is
//! the member of highest rendezvous score among the live members of its home region, or among
//! all live members while that region has none (a dead region's partitions move out, and come
//! back when it does). Rendezvous hashing moves only the partitions of a member that comes or
//! goes: every node computes the same targets from the same members, with no coordination.
//!
//! The partition function does not know regions, so one partition may hold locations of
//! several regions; those of the minority regions then live with the majority's.

use std::collections::BTreeMap;

use stockgrid_actors::catalog::Location;
use stockgrid_model::partition::{Partition, PartitionScheme};
use xxhash_rust::xxh3::xxh3_64;

/// A live member placement may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its node id.
    pub node_id: &'a str,
    /// Its region.
    pub region: &'a str,
}

/// The rendezvous score of `node_id` for `partition`.
fn score(partition: Partition, node_id: &str) -> u64 {
    let mut bytes = Vec::with_capacity(2 + node_id.len());
    bytes.extend_from_slice(&partition.to_be_bytes());
    bytes.extend_from_slice(node_id.as_bytes());
    xxh3_64(&bytes)
}

/// The member `partition` belongs on among `live` (`None`: no live member), preferring those
/// of its `home` region.
pub fn target<'a>(
    partition: Partition,
    live: &[Candidate<'a>],
    home: Option<&str>,
) -> Option<&'a str> {
    let in_home = |candidate: &&Candidate<'a>| home.is_some_and(|home| candidate.region == home);
    let pool: Vec<&Candidate<'a>> = if live.iter().any(|c| in_home(&c)) {
        live.iter().filter(in_home).collect()
    } else {
        live.iter().collect()
    };
    pool.into_iter()
        .max_by_key(|candidate| (score(partition, candidate.node_id), candidate.node_id))
        .map(|candidate| candidate.node_id)
}

/// Every partition's home region, from the catalog's locations.
pub fn home_regions(scheme: &PartitionScheme, locations: &[Location]) -> Vec<Option<String>> {
    let mut counts: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); usize::from(scheme.count())];
    for location in locations {
        let Some(region) = location.region.as_deref() else {
            continue;
        };
        for partition in scheme.location_partitions(location.location) {
            *counts[usize::from(partition)].entry(region).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|regions| {
            // The most locations; among equals, the first region by name.
            regions
                .into_iter()
                .max_by(|(a_region, a), (b_region, b)| a.cmp(b).then(b_region.cmp(a_region)))
                .map(|(region, _)| region.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn members(spec: &[(&'static str, &'static str)]) -> Vec<Candidate<'static>> {
        spec.iter()
            .map(|&(node_id, region)| Candidate { node_id, region })
            .collect()
    }

    #[test]
    fn a_partition_stays_in_its_region_while_it_has_a_live_node() {
        let live = members(&[("a", "east"), ("b", "east"), ("c", "west")]);
        for partition in 0..512 {
            let chosen = target(partition, &live, Some("west")).expect("a member");
            assert_eq!(chosen, "c");
            let chosen = target(partition, &live, Some("east")).expect("a member");
            assert!(chosen == "a" || chosen == "b");
        }
        // West is dead: its partitions go to the east.
        let east_only = members(&[("a", "east"), ("b", "east")]);
        assert!(target(7, &east_only, Some("west")).is_some());
        assert_eq!(target(7, &[], Some("west")), None);
    }

    #[test]
    fn home_regions_follow_the_majority_of_locations() {
        let scheme = PartitionScheme::new(4, 1).expect("scheme");
        let location = |id: u32, region: &str| Location {
            location: id,
            kind: "store".to_owned(),
            region: Some(region.to_owned()),
            timezone: "UTC".to_owned(),
            open_hour: 0,
            close_hour: 24,
            sources: Vec::new(),
        };
        let locations: Vec<Location> = (0..40)
            .map(|id| location(id, if id % 3 == 0 { "west" } else { "east" }))
            .collect();
        let homes = home_regions(&scheme, &locations);
        assert_eq!(homes.len(), 4);
        for (partition, home) in homes.iter().enumerate() {
            let mut east = 0;
            let mut west = 0;
            for location in &locations {
                if scheme.location_partitions(location.location) == vec![partition as Partition] {
                    if location.region.as_deref() == Some("east") {
                        east += 1
                    } else {
                        west += 1
                    }
                }
            }
            let expected = match (east, west) {
                (0, 0) => None,
                (e, w) if e >= w => Some("east".to_owned()),
                _ => Some("west".to_owned()),
            };
            assert_eq!(
                home, &expected,
                "partition {partition}: {east} east, {west} west"
            );
        }
    }

    proptest! {
        /// Adding a member moves only partitions onto it; removing one moves only its own.
        #[test]
        fn rendezvous_moves_only_what_it_must(
            count in 2usize..8,
            partitions in prop::collection::vec(any::<u16>(), 1..200),
        ) {
            let names: Vec<String> = (0..count).map(|i| format!("node-{i}")).collect();
            let all: Vec<Candidate> = names
                .iter()
                .map(|name| Candidate { node_id: name, region: "r" })
                .collect();
            let fewer = &all[..count - 1];
            let gone = all[count - 1].node_id;
            for &partition in &partitions {
                let before = target(partition, fewer, None).expect("member");
                let after = target(partition, &all, None).expect("member");
                prop_assert!(after == before || after == gone);
            }
        }
    }
}
