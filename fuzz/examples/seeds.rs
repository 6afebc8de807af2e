//! Writes the seed corpora under `fuzz/corpus/<target>/` from valid encodings made by the real
//! encoders: `cargo run --example seeds` in `fuzz/`. The `gate` seeds are written by hand and
//! kept as they are. Each file is named after what it holds; running this again rewrites them.

use std::path::{Path, PathBuf};

use causeway_core::clock::Timestamp;
use causeway_core::segment::SegmentLog;
use causeway_core::{Append, Command, NewEvent};
use causeway_server::cluster::codec;
use causeway_server::cluster::types::Vote;
use causeway_server::cluster::types::log_id;
use causeway_server::pb;
use openraft::EntryPayload;
use prost::Message;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    requests(&root.join("requests"));
    let commands = commands();
    for (name, command) in &commands {
        write(&root.join("command"), name, &command.encode());
    }
    for (golden_idx, (name, bytes)) in golden_commands().iter().enumerate() {
        write(
            &root.join("command"),
            &format!("golden-{golden_idx}-{name}"),
            bytes,
        );
    }
    raft_entries(&root.join("raft_entry"), &commands);
    for (seed_idx, record) in causeway_core::fuzzing::record_seeds().iter().enumerate() {
        write(&root.join("record"), &format!("record-{seed_idx}"), record);
    }
    segments(&root.join("segment"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn new_event(n: u32) -> pb::NewEvent {
    pb::NewEvent {
        scope: "orders".to_string(),
        entity: format!("order-{n}"),
        r#type: "OrderPlaced".to_string(),
        payload: bytes::Bytes::from_static(br#"{"total":12}"#),
        content_type: "application/json".to_string(),
        tags: vec!["customer:42".to_string()],
        ..Default::default()
    }
}

fn filter() -> pb::Filter {
    pb::Filter {
        scopes: vec!["orders".to_string()],
        entity_prefix: "order-".to_string(),
        ..Default::default()
    }
}

fn requests(dir: &Path) {
    let append = pb::AppendRequest {
        events: vec![new_event(1), new_event(2)],
        expected: vec![pb::ExpectedVersion {
            scope: "orders".to_string(),
            entity: "order-1".to_string(),
            kind: pb::ExpectedKind::Exact as i32,
            version: 3,
        }],
        condition: Some(pb::DcbCondition {
            query: Some(filter()),
            after_position: 7,
        }),
        idempotency_key: "key-1".to_string(),
        gates: vec!["unique-email".to_string()],
        external_causation: false,
    };
    let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_string();
    let cel = pb::gate_definition::Rule::Cel(pb::CelRule {
        expression: "event.type == 'OrderPlaced' && payload.total > 10".to_string(),
    });
    let voter = |node_id: u64| pb::ClusterNode {
        node_id,
        address: format!("127.0.0.{node_id}:7420"),
    };
    let seeds: [(u8, &str, Vec<u8>); 22] = [
        (0, "append", append.encode_to_vec()),
        (
            1,
            "dry-run",
            pb::DryRunRequest {
                append: Some(append.clone()),
            }
            .encode_to_vec(),
        ),
        (
            2,
            "get",
            pb::GetRequest {
                id: id.clone(),
                consistency: 1,
            }
            .encode_to_vec(),
        ),
        (
            3,
            "read-entity",
            pb::ReadEntityRequest {
                scope: "orders".to_string(),
                entity: "order-1".to_string(),
                from_version: 1,
                limit: 10,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            4,
            "read-log",
            pb::ReadLogRequest {
                filter: Some(filter()),
                from_position: 1,
                limit: 100,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            5,
            "head",
            pb::HeadRequest { consistency: 2 }.encode_to_vec(),
        ),
        (
            6,
            "subscribe",
            pb::SubscribeRequest {
                filter: Some(filter()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            7,
            "get-ancestors",
            pb::GetAncestorsRequest {
                id: id.clone(),
                depth: 3,
                limit: 10,
            }
            .encode_to_vec(),
        ),
        (
            8,
            "get-descendants",
            pb::GetDescendantsRequest {
                id: id.clone(),
                depth: 3,
                limit: 10,
            }
            .encode_to_vec(),
        ),
        (
            9,
            "get-correlation",
            pb::GetCorrelationRequest {
                correlation_id: id,
                limit: 10,
            }
            .encode_to_vec(),
        ),
        (
            10,
            "register-gate",
            pb::RegisterGateRequest {
                definition: Some(pb::GateDefinition {
                    name: "big-orders".to_string(),
                    scopes: vec!["orders".to_string()],
                    types: vec!["OrderPlaced".to_string()],
                    rule: Some(cel),
                }),
            }
            .encode_to_vec(),
        ),
        (11, "list-gates", pb::ListGatesRequest {}.encode_to_vec()),
        (
            12,
            "remove-gate",
            pb::RemoveGateRequest {
                name: "big-orders".to_string(),
            }
            .encode_to_vec(),
        ),
        (
            13,
            "verify-receipt",
            pb::VerifyReceiptRequest {
                receipt: Some(pb::Receipt {
                    digest: vec![1; 32],
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        ),
        (14, "backup", pb::BackupRequest {}.encode_to_vec()),
        (
            15,
            "verify",
            pb::VerifyRequest {
                from_position: 1,
                max_bytes: 1 << 20,
            }
            .encode_to_vec(),
        ),
        (
            16,
            "init-cluster",
            pb::InitClusterRequest {
                voters: vec![voter(1), voter(2), voter(3)],
            }
            .encode_to_vec(),
        ),
        (
            17,
            "add-learner",
            pb::AddLearnerRequest {
                node: Some(voter(4)),
            }
            .encode_to_vec(),
        ),
        (
            18,
            "promote-voter",
            pb::PromoteVoterRequest { node_id: 4 }.encode_to_vec(),
        ),
        (
            19,
            "remove-node",
            pb::RemoveNodeRequest { node_id: 3 }.encode_to_vec(),
        ),
        (
            20,
            "transfer-leader",
            pb::TransferLeaderRequest { node_id: 2 }.encode_to_vec(),
        ),
        (
            21,
            "get-cluster-status",
            pb::GetClusterStatusRequest {}.encode_to_vec(),
        ),
    ];
    for (method, name, bytes) in seeds {
        let mut seed = vec![method];
        seed.extend_from_slice(&bytes);
        write(dir, name, &seed);
    }
}

fn commands() -> Vec<(String, Command)> {
    let event = |n: u32| {
        let mut event = NewEvent::new(
            "orders",
            format!("order-{n}"),
            "OrderPlaced",
            bytes::Bytes::from_static(br#"{"total":12}"#),
        );
        event.tags = vec!["customer:42".to_string()];
        event
    };
    let append = Append::new(vec![event(1), event(2)]);
    vec![
        ("noop".to_string(), Command::noop()),
        (
            "append".to_string(),
            Command::append(Timestamp::new(1_700_000_000_000, 1), append),
        ),
    ]
}

/// One command of every kind, from the golden file `cargo test -p causeway-core --test command`
/// pins: `# Name` lines, then hexdump lines (offset, then bytes).
fn golden_commands() -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden/command-v1.hex");
    let text = std::fs::read_to_string(path).expect("read the golden commands");
    let mut commands: Vec<(String, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# ") {
            commands.push((name.trim().to_lowercase().replace(' ', "-"), Vec::new()));
        } else if let Some((_, bytes)) = commands.last_mut() {
            let hex = line.split_whitespace().skip(1);
            bytes.extend(hex.map(|byte| u8::from_str_radix(byte, 16).expect("a hex byte")));
        }
    }
    commands
}

fn raft_entries(dir: &Path, commands: &[(String, Command)]) {
    let blank = causeway_server::cluster::types::Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Blank,
    };
    let mut seeds = vec![("blank".to_string(), codec::encode_entry(&blank))];
    for (name, command) in commands {
        let mut entry = vec![codec::ENTRY_FORMAT_VERSION, codec::KIND_NORMAL];
        entry.extend_from_slice(&2u64.to_le_bytes());
        entry.extend_from_slice(&5u64.to_le_bytes());
        entry.extend_from_slice(&command.encode());
        seeds.push((format!("normal-{name}"), entry));
    }
    for (name, entry) in seeds {
        let mut seed = vec![0u8];
        seed.extend_from_slice(&entry);
        write(dir, &format!("entry-{name}"), &seed);
    }
    let mut vote = vec![1u8];
    vote.extend_from_slice(&codec::encode_vote(&Vote::new_committed(3, 2)));
    write(dir, "vote-committed", &vote);
}

fn segments(dir: &Path) {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let log_dir: PathBuf = scratch.path().join("log");
    let (mut log, _) = SegmentLog::open(&log_dir, 64 * 1024, 1).expect("open a segment log");
    log.append(&[b"first".to_vec(), b"second".to_vec()])
        .expect("append a batch");
    log.append_mark(&causeway_core::fuzzing::record_seeds()[2])
        .expect("append a mark");
    log.append(&[b"third".to_vec()]).expect("append a batch");
    log.flush(true).expect("flush");
    let (_, end) = log.end();
    drop(log);
    let file = std::fs::read(causeway_core::segment::segment_path(&log_dir, 1)).expect("read");
    let frames_end = usize::try_from(end).expect("small").min(file.len());
    // Mode 1: the raw file, header included, cut at the end of its frames.
    let mut raw = vec![1u8];
    raw.extend_from_slice(&file[..frames_end]);
    write(dir, "raw-three-frames-and-a-mark", &raw);
    // Mode 0: the target writes the header; these are the frames alone, then a torn last frame.
    let mut frames = vec![0u8];
    frames.extend_from_slice(&file[32..frames_end]);
    write(dir, "frames", &frames);
    let mut torn = vec![0u8];
    torn.extend_from_slice(&file[32..frames_end - 3]);
    write(dir, "frames-torn", &torn);
}
