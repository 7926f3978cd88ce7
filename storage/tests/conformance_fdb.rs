//! The Store conformance suite on a real FoundationDB cluster, built with `--features fdb`
//! and run where `FDB_CLUSTER_FILE` names a cluster; elsewhere it says that it did not run
//! and why. Each store lives under a prefix of its own.
#![cfg(feature = "fdb")]

use std::path::PathBuf;

use stockgrid_storage::conformance::{self, Harness};
use stockgrid_storage::fdb::FdbStore;
use stockgrid_storage::fdb::binding::{ClientDatabase, open_with_prefix};

struct ClusterHarness {
    cluster_file: PathBuf,
    run: String,
    stores: usize,
}

impl ClusterHarness {
    fn prefix(&self) -> Vec<u8> {
        format!("stockgrid-conformance/{}/{}", self.run, self.stores).into_bytes()
    }
}

impl Harness for ClusterHarness {
    type Backend = FdbStore<ClientDatabase>;
    fn fresh(&mut self) -> Self::Backend {
        self.stores += 1;
        open_with_prefix(&self.cluster_file, &self.prefix()).expect("open the cluster")
    }
    fn reopen(&mut self, store: Self::Backend) -> Option<Self::Backend> {
        drop(store);
        Some(open_with_prefix(&self.cluster_file, &self.prefix()).expect("reopen"))
    }
    fn second_client(&mut self, _store: &Self::Backend) -> Option<Self::Backend> {
        Some(open_with_prefix(&self.cluster_file, &self.prefix()).expect("a second client"))
    }
    fn inject_write_failures(&self, store: &Self::Backend, count: u32) {
        store.inject_write_failures(count);
    }
}

#[test]
fn conformance_on_a_foundationdb_cluster() {
    let Some(cluster_file) = std::env::var_os("FDB_CLUSTER_FILE") else {
        eprintln!(
            "FoundationDB conformance: NOT RUN: FDB_CLUSTER_FILE is not set (it names the \
             cluster file of a FoundationDB cluster to test against)"
        );
        return;
    };
    let mut harness = ClusterHarness {
        cluster_file: PathBuf::from(cluster_file),
        run: format!("{}", std::process::id()),
        stores: 0,
    };
    conformance::point_operations(&mut harness);
    conformance::ordered_scans(&mut harness);
    conformance::batch_operations_apply_in_order(&mut harness);
    conformance::conditions_are_atomic(&mut harness);
    conformance::limits_are_enforced(&mut harness);
    conformance::get_many_answers_in_order(&mut harness);
    conformance::failed_write_poisons(&mut harness);
    conformance::commits_survive_reopen(&mut harness);
    conformance::group_commit_acknowledges_durable_batches(&mut harness);
    conformance::group_commit_lanes_acknowledge_waiting_writers(&mut harness);
    conformance::fences_let_one_racing_writer_through(&mut harness);
    conformance::scans_see_whole_batches_during_writes(&mut harness);
    conformance::unknown_outcomes_are_resolved(&mut harness);
}
