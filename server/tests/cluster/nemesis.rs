//! The nemesis run: concurrent clients append and read while a seeded nemesis kills nodes
//! (`kill -9`) and restarts them, and cuts nodes off and heals them; then the cluster is healed
//! and the whole recorded history is judged by the checker (`history.rs`).
//!
//! The clients append unique payloads: some once without a key, some with an idempotency key
//! and retries while the outcome is unknown, some under an expected version of a few shared
//! entities; and they read the log at every consistency level from any node. One subscription
//! per node records what it delivers, resuming after its last position when the node goes.
//! Snapshots are taken every few hundred entries, so a restarted node may be caught up by one.
//!
//! `CAUSEWAY_NEMESIS_SECS` sets how long the faults go on (default 10, for CI);
//! `CAUSEWAY_NEMESIS_SEED` replays a run's choices (default random; the seed is printed). A
//! seed fixes what the clients and the nemesis choose, not how the machine schedules them.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clients::{ANSWER_WAIT, Answer, Router, lazy_channel};
use crate::history::{self, AppendOutcome, Consistency, History, NodeLog, Operation};
use crate::nodes::{Cluster, SCOPE, SETTLE_WAIT, event, pb};
use pb::event_store_service_client::EventStoreServiceClient;

/// How long the faults go on unless `CAUSEWAY_NEMESIS_SECS` says otherwise.
const NEMESIS_SECS_DEFAULT: u64 = 10;
/// The clients that append and read at once.
const N_CLIENTS: usize = 4;
/// The entities the conditional appends compete for.
const N_HOT_ENTITIES: u64 = 3;
/// The most attempts of an append with an idempotency key.
const KEYED_ATTEMPTS_MAX: usize = 6;
/// The most events one read of the log asks for.
const READ_EVENTS_MAX: u32 = 200;
/// The shortest and longest pause between two of the nemesis's moves, in milliseconds.
const NEMESIS_PAUSE_MS: (u64, u64) = (300, 2000);
/// Snapshot often enough that a node down for a few seconds may be caught up by one.
const NODE_FLAGS: [&str; 4] = ["--snapshot-entries", "200", "--log-keep-entries", "50"];

/// A small seeded generator (SplitMix64): the run's choices, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn seed() -> u64 {
    env_u64("CAUSEWAY_NEMESIS_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        Rng(nanos ^ u64::from(std::process::id())).next_u64()
    })
}

/// What one client did.
struct ClientRun {
    operations: Vec<Operation>,
}

/// Runs client `client` until `deadline`: appends of three kinds and reads.
async fn run_client(client: usize, mut router: Router, seed: u64, deadline: Instant) -> ClientRun {
    let mut rng = Rng(seed);
    let mut operations = Vec::new();
    let mut op_idx = 0;
    let mut read_through = 0;
    while Instant::now() < deadline {
        op_idx += 1;
        let payload = format!("c{client}-{op_idx}");
        let roll = rng.below(100);
        let operation = if roll < 30 {
            append_once(client, &mut router, &payload).await
        } else if roll < 45 {
            append_keyed(client, &mut router, &payload).await
        } else if roll < 55 {
            let entity = format!("hot-{}", rng.below(N_HOT_ENTITIES));
            append_expecting(client, &mut router, &entity, &payload).await
        } else {
            read(client, &router, &mut rng, &mut read_through).await
        };
        if let Some(operation) = operation {
            operations.push(operation);
        }
    }
    ClientRun { operations }
}

/// The entity a client's unconditional appends go to.
fn own_entity(client: usize) -> String {
    format!("client-{client}")
}

fn acknowledged(receipt: &pb::Receipt, entity: &str) -> AppendOutcome {
    let committed = &receipt.events[0];
    AppendOutcome::Ok {
        position: committed.position,
        entity_version: Some((format!("{SCOPE}/{entity}"), committed.version)),
    }
}

/// One attempt, no key: the answer is the outcome.
async fn append_once(client: usize, router: &mut Router, payload: &str) -> Option<Operation> {
    let entity = own_entity(client);
    let request = pb::AppendRequest {
        events: vec![event(&entity, payload)],
        ..Default::default()
    };
    let invoked = Instant::now();
    let outcome = match router.append_once(request).await {
        Answer::Acknowledged(receipt) => acknowledged(&receipt, &entity),
        Answer::NotLeader(_) | Answer::Refused(_) => AppendOutcome::Failed,
        Answer::Unknown(_) => AppendOutcome::Unknown,
    };
    Some(Operation::Append {
        client,
        payload: payload.as_bytes().to_vec(),
        invoked,
        completed: Instant::now(),
        outcome,
    })
}

/// Retried with its key while the outcome is unknown or the node asked is not the leader.
/// Acknowledged if any attempt was; failed only if every attempt definitely failed, since an
/// attempt of unknown outcome may be applied whatever a later one is told.
async fn append_keyed(client: usize, router: &mut Router, payload: &str) -> Option<Operation> {
    let entity = own_entity(client);
    let request = pb::AppendRequest {
        events: vec![event(&entity, payload)],
        idempotency_key: format!("key-{payload}"),
        ..Default::default()
    };
    let invoked = Instant::now();
    let mut any_unknown = false;
    let mut outcome = AppendOutcome::Failed;
    for _ in 0..KEYED_ATTEMPTS_MAX {
        match router.append_once(request.clone()).await {
            Answer::Acknowledged(receipt) => {
                outcome = acknowledged(&receipt, &entity);
                break;
            }
            Answer::Refused(_) => break,
            Answer::NotLeader(_) => {}
            Answer::Unknown(_) => any_unknown = true,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if any_unknown && outcome == AppendOutcome::Failed {
        outcome = AppendOutcome::Unknown;
    }
    Some(Operation::Append {
        client,
        payload: payload.as_bytes().to_vec(),
        invoked,
        completed: Instant::now(),
        outcome,
    })
}

/// Reads a hot entity's version from the leader, then appends expecting exactly it.
async fn append_expecting(
    client: usize,
    router: &mut Router,
    entity: &str,
    payload: &str,
) -> Option<Operation> {
    let mut leader = router.client(router.leader());
    let read = leader.read_entity(pb::ReadEntityRequest {
        scope: SCOPE.to_string(),
        entity: entity.to_string(),
        direction: pb::Direction::Backward as i32,
        limit: 1,
        consistency: pb::ReadConsistency::Leader as i32,
        ..Default::default()
    });
    let version = match tokio::time::timeout(ANSWER_WAIT, read).await {
        Ok(Ok(response)) => response
            .into_inner()
            .events
            .first()
            .map_or(0, |event| event.version),
        Ok(Err(status)) => {
            router.follow(&status);
            return None;
        }
        Err(_) => return None,
    };
    let expected = pb::ExpectedVersion {
        scope: SCOPE.to_string(),
        entity: entity.to_string(),
        kind: if version == 0 {
            pb::ExpectedKind::NoStream as i32
        } else {
            pb::ExpectedKind::Exact as i32
        },
        version,
    };
    let request = pb::AppendRequest {
        events: vec![event(entity, payload)],
        expected: vec![expected],
        ..Default::default()
    };
    let invoked = Instant::now();
    let outcome = match router.append_once(request).await {
        Answer::Acknowledged(receipt) => {
            let outcome = acknowledged(&receipt, entity);
            assert_eq!(
                receipt.events[0].version,
                version + 1,
                "an append expecting {entity} at version {version} was written at another"
            );
            outcome
        }
        Answer::NotLeader(_) | Answer::Refused(_) => AppendOutcome::Failed,
        Answer::Unknown(_) => AppendOutcome::Unknown,
    };
    Some(Operation::Append {
        client,
        payload: payload.as_bytes().to_vec(),
        invoked,
        completed: Instant::now(),
        outcome,
    })
}

/// Reads a run of the log from a random node at a random consistency level, mostly near the
/// head this client last saw; a refused or failed read tells nothing and is not recorded.
async fn read(
    client: usize,
    router: &Router,
    rng: &mut Rng,
    read_through: &mut u64,
) -> Option<Operation> {
    let ids = router.ids();
    let node = ids[rng.below(ids.len() as u64) as usize];
    let (consistency, level) = match rng.below(3) {
        0 => (Consistency::Linearizable, pb::ReadConsistency::Linearizable),
        1 => (Consistency::Leader, pb::ReadConsistency::Leader),
        _ => (Consistency::Local, pb::ReadConsistency::Local),
    };
    let from = if rng.chance(20) {
        1
    } else {
        read_through.saturating_sub(rng.below(50)).max(1)
    };
    let request = pb::ReadLogRequest {
        from_position: from,
        direction: pb::Direction::Forward as i32,
        limit: READ_EVENTS_MAX,
        consistency: level as i32,
        ..Default::default()
    };
    let invoked = Instant::now();
    let answer = tokio::time::timeout(ANSWER_WAIT, router.client(node).read_log(request)).await;
    let Ok(Ok(response)) = answer else {
        return None;
    };
    let page = response.into_inner();
    let entries: Vec<(u64, Vec<u8>)> = page
        .events
        .into_iter()
        .map(|event| (event.position, event.payload.to_vec()))
        .collect();
    if let Some((position, _)) = entries.last() {
        *read_through = (*read_through).max(*position);
    }
    Some(Operation::Read {
        client,
        consistency,
        invoked,
        completed: Instant::now(),
        from,
        entries,
        reached_end: page.end,
    })
}

/// Follows node `id`'s log from position 1 until told to stop, resuming after the last event
/// seen whenever the stream ends or fails; publishes the next position it waits for.
async fn run_subscription(
    id: u64,
    client: EventStoreServiceClient<tonic::transport::Channel>,
    mut stop: watch::Receiver<bool>,
    next_position: watch::Sender<u64>,
) -> Operation {
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut n_resumed = 0;
    'resume: while !*stop.borrow() {
        let from = seen.last().map_or(1, |(position, _)| position + 1);
        let request = pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromPosition(from)),
            ..Default::default()
        };
        let mut client = client.clone();
        let opened = tokio::select! {
            opened = tokio::time::timeout(ANSWER_WAIT, client.subscribe(request)) => opened,
            _ = stop.changed() => break,
        };
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = stop.changed() => break 'resume,
            };
            match message {
                Ok(Some(pb::SubscribeResponse {
                    message: Some(pb::subscribe_response::Message::Events(batch)),
                })) => {
                    seen.extend(
                        batch
                            .events
                            .into_iter()
                            .map(|event| (event.position, event.payload.to_vec())),
                    );
                    let next = seen.last().map_or(1, |(position, _)| position + 1);
                    next_position.send_replace(next);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    n_resumed += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'resume;
                }
            }
        }
    }
    println!("subscription on node {id}: resumed {n_resumed} times");
    Operation::Subscription {
        node: format!("node {id}"),
        from: 1,
        seen,
    }
}

/// The nemesis's faults in force.
#[derive(Default)]
struct Faults {
    killed: Option<u64>,
    isolated: Option<u64>,
    n_kills: usize,
    n_isolations: usize,
}

/// The running node that says it leads, if one does.
async fn leader_now(cluster: &Cluster) -> Option<u64> {
    for id in cluster.running() {
        if let Some(status) = cluster.status(id).await
            && status.role == pb::NodeRole::Leader as i32
        {
            return Some(id);
        }
    }
    None
}

/// One move: ends a fault in force, or starts one (a kill or a cut, of the leader or of any
/// node), at most one of each kind at a time.
async fn nemesis_move(cluster: &mut Cluster, rng: &mut Rng, faults: &mut Faults, started: Instant) {
    let at = started.elapsed().as_secs_f64();
    let active = faults.killed.is_some() || faults.isolated.is_some();
    if active && rng.chance(60) {
        if let Some(id) = faults.killed.take() {
            println!("nemesis +{at:.1}s: restart node {id}");
            tokio::task::block_in_place(|| cluster.member(id).start());
        } else if let Some(id) = faults.isolated.take() {
            println!("nemesis +{at:.1}s: heal node {id}");
            cluster.heal();
        }
        return;
    }
    let target = if rng.chance(50) {
        leader_now(cluster).await
    } else {
        None
    };
    let target = target.unwrap_or_else(|| rng.below(cluster.members.len() as u64) + 1);
    if rng.chance(50) && faults.killed.is_none() && faults.isolated != Some(target) {
        println!("nemesis +{at:.1}s: kill -9 node {target}");
        cluster.member(target).kill();
        faults.killed = Some(target);
        faults.n_kills += 1;
    } else if faults.isolated.is_none() && faults.killed != Some(target) {
        println!("nemesis +{at:.1}s: cut off node {target}");
        tokio::task::block_in_place(|| cluster.isolate(target));
        faults.isolated = Some(target);
        faults.n_isolations += 1;
    }
}

/// Under kills, restarts, partitions and heals, the recorded history of appends, reads and
/// subscriptions holds every invariant of `history.rs`: acknowledged appends in the final log
/// once at their positions, failed ones absent, reads and subscriptions runs of the final log,
/// linearizable and `leader` reads never stale, entity versions gapless, and every node's log a
/// prefix of one history. Catches lost or doubled acknowledged writes, divergent replicas,
/// stale linearizable reads, `leader` reads from a leader past its lease or behind on apply,
/// and subscriptions that skip or repeat events across failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_under_kills_and_partitions_is_valid() {
    let seed = seed();
    let secs = env_u64("CAUSEWAY_NEMESIS_SECS").unwrap_or(NEMESIS_SECS_DEFAULT);
    println!("nemesis: CAUSEWAY_NEMESIS_SEED={seed} CAUSEWAY_NEMESIS_SECS={secs}");
    let mut cluster = Cluster::new_behind_proxies(3);
    for member in &mut cluster.members {
        member.start_with(&NODE_FLAGS);
    }
    cluster.init_all().await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscriptions = JoinSet::new();
    let mut subscribed_through = Vec::new();
    for member in &cluster.members {
        let (next_tx, next_rx) = watch::channel(1);
        subscribed_through.push((member.id, next_rx));
        let client = EventStoreServiceClient::new(lazy_channel(member.addr));
        subscriptions.spawn(run_subscription(
            member.id,
            client,
            stop_rx.clone(),
            next_tx,
        ));
    }
    let mut clients = JoinSet::new();
    for client in 0..N_CLIENTS {
        let router = Router::new(&cluster);
        let client_seed = Rng(seed ^ (client as u64 + 1)).next_u64();
        clients.spawn(run_client(client, router, client_seed, deadline));
    }

    let mut rng = Rng(seed);
    let mut faults = Faults::default();
    while Instant::now() < deadline {
        let pause = NEMESIS_PAUSE_MS.0 + rng.below(NEMESIS_PAUSE_MS.1 - NEMESIS_PAUSE_MS.0);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if Instant::now() < deadline {
            nemesis_move(&mut cluster, &mut rng, &mut faults, started).await;
        }
    }
    println!(
        "nemesis +{:.1}s: heal all, restart all",
        started.elapsed().as_secs_f64()
    );
    cluster.heal();
    if let Some(id) = faults.killed.take() {
        tokio::task::block_in_place(|| cluster.member(id).start());
    }
    // Operations still under way when the faults ended finish against a healed cluster.
    let mut operations = Vec::new();
    while let Some(run) = clients.join_next().await {
        operations.extend(run.expect("a client's task").operations);
    }

    cluster.assert_replicas_identical().await;
    let leader = cluster.leader().await;
    let final_log = cluster.final_log(leader).await;
    let head = final_log.last().map_or(0, |entry| entry.position);
    let mut node_logs = Vec::new();
    for id in cluster.running() {
        node_logs.push(NodeLog {
            node: format!("node {id}"),
            entries: cluster.local_log(id).await,
        });
    }
    for (id, mut next) in subscribed_through {
        let caught_up = tokio::time::timeout(SETTLE_WAIT, next.wait_for(|next| *next > head))
            .await
            .is_ok();
        assert!(
            caught_up,
            "the subscription on node {id} stopped at {} of {head}",
            *next.borrow()
        );
    }
    stop_tx.send_replace(true);
    while let Some(subscription) = subscriptions.join_next().await {
        operations.push(subscription.expect("a subscription's task"));
    }

    let history = History {
        operations,
        final_log,
        node_logs,
    };
    let report = history::check(&history);
    println!(
        "nemesis: seed {seed}, {secs} s: {} operations, {} faults ({} kills, {} cuts), {} anomalies",
        history.operations.len(),
        faults.n_kills + faults.n_isolations,
        faults.n_kills,
        faults.n_isolations,
        report.anomalies.len()
    );
    println!("nemesis: {:?}", report.counts);
    report.assert_valid();
    assert!(
        report.counts.appends_ok > 0 && report.counts.reads_linearizable > 0,
        "the run did too little to judge: {:?}",
        report.counts
    );
}
