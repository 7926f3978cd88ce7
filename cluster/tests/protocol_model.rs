//! The claim / renew / expire / release / fence protocol of `cluster::protocol` and
//! `cluster::node`, as a model checked by stateright for every interleaving up to a bound
//! (issue 16: "checked beyond examples").
//!
//! Two nodes, one partition, a store that checks each transaction's conditions atomically (as
//! PostgreSQL does with its locked condition reads, and FoundationDB natively), discrete time.
//! Any node may take any step at any moment, crash once and come back as a new incarnation,
//! and a renewal or a write may start at one moment and commit at a later one (a paused
//! process); a round's two scans (members, then ownership) are separate steps too. The model
//! lets any node claim the partition when it is free or its owner is dead, more than placement
//! ever would, so its safety covers the implementation's choices.
//!
//! Two runs keep each state space small enough to explore in full (about 40 thousand and 11
//! million states; under two minutes in all on two cores): **fencing**, without a clock, where
//! any member may be declared dead at any moment (fences must hold whatever the timing), and
//! **leases**, on a clock of ticks up to [`MAX_TIME`] with a lease of [`LEASE`] ticks and a
//! margin of [`MARGIN`], without writes. The bound is small: longer histories repeat the same
//! patterns at later times, but that is an argument, not a proof.
//!
//! Properties:
//! - **one writer per ownership**: a write accepted by the store always comes from the
//!   ownership in force (a write fenced on an earlier ownership never lands);
//! - **one writer per epoch**: no two owners ever write a partition at the same epoch;
//! - **one server at a time**: at no moment do two nodes answer for the partition (a node
//!   answers only while its lease is valid by its own clock);
//! - **recovers**: from every reachable state, once crashed nodes are back and each runs its
//!   rounds fairly, the partition has a live owner within a bounded number of rounds.
//!
//! Each seeded bug (a claim that keeps the epoch, an expiry that does not check the record it
//! saw, a lease that outlasts the others' wait, a claim that ignores
//! dead owners) makes the checker find a counterexample.

use stateright::{Checker, Model, Property};

const NODES: usize = 2;
/// Ticks a member record must stand still before another node may expire it.
const LEASE: u8 = 2;
/// How much earlier than that a node stops answering.
const MARGIN: u8 = 1;
const MAX_TIME: u8 = 2;
const MAX_VERSION: u8 = 3;
const MAX_EPOCH: u8 = 2;
const MAX_CRASHES: u8 = 1;

/// What one run of the checker looks at. Fencing does not depend on time (it is done by the
/// store), so its run has no clock and lets any member be declared dead at any moment, a
/// superset of what leases allow; the leases' run has the clock and no writes. Splitting
/// keeps each state space small enough to explore in full in CI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Focus {
    /// Writes and their fences; expiry at any moment.
    Fencing,
    /// Answers and leases, on the clock; expiry only after a lease of stillness.
    Leases,
}

/// A bug planted on purpose, to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bug {
    None,
    /// A claim writes the record without raising the epoch.
    ClaimKeepsEpoch,
    /// An expiry overwrites the member record without checking it is the one seen.
    BlindExpire,
    /// The owner's lease outlasts the time the others wait before expiring it (a margin
    /// below zero).
    LeaseOutlivesExpiry,
    /// A claim takes only free partitions, never those of dead owners.
    NoClaimFromDead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MemberState {
    Absent,
    Active,
    Expired,
}

/// A member record; `version` moves with every write of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Member {
    incarnation: u8,
    version: u8,
    state: MemberState,
}

/// An ownership record: owner (node, incarnation) and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OwnerRecord {
    owner: Option<(usize, u8)>,
    epoch: u8,
}

/// A node's ownership as it holds it: the record its writes are fenced on, and (ghost) which
/// ownership that was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Held {
    record: OwnerRecord,
    generation: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    up: bool,
    joined: bool,
    incarnation: u8,
    /// The version of its own member record it last wrote.
    believed: u8,
    /// When the renewal in flight started.
    renewing: Option<u8>,
    /// Answers while `now < lease_until`.
    lease_until: u8,
    held: Option<Held>,
    /// Per node: the member record as last seen, and since when.
    observed: [Option<(Member, u8)>; NODES],
    /// The partition's owner, if its member record was gone or of another incarnation in
    /// every scan since the time noted.
    orphan: Option<((usize, u8), u8)>,
    /// Whether the members were scanned since the orphan was first noted (a claim in a later
    /// round rests on that round's own scan).
    rescanned: bool,
    /// A write in flight, fenced on the held record.
    writing: Option<Held>,
}

impl Node {
    fn fresh() -> Self {
        Self {
            up: true,
            joined: false,
            incarnation: 0,
            believed: 0,
            renewing: None,
            lease_until: 0,
            held: None,
            observed: [None; NODES],
            orphan: None,
            rescanned: false,
            writing: None,
        }
    }

    fn serves(&self, now: u8) -> bool {
        self.up && self.joined && self.held.is_some() && now < self.lease_until
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    now: u8,
    members: [Member; NODES],
    owner: OwnerRecord,
    /// Ghost: raised by every successful claim.
    generation: u8,
    nodes: [Node; NODES],
    crashes: u8,
    /// Ghost: accepted writes, as (epoch, owner).
    writers: Vec<(u8, (usize, u8))>,
    /// Ghost: a write fenced on an earlier ownership was accepted.
    stale_write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    Join(usize),
    RenewStart(usize),
    RenewCommit(usize),
    /// A node reads every member record (the first scan of its round).
    Observe(usize),
    /// A node reads the partition's ownership record (the second scan of its round) and
    /// notes whether its owner's member record, as its first scan saw it, is gone or of
    /// another incarnation.
    ScanOwner(usize),
    Expire(usize, usize),
    Claim(usize),
    Release(usize),
    WriteStart(usize),
    WriteCommit(usize),
    Crash(usize),
    Restart(usize),
}

struct Protocol {
    bug: Bug,
    focus: Focus,
}

impl Protocol {
    /// Whether `node` may take the partition, by what it has seen: free, or owned by a member
    /// it saw expired, or by an incarnation whose member record it found gone or replaced in
    /// every scan for a lease.
    fn claimable(&self, state: &State, node: usize) -> bool {
        let Some((owner, incarnation)) = state.owner.owner else {
            return true;
        };
        if self.bug == Bug::NoClaimFromDead || owner == node {
            return false;
        }
        if self.focus == Focus::Fencing {
            let member = state.members[owner];
            return member.incarnation != incarnation || member.state == MemberState::Expired;
        }
        let seen_expired = state.nodes[node].observed[owner].is_some_and(|(seen, _)| {
            seen.incarnation == incarnation && seen.state == MemberState::Expired
        });
        // As the node's round does: its latest scan of the members must still find the owner
        // gone or replaced, and so must every scan for a lease before it.
        let orphaned_now = state.nodes[node].observed[owner].is_some_and(|(seen, _)| {
            seen.state == MemberState::Absent || seen.incarnation != incarnation
        });
        let orphaned_for_a_lease = orphaned_now
            && state.nodes[node].rescanned
            && state.nodes[node].orphan.is_some_and(|(noted, since)| {
                noted == (owner, incarnation) && state.now.saturating_sub(since) >= LEASE
            });
        seen_expired || orphaned_for_a_lease
    }

    fn member_bumped(member: Member, state: MemberState) -> Member {
        Member {
            version: member.version + 1,
            state,
            ..member
        }
    }

    /// Every transition of `node` that the fair rounds take, in order: finish what is in
    /// flight, renew, look at everyone, expire, claim.
    fn fair_round(&self, state: &mut State, node: usize) {
        let step = |state: &mut State, action: Action| {
            if let Some(next) = self.next_state(state, action) {
                *state = next;
            }
        };
        if !state.nodes[node].up {
            step(state, Action::Restart(node));
        }
        if !state.nodes[node].joined {
            step(state, Action::Join(node));
        }
        if state.nodes[node].writing.is_some() {
            step(state, Action::WriteCommit(node));
        }
        if state.nodes[node].renewing.is_none() {
            step(state, Action::RenewStart(node));
        }
        step(state, Action::RenewCommit(node));
        step(state, Action::Observe(node));
        for other in 0..NODES {
            if other != node {
                step(state, Action::Expire(node, other));
            }
        }
        step(state, Action::Observe(node));
        step(state, Action::ScanOwner(node));
        step(state, Action::Claim(node));
    }

    /// From `state`, rounds run fairly by every node (crashed ones restarted), with time
    /// passing, give the partition a live owner that answers for it.
    fn recovers(&self, state: &State) -> bool {
        let mut state = state.clone();
        // Free the bounds: recovery may need more time and versions than exploration.
        for _ in 0..(2 * LEASE + 4) {
            for node in 0..NODES {
                self.fair_round(&mut state, node);
            }
            let served = state.nodes.iter().any(|node| node.serves(state.now));
            let owned_live = state.owner.owner.is_some_and(|(owner, incarnation)| {
                state.nodes[owner].up && state.nodes[owner].incarnation == incarnation
            });
            if served && owned_live {
                return true;
            }
            state.now = state.now.saturating_add(1);
        }
        false
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let absent = Member {
            incarnation: 0,
            version: 0,
            state: MemberState::Absent,
        };
        vec![State {
            now: 0,
            members: [absent; NODES],
            owner: OwnerRecord {
                owner: None,
                epoch: 0,
            },
            generation: 0,
            nodes: [Node::fresh(), Node::fresh()],
            crashes: 0,
            writers: Vec::new(),
            stale_write: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let timed = self.focus == Focus::Leases;
        if timed && state.now < MAX_TIME {
            actions.push(Action::Tick);
        }
        for n in 0..NODES {
            let node = &state.nodes[n];
            if !node.up {
                actions.push(Action::Restart(n));
                continue;
            }
            if state.crashes < MAX_CRASHES {
                actions.push(Action::Crash(n));
            }
            if !node.joined {
                actions.push(Action::Join(n));
            } else if node.renewing.is_none() {
                actions.push(Action::RenewStart(n));
            }
            if node.renewing.is_some() {
                actions.push(Action::RenewCommit(n));
            }
            if timed {
                actions.push(Action::Observe(n));
                actions.push(Action::ScanOwner(n));
            }
            for m in 0..NODES {
                if m != n {
                    actions.push(Action::Expire(n, m));
                }
            }
            if node.joined && node.held.is_none() {
                actions.push(Action::Claim(n));
            }
            if node.held.is_some() {
                actions.push(Action::Release(n));
                if !timed && node.writing.is_none() {
                    actions.push(Action::WriteStart(n));
                }
            }
            if node.writing.is_some() {
                actions.push(Action::WriteCommit(n));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let now = state.now;
        match action {
            Action::Tick => state.now += 1,
            Action::Join(n) => {
                let node = &mut state.nodes[n];
                if !node.up || node.joined {
                    return None;
                }
                node.incarnation += 1;
                let member = Member {
                    incarnation: node.incarnation,
                    version: state.members[n].version + 1,
                    state: MemberState::Active,
                };
                state.members[n] = member;
                node.joined = true;
                node.believed = member.version;
                node.lease_until = now + LEASE - MARGIN;
            }
            Action::RenewStart(n) => {
                let node = &mut state.nodes[n];
                if !node.up || !node.joined || node.renewing.is_some() {
                    return None;
                }
                node.renewing = Some(now);
            }
            Action::RenewCommit(n) => {
                let node = &mut state.nodes[n];
                let started = node.renewing.take()?;
                let current = state.members[n];
                if current.version == node.believed && current.incarnation == node.incarnation {
                    if self.focus == Focus::Fencing {
                        // Without a clock a renewal only tells whether it was expelled.
                        return Some(state);
                    }
                    let renewed = Self::member_bumped(current, MemberState::Active);
                    state.members[n] = renewed;
                    node.believed = renewed.version;
                    node.lease_until = match self.bug {
                        Bug::LeaseOutlivesExpiry => started + LEASE + 1,
                        _ => started + LEASE - MARGIN,
                    };
                } else {
                    // Expelled: it drops everything (a write in flight may still reach the
                    // store, where its fence refuses it).
                    node.joined = false;
                    node.held = None;
                    node.lease_until = 0;
                }
            }
            Action::Observe(n) => {
                let mut changed = false;
                for m in (0..NODES).filter(|&m| m != n) {
                    let seen = state.members[m];
                    let slot = &mut state.nodes[n].observed[m];
                    if slot.is_none_or(|(previous, _)| previous != seen) {
                        *slot = Some((seen, now));
                        changed = true;
                    }
                }
                let node = &mut state.nodes[n];
                if node.orphan.is_some() && !node.rescanned {
                    node.rescanned = true;
                    changed = true;
                }
                if !changed {
                    return None;
                }
            }
            Action::ScanOwner(n) => {
                let node = &mut state.nodes[n];
                let orphaned = state.owner.owner.filter(|&(owner, incarnation)| {
                    owner != n
                        && node.observed[owner].is_some_and(|(seen, _)| {
                            seen.state == MemberState::Absent || seen.incarnation != incarnation
                        })
                });
                let next = match (orphaned, node.orphan) {
                    (Some(owner), Some((noted, since))) if noted == owner => Some((owner, since)),
                    (Some(owner), _) => {
                        node.rescanned = false;
                        Some((owner, now))
                    }
                    (None, _) => None,
                };
                if next == node.orphan {
                    return None;
                }
                node.orphan = next;
            }
            Action::Expire(_, m) if self.focus == Focus::Fencing => {
                // Any member may be suspected at any moment: the fences must hold anyway.
                let current = state.members[m];
                if current.state != MemberState::Active {
                    return None;
                }
                state.members[m] = Self::member_bumped(current, MemberState::Expired);
            }
            Action::Expire(n, m) => {
                let (seen, since) = state.nodes[n].observed[m]?;
                if seen.state != MemberState::Active || now.saturating_sub(since) < LEASE {
                    return None;
                }
                let current = state.members[m];
                if self.bug != Bug::BlindExpire && current != seen {
                    return None;
                }
                state.members[m] = Self::member_bumped(current, MemberState::Expired);
            }
            Action::Claim(n) => {
                let node = &state.nodes[n];
                if !node.up || !node.joined || node.held.is_some() || !self.claimable(&state, n) {
                    return None;
                }
                // As the implementation: a node claims only while its lease is valid (in the
                // fencing run, which has no clock, whenever it holds a record).
                if self.focus == Focus::Leases && now >= node.lease_until {
                    return None;
                }
                let epoch = match self.bug {
                    Bug::ClaimKeepsEpoch => state.owner.epoch.max(1),
                    _ => state.owner.epoch + 1,
                };
                let record = OwnerRecord {
                    owner: Some((n, node.incarnation)),
                    epoch,
                };
                state.owner = record;
                state.generation += 1;
                state.nodes[n].held = Some(Held {
                    record,
                    generation: state.generation,
                });
            }
            Action::Release(n) => {
                let held = state.nodes[n].held.take()?;
                if state.owner == held.record {
                    state.owner = OwnerRecord {
                        owner: None,
                        epoch: held.record.epoch,
                    };
                }
            }
            Action::WriteStart(n) => {
                let node = &mut state.nodes[n];
                if node.writing.is_some() {
                    return None;
                }
                node.writing = Some(node.held?);
            }
            Action::WriteCommit(n) => {
                let writing = state.nodes[n].writing.take()?;
                if state.owner == writing.record {
                    if writing.generation != state.generation {
                        state.stale_write = true;
                    }
                    let writer = writing.record.owner?;
                    let entry = (writing.record.epoch, writer);
                    if !state.writers.contains(&entry) {
                        state.writers.push(entry);
                    }
                } else if state.nodes[n].held == Some(writing) {
                    // Fenced out: it lost the partition.
                    state.nodes[n].held = None;
                }
            }
            Action::Crash(n) => {
                if state.crashes >= MAX_CRASHES || !state.nodes[n].up {
                    return None;
                }
                state.crashes += 1;
                let incarnation = state.nodes[n].incarnation;
                state.nodes[n] = Node {
                    up: false,
                    incarnation,
                    ..Node::fresh()
                };
            }
            Action::Restart(n) => {
                if state.nodes[n].up {
                    return None;
                }
                state.nodes[n].up = true;
            }
        }
        Some(state)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.now <= MAX_TIME
            && state.owner.epoch <= MAX_EPOCH
            && state.generation <= MAX_EPOCH + 1
            && state.nodes.iter().all(|node| node.incarnation <= 2)
            && state
                .members
                .iter()
                .all(|member| member.version <= MAX_VERSION)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one writer per ownership", |_, state: &State| {
                !state.stale_write
            }),
            Property::always("one writer per epoch", |_, state: &State| {
                state.writers.iter().all(|(epoch, writer)| {
                    state
                        .writers
                        .iter()
                        .all(|(other_epoch, other)| other_epoch != epoch || other == writer)
                })
            }),
            Property::always("one server at a time", |_, state: &State| {
                state
                    .nodes
                    .iter()
                    .filter(|node| node.serves(state.now))
                    .count()
                    <= 1
            }),
            // Checked at the horizon (every explored path reaches it by ticking), where it is
            // the most demanding: whatever happened, fair rounds from there recover.
            Property::always("recovers", |model: &Protocol, state: &State| {
                state.now < MAX_TIME || model.recovers(state)
            }),
            Property::sometimes("a write lands", |_, state: &State| {
                !state.writers.is_empty()
            }),
            Property::sometimes("the partition fails over", |_, state: &State| {
                state.owner.epoch >= 2 && state.crashes > 0
            }),
        ]
    }
}

fn check(bug: Bug, focus: Focus) -> impl Checker<Protocol> {
    let started = std::time::Instant::now();
    let checker = Protocol { bug, focus }
        .checker()
        .threads(1)
        .spawn_dfs()
        .join();

    eprintln!(
        "{bug:?}, {focus:?}: {} distinct states in {:?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    checker
}

#[test]
fn the_fences_hold_for_every_interleaving_within_the_bound() {
    let checker = check(Bug::None, Focus::Fencing);
    checker.assert_no_discovery("one writer per ownership");
    checker.assert_no_discovery("one writer per epoch");
    assert!(checker.discovery("a write lands").is_some());
    assert!(
        checker.unique_state_count() > 1_000,
        "the bound explores little"
    );
}

#[test]
fn the_leases_hold_for_every_interleaving_within_the_bound() {
    let checker = check(Bug::None, Focus::Leases);
    checker.assert_no_discovery("one server at a time");
    checker.assert_no_discovery("recovers");
    assert!(checker.discovery("the partition fails over").is_some());
    assert!(
        checker.unique_state_count() > 1_000,
        "the bound explores little"
    );
}

#[test]
fn a_claim_that_keeps_the_epoch_is_caught() {
    let checker = check(Bug::ClaimKeepsEpoch, Focus::Fencing);
    assert!(
        checker.discovery("one writer per ownership").is_some(),
        "a claim that keeps the epoch lets a write fenced on an old ownership land"
    );
}

#[test]
fn an_expiry_that_does_not_check_the_record_it_saw_is_caught() {
    let checker = check(Bug::BlindExpire, Focus::Leases);
    assert!(
        checker.discovery("one server at a time").is_some(),
        "a blind expiry lets a claim overlap a freshly renewed lease"
    );
}

#[test]
fn a_lease_that_outlives_the_others_wait_is_caught() {
    let checker = check(Bug::LeaseOutlivesExpiry, Focus::Leases);
    assert!(
        checker.discovery("one server at a time").is_some(),
        "a lease longer than the others' wait lets two nodes answer at once"
    );
}

#[test]
fn a_claim_that_ignores_dead_owners_is_caught() {
    let checker = check(Bug::NoClaimFromDead, Focus::Leases);
    assert!(
        checker.discovery("recovers").is_some(),
        "a partition whose owner died must be claimed again"
    );
}
