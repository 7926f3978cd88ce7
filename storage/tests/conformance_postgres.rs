//! The Store conformance suite on PostgreSQL: a private server per test (Debian's
//! `postgresql`, started by the test in a temporary directory), a fresh schema per store.

use stockgrid_storage::conformance::Harness;
use stockgrid_storage::postgres::testing::PrivateServer;
use stockgrid_storage::{PostgresStore, Store, WriteBatch};

const DATABASE: &str = "conformance";

struct PostgresHarness {
    server: PrivateServer,
    stores: usize,
}

impl PostgresHarness {
    fn new() -> Self {
        let server = PrivateServer::start();
        server.create_database(DATABASE);
        Self { server, stores: 0 }
    }
}

impl Harness for PostgresHarness {
    type Backend = PostgresStore;
    fn fresh(&mut self) -> PostgresStore {
        self.stores += 1;
        let options = self
            .server
            .options(DATABASE, &format!("store_{}", self.stores));
        PostgresStore::open(options).expect("open a PostgreSQL store")
    }
    fn reopen(&mut self, store: PostgresStore) -> Option<PostgresStore> {
        drop(store);
        let options = self
            .server
            .options(DATABASE, &format!("store_{}", self.stores));
        Some(PostgresStore::open(options).expect("reopen the PostgreSQL store"))
    }
    fn second_client(&mut self, _store: &PostgresStore) -> Option<PostgresStore> {
        let options = self
            .server
            .options(DATABASE, &format!("store_{}", self.stores));
        Some(PostgresStore::open(options).expect("a second client of the store"))
    }
    fn inject_write_failures(&self, store: &PostgresStore, count: u32) {
        store.inject_write_failures(count);
    }
    fn lose_next_commit_answer(&self, store: &PostgresStore, applied: bool) -> bool {
        store.lose_next_commit_answer(applied);
        true
    }
}

stockgrid_storage::conformance_tests!(PostgresHarness::new());

/// A URL with a password is refused, and no error or debug output of the store shows it.
#[test]
fn passwords_stay_out_of_urls_errors_and_debug_output() {
    let refused = stockgrid_storage::PostgresOptions::from_url(
        "postgres://stockgrid:s3cret-pw@127.0.0.1:1/db",
        stockgrid_storage::postgres::Password::None,
    )
    .expect_err("a password in the URL is refused");
    assert!(!refused.to_string().contains("s3cret-pw"), "{refused}");
    assert!(refused.to_string().contains("PGPASSWORD"), "{refused}");

    let server = PrivateServer::start();
    server.create_database(DATABASE);
    let store = PostgresStore::open(server.options(DATABASE, "secrets")).expect("open");
    let shown = format!("{store:?} {:?}", server.options(DATABASE, "secrets"));
    assert!(!shown.contains(server.password()), "{shown}");

    let mut wrong = server.options(DATABASE, "secrets");
    wrong.password = stockgrid_storage::postgres::Password::Given("wrong-pw-123".to_owned());
    let error = PostgresStore::open(wrong).expect_err("a wrong password is refused");
    assert!(error.is_transient() || matches!(error, stockgrid_storage::StoreError::Backend { .. }));
    assert!(!error.to_string().contains("wrong-pw-123"), "{error}");
    drop(store);
}

/// A writer stalled inside a transaction that holds a key's row lock delays another
/// writer of that key by at most the lock timeout (UNAVAILABLE, nothing applied), and the
/// store writes again once the stalled transaction is gone.
#[test]
fn a_stalled_writer_blocks_others_only_for_the_lock_timeout() {
    let server = PrivateServer::start();
    server.create_database(DATABASE);
    let store = PostgresStore::open(server.options(DATABASE, "stall")).expect("open");
    let mut batch = WriteBatch::new();
    batch.put(b"hot".to_vec(), b"0".to_vec());
    store.commit(batch).expect("first write");

    // Another client takes the row lock and stalls (psql, holding the transaction open).
    let mut stalled = server
        .program("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "-U",
            stockgrid_storage::postgres::testing::USER,
            "-d",
            DATABASE,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "BEGIN; UPDATE stall.kv SET v = 'x' WHERE k = 'hot'; SELECT pg_sleep(3); ROLLBACK;",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run psql");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let started = std::time::Instant::now();
    let mut blocked = WriteBatch::new();
    blocked.put(b"hot".to_vec(), b"1".to_vec());
    blocked.put(b"other".to_vec(), b"1".to_vec());
    let error = store.commit(blocked).expect_err("the row is locked");
    let waited = started.elapsed();
    assert!(error.is_transient(), "{error}");
    assert!(
        waited < std::time::Duration::from_millis(1900),
        "waited {waited:?}, beyond the 500 ms lock timeout and the 1 s operation timeout"
    );
    assert_eq!(store.get(b"other").expect("get"), None, "nothing applied");
    assert!(stalled.wait().expect("psql").success());
    let mut after = WriteBatch::new();
    after.put(b"hot".to_vec(), b"2".to_vec());
    store
        .commit(after)
        .expect("writes again once the stall is over");
    assert_eq!(store.get(b"hot").expect("get"), Some(b"2".to_vec()));
}

const SHARED_SCHEMA: &str = "shared";
const INCREMENTS: u32 = 100;

/// Adds one to the shared counter `INCREMENTS` times under an `Equals` condition (a lost race
/// reads again and retries), writing a key of its own with each increment.
fn increment_counter(store: &PostgresStore, writer: u8) {
    for i in 0..INCREMENTS {
        loop {
            let current = store.get(b"counter").expect("read the counter");
            let value = u32::from_be_bytes(
                current
                    .as_deref()
                    .expect("the counter exists")
                    .try_into()
                    .expect("4 bytes"),
            );
            let mut batch = WriteBatch::new();
            batch.require(stockgrid_storage::Condition::Equals(
                b"counter".to_vec(),
                value.to_be_bytes().to_vec(),
            ));
            batch.put(b"counter".to_vec(), (value + 1).to_be_bytes().to_vec());
            batch.put(
                [&b"w"[..], &[writer], &i.to_be_bytes()].concat(),
                b"1".to_vec(),
            );
            match store.commit(batch) {
                Ok(()) => break,
                Err(stockgrid_storage::StoreError::ConditionFailed { .. }) => continue,
                Err(error) => panic!("writer {writer}: {error}"),
            }
        }
    }
}

/// Two processes write one store at once: every increment of both lands exactly once (the
/// counter ends at twice `INCREMENTS`) and every key of each is there.
#[test]
fn two_processes_write_the_same_store() {
    let server = PrivateServer::start();
    server.create_database(DATABASE);
    let store = PostgresStore::open(server.options(DATABASE, SHARED_SCHEMA)).expect("open");
    let mut batch = WriteBatch::new();
    batch.put(b"counter".to_vec(), 0u32.to_be_bytes().to_vec());
    store.commit(batch).expect("the counter");
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "second_process_writer",
            "--ignored",
            "--nocapture",
        ])
        .env("STOCKGRID_TEST_PG_URL", server.url(DATABASE))
        .env("PGPASSWORD", server.password())
        .spawn()
        .expect("start the second process");
    increment_counter(&store, 0);
    let output = child.wait_with_output().expect("the second process");
    assert!(output.status.success(), "the second process failed");
    assert_eq!(
        store.get(b"counter").expect("get"),
        Some((2 * INCREMENTS).to_be_bytes().to_vec())
    );
    for writer in 0u8..2 {
        let keys = store
            .scan(&[b'w', writer], &[b'w', writer + 1], usize::MAX)
            .expect("scan");
        assert_eq!(keys.len(), INCREMENTS as usize, "writer {writer}");
    }
}

/// The second process of `two_processes_write_the_same_store` (its password from
/// PGPASSWORD, as a node's would be).
#[test]
#[ignore = "run by two_processes_write_the_same_store as its second process"]
fn second_process_writer() {
    let url = std::env::var("STOCKGRID_TEST_PG_URL").expect("started by the two-process test");
    let password =
        stockgrid_storage::postgres::Password::from_environment_or_file(None).expect("PGPASSWORD");
    let mut options =
        stockgrid_storage::PostgresOptions::from_url(&url, password).expect("a valid URL");
    options.schema = SHARED_SCHEMA.to_owned();
    let store = PostgresStore::open(options).expect("open from the second process");
    increment_counter(&store, 1);
}

/// A commit whose answer was lost and whose resolution failed stays unresolved: the next
/// read settles it first (and sees it, since it landed), and so does the next commit.
#[test]
fn an_unresolved_commit_is_settled_before_the_next_read() {
    let server = PrivateServer::start();
    server.create_database(DATABASE);
    let store = PostgresStore::open(server.options(DATABASE, "unresolved")).expect("open");
    store.lose_next_commit_answer(true);
    store.fail_next_resolutions(1);
    let mut batch = WriteBatch::new();
    batch.put(b"landed".to_vec(), b"1".to_vec());
    let error = store.commit(batch).expect_err("the outcome stays unknown");
    assert!(error.is_outcome_unknown(), "{error}");
    // A read tries to settle it first: while that fails, the read is refused rather than
    // answered from a state that may not show the commit yet.
    store.fail_next_resolutions(1);
    let refused = store.get(b"landed").expect_err("not settled yet");
    assert!(refused.is_transient(), "{refused}");
    assert_eq!(
        store.get(b"landed").expect("the read settles it first"),
        Some(b"1".to_vec())
    );
    let mut next = WriteBatch::new();
    next.require(stockgrid_storage::Condition::Absent(b"next".to_vec()));
    next.put(b"next".to_vec(), b"2".to_vec());
    store.commit(next).expect("the next commit");
}

/// Fencing with a writer stopped in the middle of its transaction: a claim that moves the
/// fence completes while the old writer is still stopped (the server ends the idle
/// transaction), and the old writer, resumed, finds the fence moved and writes nothing, so no
/// batch that read the old fence lands after the claim.
#[test]
fn a_claim_completes_while_the_fenced_writer_is_stopped_and_the_writer_never_lands() {
    let server = PrivateServer::start();
    server.create_database(DATABASE);
    let mut options = server.options(DATABASE, "fence");
    options.operation_timeout = std::time::Duration::from_secs(1);
    options.lock_timeout = std::time::Duration::from_millis(500);
    let old_owner = PostgresStore::open(options.clone()).expect("open the old owner");
    let new_owner = PostgresStore::open(options).expect("open the new owner");
    let mut fence = WriteBatch::new();
    fence.put(b"owner".to_vec(), b"old@1".to_vec());
    // Rows between the data and the fence put them on index pages of their own, so that
    // the serializable checks (by page) see no false conflict between the two.
    for filler in 0..20_000u32 {
        fence.put(format!("m{filler:08}").into_bytes(), vec![0u8; 32]);
    }
    old_owner.commit(fence).expect("the old owner's claim");

    let release = old_owner.stall_next_commit();
    let writer = std::thread::spawn(move || {
        // The thread hands the store back, for the retry below.
        let mut batch = WriteBatch::new();
        batch
            .require(stockgrid_storage::Condition::Equals(
                b"owner".to_vec(),
                b"old@1".to_vec(),
            ))
            .put(b"data".to_vec(), b"written by the old owner".to_vec());
        let written = old_owner.commit(batch.clone());
        (written, old_owner, batch)
    });
    // Let the old owner read its fence and stop, its transaction open.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let claimed = loop {
        let mut claim = WriteBatch::new();
        claim
            .require(stockgrid_storage::Condition::Equals(
                b"owner".to_vec(),
                b"old@1".to_vec(),
            ))
            .put(b"owner".to_vec(), b"new@2".to_vec());
        match new_owner.commit(claim) {
            Ok(()) => break started.elapsed(),
            Err(error) if error.is_transient() && started.elapsed().as_secs() < 30 => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error) => panic!("the claim failed: {error}"),
        }
    };
    assert!(!writer.is_finished(), "the old owner is still stopped");
    // Now the old owner goes on, from where it stopped.
    let _ = release.send(());
    let (written, old_owner, batch) = writer.join().expect("the old owner's thread");
    // Its transaction was ended by the server: the batch fails (the connection is gone, or
    // the condition, read again, no longer holds) and nothing of it landed.
    assert!(
        written.is_err(),
        "the old owner's batch must fail: {written:?}"
    );
    assert_eq!(new_owner.get(b"data").expect("read"), None);
    assert_eq!(
        new_owner.get(b"owner").expect("read").as_deref(),
        Some(&b"new@2"[..])
    );
    // Tried again, the batch is refused by its fence, whatever the connection's state.
    let again = loop {
        match old_owner.commit(batch.clone()) {
            Err(error) if error.is_transient() && started.elapsed().as_secs() < 30 => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => break other,
        }
    };
    assert!(
        matches!(
            again,
            Err(stockgrid_storage::StoreError::ConditionFailed { .. })
        ),
        "{again:?}"
    );
    assert_eq!(new_owner.get(b"data").expect("read"), None);
    eprintln!("the claim completed after {claimed:?} with the old owner stopped");
}
