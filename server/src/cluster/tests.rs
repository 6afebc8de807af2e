//! The cluster storage against openraft's own storage suite, and the durability properties the
//! suite cannot see (they need a reopen).

use std::collections::{BTreeMap, BTreeSet};

use causeway_core::clock::Timestamp;
use causeway_core::{Append, Command, EventId, Expected, ExpectedVersion, NewEvent};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{BasicNode, EntryPayload, RaftLogReader, StorageError};
use tempfile::TempDir;

use super::log::LogStore;
use super::state::StateMachine;
use super::types::{Entry, Membership, Proposal, Response, TypeConfig, Vote, log_id};

/// Builds a log store and state machine in fresh temporary directories, as a node lays them out.
struct TempStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("a temporary directory");
        let log = LogStore::open(&dir.path().join("raft")).expect("the log opens");
        let state = StateMachine::open(&dir.path().join("raft").join("state"))
            .expect("the state machine opens");
        Ok((dir, log, state))
    }
}

/// Every case of openraft's storage suite passes: log state, reads, vote, truncate, purge,
/// append, apply, snapshot build and install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(TempStores)
        .await
        .expect("openraft's storage suite passes");
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|&id| (id, BasicNode::new(format!("127.0.0.{id}:7700"))))
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(
            Membership::new(vec![voters], nodes).expect("a valid membership"),
        ),
    }
}

/// An append of one event to `order-7` that requires the entity to have no events yet.
fn first_order_event(term: u64, index: u64) -> Entry {
    let mut event = NewEvent::new("acme", "order-7", "Placed", b"{}".to_vec());
    event.id = Some(EventId(uuid::Uuid::from_u128(u128::from(index))));
    let mut append = Append::new(vec![event]);
    append.expected = vec![Expected {
        scope: "acme".to_string(),
        entity: "order-7".to_string(),
        version: ExpectedVersion::NoStream,
    }];
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal::new(Command::append(Timestamp::ZERO, append))),
    }
}

async fn apply_all(state: &mut StateMachine, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    state
        .apply(tokio_stream::iter(items))
        .await
        .expect("apply succeeds");
}

/// The vote, the entries, the last purged id and a truncation survive closing and reopening
/// the log, read back from Causeway's own encoding. Catches a vote or purge kept only in
/// memory, and an index mapping between Raft and frame indexes that is off by one.
#[tokio::test]
async fn log_state_survives_reopen() {
    let dir = TempDir::new().expect("a temporary directory");
    let raft_dir = dir.path().join("raft");
    {
        let mut log = LogStore::open(&raft_dir).expect("the log opens");
        log.save_vote(&Vote::new_committed(3, 2))
            .await
            .expect("vote saved");
        let entries = vec![
            membership(1, 0, &[1, 2, 3]),
            blank(1, 1),
            first_order_event(2, 2),
            blank(2, 3),
            blank(2, 4),
        ];
        log.append(entries, IOFlushed::noop())
            .await
            .expect("append");
        log.truncate_after(Some(log_id(2, 3)))
            .await
            .expect("truncate");
        log.purge(log_id(1, 1)).await.expect("purge");
    }
    let mut log = LogStore::open(&raft_dir).expect("the log reopens");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(3, 2))
    );
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 3)));
    let entries = log.try_get_log_entries(0..10).await.expect("entries");
    assert_eq!(
        entries,
        vec![first_order_event(2, 2), blank(2, 3)],
        "the purged prefix and the truncated tail are gone, the rest decodes as written"
    );
}

/// After a purge past the last entry (as after a snapshot install), the next append starts at
/// the new index with no hole, and that survives a reopen.
#[tokio::test]
async fn append_after_purge_past_the_end_restarts_the_log() {
    let dir = TempDir::new().expect("a temporary directory");
    let raft_dir = dir.path().join("raft");
    {
        let mut log = LogStore::open(&raft_dir).expect("the log opens");
        log.append(vec![blank(1, 0), blank(1, 1)], IOFlushed::noop())
            .await
            .expect("append");
        log.purge(log_id(4, 100)).await.expect("purge");
        log.append(vec![blank(5, 101)], IOFlushed::noop())
            .await
            .expect("append after the snapshot's last entry");
        let hole = log.append(vec![blank(5, 103)], IOFlushed::noop()).await;
        assert!(hole.is_err(), "an append that leaves a hole is refused");
    }
    let mut log = LogStore::open(&raft_dir).expect("the log reopens");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(4, 100)));
    assert_eq!(state.last_log_id, Some(log_id(5, 101)));
    let entries = log.try_get_log_entries(..).await.expect("entries");
    assert_eq!(entries, vec![blank(5, 101)]);
}

/// A refused command is the entry's answer and the node goes on applying; the applied log id
/// and the membership survive a reopen. Catches a denial turned into a storage error (which
/// would stop every replica on a client's bad request) and a membership kept only in memory.
#[tokio::test]
async fn refusal_is_an_answer_and_applied_state_survives_reopen() {
    let dir = TempDir::new().expect("a temporary directory");
    let state_dir = dir.path().join("raft").join("state");
    {
        let mut state = StateMachine::open(&state_dir).expect("the state machine opens");
        apply_all(
            &mut state,
            vec![membership(1, 0, &[1, 2, 3]), first_order_event(1, 1)],
        )
        .await;
        let entry = first_order_event(1, 2);
        let response = state
            .machine_for_tests()
            .apply(entry)
            .expect("a refusal is not a storage error");
        match response {
            Response::Refused(err) => assert!(err.is_deterministic(), "{err}"),
            Response::Applied(receipt) => panic!("a second first event was applied: {receipt:?}"),
        }
        apply_all(&mut state, vec![blank(2, 3)]).await;
    }
    let mut state = StateMachine::open(&state_dir).expect("the state machine reopens");
    let (applied, membership_now) = state.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(2, 3)));
    assert_eq!(membership_now.log_id(), &Some(log_id(1, 0)));
    let voters: Vec<u64> = membership_now.voter_ids().collect();
    assert_eq!(voters, vec![1, 2, 3]);
}

/// An append of `n_events` events to entity `entity`, with ids from `first_id` on.
fn append_entry(term: u64, index: u64, entity: &str, n_events: u64, first_id: u64) -> Entry {
    let events = (0..n_events)
        .map(|event_idx| {
            let mut event = NewEvent::new("acme", entity, "Noted", b"{}".to_vec());
            event.id = Some(EventId(uuid::Uuid::from_u128(u128::from(
                first_id + event_idx,
            ))));
            event
        })
        .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal::new(Command::append(
            Timestamp::ZERO,
            Append::new(events),
        ))),
    }
}

/// One apply of small and large entries together decides them exactly as applying them one
/// by one: the small ones before the first large one as a group on the task, the rest through
/// the store's writer, all in log order. A refusal in either part stays a refusal. Catches a
/// group decided out of order with what the writer holds, or an entry lost between the two.
#[tokio::test]
async fn small_and_large_entries_in_one_apply_are_decided_in_log_order() {
    let entries = || {
        vec![
            first_order_event(1, 1),
            append_entry(1, 2, "a", 3, 1_000),
            first_order_event(1, 3),
            append_entry(1, 4, "big", 100, 2_000),
            first_order_event(1, 5),
            append_entry(1, 6, "a", 2, 3_000),
            blank(1, 7),
            append_entry(1, 8, "big", 100, 4_000),
        ]
    };
    let dir = TempDir::new().expect("a temporary directory");
    let mut together =
        StateMachine::open(&dir.path().join("together")).expect("the state machine opens");
    apply_all(&mut together, entries()).await;
    let mut one_by_one =
        StateMachine::open(&dir.path().join("one")).expect("the state machine opens");
    for entry in entries() {
        apply_all(&mut one_by_one, vec![entry]).await;
    }
    let (together, one_by_one) = (together.live().get(), one_by_one.live().get());
    // 1 + 3 + 100 + 2 + 100 events written; the second and third first events refused.
    assert_eq!(together.head_and_digest().0, causeway_core::Position(206));
    assert_eq!(together.head_and_digest(), one_by_one.head_and_digest());
    assert_eq!(together.applied(), one_by_one.applied());
    let order = together
        .read_entity(
            "acme",
            "order-7",
            causeway_core::Version(0),
            causeway_core::Direction::Forward,
            10,
        )
        .expect("the entity reads");
    assert_eq!(order.len(), 1, "only the first first event is written");
}

/// Applying takes the command out of an entry the log still holds a clone of, instead of
/// copying it; the clone keeps the bytes replication sends, and a second apply of the same
/// entry decodes the same command from them. Catches a take that leaves clones unable to
/// encode or compare, or a second apply that loses the command.
#[test]
fn the_applied_command_is_taken_once_and_its_clones_keep_the_bytes() {
    let EntryPayload::Normal(proposal) = first_order_event(1, 1).payload else {
        unreachable!("first_order_event is a normal entry");
    };
    let held = proposal.clone();
    let encoded = held.encoded().clone();
    let expected = Command::decode(&encoded).expect("the encoding decodes");
    assert_eq!(proposal.take_command().expect("the first take"), expected);
    assert_eq!(held.encoded(), &encoded);
    assert_eq!(held.to_string(), "append of 1 events");
    let again = held.clone();
    assert_eq!(held.take_command().expect("a later take"), expected);
    assert_eq!(again.encoded(), &encoded);
}

/// Building a snapshot and installing one run off the async thread: on a current-thread
/// runtime (causewayd's, with one async thread) a task beside them keeps running while they
/// copy several megabytes. Catches a build or install that does its file work on the runtime,
/// which left a follower installing a large store deaf to heartbeats and every client for
/// seconds, and its leader's replication to it wedged.
#[tokio::test(flavor = "current_thread")]
async fn snapshots_are_built_and_installed_while_the_runtime_runs_other_tasks() {
    use openraft::storage::RaftSnapshotBuilder;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = TempDir::new().expect("a temporary directory");
    let mut source = StateMachine::open(&dir.path().join("source")).expect("the source opens");
    let entries = (1..=64)
        .map(|index| {
            let mut event = NewEvent::new(
                "acme",
                format!("order-{index}"),
                "Placed",
                vec![7; 64 * 1024],
            );
            event.id = Some(EventId(uuid::Uuid::from_u128(u128::from(index))));
            Entry {
                log_id: log_id(1, index),
                payload: EntryPayload::Normal(Proposal::new(Command::append(
                    Timestamp::ZERO,
                    Append::new(vec![event]),
                ))),
            }
        })
        .collect();
    apply_all(&mut source, entries).await;

    let turns = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let turns = turns.clone();
        async move {
            loop {
                turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    let before = turns.load(Ordering::Relaxed);
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("the snapshot builds");
    let during_build = turns.load(Ordering::Relaxed) - before;

    let mut target = StateMachine::open(&dir.path().join("target")).expect("the target opens");
    let before = turns.load(Ordering::Relaxed);
    target
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("the snapshot installs");
    let during_install = turns.load(Ordering::Relaxed) - before;
    ticker.abort();

    assert!(
        during_build > 0,
        "the runtime ran nothing while the snapshot was built"
    );
    assert!(
        during_install > 0,
        "the runtime ran nothing while the snapshot was installed"
    );
    let (applied, _) = target.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 64)));
    assert_eq!(target.live().get().head(), source.live().get().head());
}
