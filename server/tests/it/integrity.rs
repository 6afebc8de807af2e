//! Integrity a node's operator can check: segment files edited behind the server's back, as a
//! bad disk or a tamperer would leave them, then a real `causewayd` on them.
//!
//! - A payload byte changed with its frame's CRC32 recomputed (the frame is whole, so it is
//!   served): the `Verify` RPC names its position, segment file and offset, and the
//!   background scrubber reports it (log line, `causeway_scrub_breaks_total`, `/readyz`).
//! - A damaged last frame of a cleanly stopped node: the node refuses to start, naming the
//!   frame; `causewayd repair` cuts it, keeping the bytes in `events/quarantine/`, and the node
//!   then starts without it.
//! - A damaged frame with whole frames after it: the node refuses to start; `causewayd repair`
//!   prints what it will cut and cuts only with `--yes`, and the node then starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_client::pb::operations_service_client::OperationsServiceClient;
use causeway_core::{Append, Config, NewEvent, Store};

use crate::harness::{Node, append, event, head, http_get, scratch};

const SEGMENT_HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 17;
const FIRST_SEGMENT: &str = "00000000000000000001.seg";

/// Writes a store with the core library, in 4 KiB segments so that most of it is sealed (the
/// server's own segments are 64 MiB): `n_appends` appends of one event each, event `i` (from
/// 0) at position `i + 1` with a payload that starts with [`marker`].
fn write_store(dir: &Path, n_appends: usize) {
    let store = Store::open(
        dir,
        Config {
            segment_bytes: 4096,
            ..Config::default()
        },
    )
    .expect("open a store");
    for event_idx in 0..n_appends {
        let mut payload = marker(event_idx).into_bytes();
        payload.resize(300, b'.');
        store
            .append(Append::new(vec![NewEvent::new(
                "acme", "order-1", "Placed", payload,
            )]))
            .expect("append");
    }
}

fn marker(event_idx: usize) -> String {
    format!("payload-marker-{event_idx:03}")
}

/// Every frame of every segment: (segment, offset, length with its header), by position.
fn frames(dir: &Path) -> Vec<(PathBuf, usize, usize)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("events"))
        .expect("list events/")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let mut found = Vec::new();
    for path in segments {
        let bytes = std::fs::read(&path).expect("read a segment");
        let mut offset = SEGMENT_HEADER_BYTES;
        while let Some(header) = bytes.get(offset..offset + FRAME_HEADER_BYTES)
            && header.iter().any(|&byte| byte != 0)
        {
            let body_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
            found.push((path.clone(), offset, FRAME_HEADER_BYTES + body_len));
            offset += FRAME_HEADER_BYTES + body_len;
        }
    }
    found
}

/// CRC32 (IEEE), as the frames use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Flips the case of the first letter of event `event_idx`'s payload marker and, with
/// `fix_crc`, rewrites the frame's CRC so the frame is whole again. Returns the frame.
fn tamper(dir: &Path, event_idx: usize, fix_crc: bool) -> (PathBuf, usize, usize) {
    let (path, offset, len) = frames(dir)[event_idx].clone();
    let mut bytes = std::fs::read(&path).expect("read the segment");
    let frame = &mut bytes[offset..offset + len];
    let at = frame
        .windows(marker(event_idx).len())
        .position(|window| window == marker(event_idx).as_bytes())
        .expect("the marker is in its frame");
    frame[at] ^= 0x20;
    if fix_crc {
        let crc = crc32(&frame[4..]);
        frame[..4].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&path, &bytes).expect("write the segment");
    (path, offset, len)
}

/// Starts `causewayd` on `data`, which must refuse to start; returns what it said.
fn refused_start(data: &Path) -> String {
    let refused = Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("run causewayd");
    assert!(!refused.status.success());
    String::from_utf8_lossy(&refused.stderr).into_owned()
}

/// Runs `causewayd repair --data-dir DATA ARGS`.
fn repair(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .arg("repair")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run causewayd repair")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finds what `OperationsService.Verify` and the scrubber must find: a change the frame CRC
/// cannot see. Catches a node that serves tampered events with nothing re-checking the chain.
#[tokio::test]
async fn a_tampered_payload_is_named_by_verify_and_by_the_scrubber() {
    let scratch = scratch();
    let data = scratch.path().join("data");
    write_store(&data, 40);
    let tampered_idx = 4;
    let (path, offset, _) = tamper(&data, tampered_idx, true);
    assert_eq!(path.file_name().expect("a name"), FIRST_SEGMENT);

    let node = Node::start(&data, &["--scrub-bytes-per-sec", "100000000"]);
    let mut operations = OperationsServiceClient::connect(format!("http://{}", node.addr))
        .await
        .expect("connect");
    // In pages as small as the server allows, as `causeway verify --log` goes.
    let mut from = 1;
    let found = loop {
        let page = operations
            .verify(causeway_client::pb::VerifyRequest {
                from_position: from,
                max_bytes: 1,
            })
            .await
            .expect("verify")
            .into_inner();
        assert_eq!(page.head_position, 40);
        if let Some(found) = page.first_break {
            break found;
        }
        assert!(
            !page.end,
            "the whole log verified despite the tampered event"
        );
        from = page.next_position;
    };
    assert_eq!(found.position, tampered_idx as u64 + 1);
    assert_eq!(found.segment, FIRST_SEGMENT);
    assert_eq!(found.offset, offset as u64);
    assert!(found.detail.contains("stores hash"), "{}", found.detail);
    assert!(
        !found
            .detail
            .contains(scratch.path().to_str().expect("utf-8"))
    );

    // From after the break, the rest verifies.
    let rest = operations
        .verify(causeway_client::pb::VerifyRequest {
            from_position: tampered_idx as u64 + 2,
            max_bytes: 0,
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(rest.end && rest.first_break.is_none(), "{rest:?}");
    assert_eq!(rest.checked_events, 40 - tampered_idx as u64 - 1);

    wait_until("the scrubber's log line", || {
        node.log()
            .contains("scrub found damage in a sealed segment")
    });
    let admin = node.admin.expect("an admin port");
    let (_, metrics) = http_get(admin, "/metrics");
    assert!(
        metrics.contains("causeway_scrub_breaks_total 1"),
        "{metrics}"
    );
    let (status, ready) = http_get(admin, "/readyz");
    assert_eq!(status, 200, "damage does not make the node not ready");
    assert!(
        ready.contains(&format!(
            "position {} in segment {FIRST_SEGMENT}",
            tampered_idx + 1
        )),
        "{ready}"
    );
}

/// A damaged last frame after a clean stop is damage to an event that was synced and may have
/// been acknowledged: the node must refuse to start rather than cut it, say which frame, and
/// `causewayd repair` must then cut it with the bytes kept. Catches the old log line
/// "truncating a torn tail that was never acknowledged", an open that cuts synced frames by
/// itself, and a cut that throws bytes away.
#[test]
fn a_damaged_last_frame_after_a_clean_stop_is_refused_until_repaired() {
    let scratch = scratch();
    let data = scratch.path().join("data");
    let mut node = Node::start(&data, &[]);
    // A runtime of its own, dropped before the node stops, so no connection stays open.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut client = node.client().await;
        for entity in ["order-1", "order-2", "order-3"] {
            append(&mut client, vec![event("acme", entity, "Placed")]).await;
        }
    });
    drop(runtime);
    assert!(node.terminate().success());
    let (path, offset, len) = frames(&data)[2].clone();
    let mut bytes = std::fs::read(&path).expect("read the segment");
    bytes[offset + len - 2] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write the segment");

    let stderr = refused_start(&data);
    assert!(
        stderr.contains(
            "frame 3 is damaged or missing, inside the length the last clean close synced"
        ),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "nothing cut");

    let done = repair(&data, &["--truncate-at-frame", "3", "--yes"]);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(said.contains("the last clean close synced"), "{said}");
    assert!(said.contains("the store now ends at position 2"), "{said}");
    let kept: Vec<PathBuf> = std::fs::read_dir(data.join("events").join("quarantine"))
        .expect("a quarantine directory")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(&kept[0]).expect("read the quarantined bytes"),
        bytes[offset..offset + len]
    );

    let node = Node::start(&data, &[]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    assert_eq!(
        runtime.block_on(async { head(&mut node.client().await).await }),
        2
    );
}

/// `causewayd repair` on the image open refuses ("frame N is damaged but frame M after it is
/// whole"): it must say what it cuts, change nothing without `--yes`, cut exactly that with
/// it, and leave a store that starts. Catches a repair that cuts elsewhere or without asking.
#[tokio::test]
async fn repair_cuts_what_it_announced_and_the_node_then_starts() {
    let scratch = scratch();
    let data = scratch.path().join("data");
    // 64 MiB segments: all four frames in the active segment, as after a power cut.
    let store = Store::open(&data, Config::default()).expect("open");
    for event_idx in 0..4 {
        store
            .append(Append::new(vec![NewEvent::new(
                "acme",
                "order-1",
                "Placed",
                marker(event_idx).into_bytes(),
            )]))
            .expect("append");
    }
    drop(store);
    let all = frames(&data);
    tamper(&data, 1, false);
    let segment = data.join("events").join(FIRST_SEGMENT);
    let damaged = std::fs::read(&segment).expect("read");
    let cut_from = all[1].1;
    let cut_bytes = all[3].1 + all[3].2 - cut_from;

    let stderr = refused_start(&data);
    assert!(
        stderr.contains("frame 2 is damaged but frame 3"),
        "{stderr}"
    );

    let wrong = repair(&data, &["--truncate-at-frame", "3", "--yes"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("frame 2 is"));

    let planned = repair(&data, &["--truncate-at-frame", "2"]);
    let plan = String::from_utf8_lossy(&planned.stdout);
    assert_eq!(planned.status.code(), Some(2), "{plan}");
    assert!(plan.contains("will cut positions 2 to 4"), "{plan}");
    assert!(
        plan.contains(&format!("{cut_bytes} bytes from offset {cut_from}")),
        "{plan}"
    );
    assert!(plan.contains("may have been acknowledged"), "{plan}");
    assert!(plan.contains("nothing changed"), "{plan}");
    assert_eq!(std::fs::read(&segment).expect("read"), damaged);

    let done = repair(&data, &["--truncate-at-frame", "2", "--yes"]);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(said.contains("the store now ends at position 1"), "{said}");
    let kept: Vec<PathBuf> = std::fs::read_dir(data.join("events").join("quarantine"))
        .expect("a quarantine directory")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(&kept[0]).expect("read"),
        damaged[cut_from..cut_from + cut_bytes]
    );

    let node = Node::start(&data, &[]);
    assert_eq!(head(&mut node.client().await).await, 1);
}
