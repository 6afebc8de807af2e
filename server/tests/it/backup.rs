//! Backup and restore end to end: `OperationsService.Backup` taken by the client library from a
//! node under load, `causewayd restore` into a fresh data directory, and a node started on it.
//! Also what must be refused: a backup of a damaged log (DATA_LOSS, before any file), a damaged
//! or incomplete backup (naming the file), a restore into a store, and backups beyond
//! `BACKUPS_MAX`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_client::pb::operations_service_client::OperationsServiceClient;
use tonic::Code;

use crate::harness::{Node, append, event, head, pb, read_all, scratch};

/// Appends the backup must not wait for before it starts: the copy is taken while they go on.
const APPENDS_BEFORE_BACKUP: u64 = 200;
/// Appends after the backup returned, so the store is surely past the backup's position.
const APPENDS_AFTER_BACKUP: u64 = 100;
/// Concurrent appenders.
const APPENDERS: usize = 4;

/// What `causewayd restore` printed and how it exited.
struct Restore {
    success: bool,
    stdout: String,
    stderr: String,
}

fn restore(from: &Path, to: &Path) -> Restore {
    let output = Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data-dir")
        .arg(to)
        .output()
        .expect("run causewayd restore");
    Restore {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Takes a backup of the node at `addr` into `to` through the client library.
async fn take_backup(addr: std::net::SocketAddr, to: &Path) -> causeway_client::Backup {
    let client = causeway_client::Client::connect(&addr.to_string())
        .await
        .expect("connect");
    causeway_client::backup::backup(&client, to)
        .await
        .expect("the backup succeeds")
}

/// A raw `OperationsService` client of the node at `addr`, on a connection of its own.
async fn operations_client(
    addr: std::net::SocketAddr,
) -> OperationsServiceClient<tonic::transport::Channel> {
    OperationsServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// The log digest after `events` (from position 1, in order), as the store computes it.
fn digest_of(events: &[pb::Event]) -> Vec<u8> {
    let mut digest = [0u8; 32];
    for event in events {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&digest);
        hasher.update(&event.hash);
        digest = *hasher.finalize().as_bytes();
    }
    digest.to_vec()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the backup") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

fn segment_of(backup: &Path) -> PathBuf {
    backup.join("events").join("00000000000000000001.seg")
}

/// A backup taken while appenders write holds exactly the events up to its position: restored
/// into a fresh data directory, a node started on it has that head and digest, the digest
/// equals the one the original log had at that position, and every event up to it reads back
/// with the original's id and hash. Catches a checkpoint that is not a consistent cut (a torn
/// append, a frame past the head) and a transfer that loses or reorders bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_appends_restores_to_its_position_and_digest() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let appended = Arc::new(AtomicU64::new(0));
    let stop_after = Arc::new(AtomicU64::new(u64::MAX));
    let mut appenders = Vec::new();
    for writer_idx in 0..APPENDERS {
        let mut client = node.client().await;
        let appended = appended.clone();
        let stop_after = stop_after.clone();
        appenders.push(tokio::spawn(async move {
            let mut seq = 0;
            while appended.load(Ordering::SeqCst) < stop_after.load(Ordering::SeqCst) {
                let entity = format!("writer-{writer_idx}-{}", seq % 16);
                append(
                    &mut client,
                    vec![
                        event("acme", &entity, "Placed"),
                        event("acme", &entity, "Paid"),
                    ],
                )
                .await;
                seq += 1;
                appended.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while appended.load(Ordering::SeqCst) < APPENDS_BEFORE_BACKUP {
        assert!(Instant::now() < deadline, "the appenders made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let backup_dir = dir.path().join("backup");
    let backup = take_backup(node.addr, &backup_dir).await;
    stop_after.store(
        appended.load(Ordering::SeqCst) + APPENDS_AFTER_BACKUP,
        Ordering::SeqCst,
    );
    for appender in appenders {
        appender.await.expect("an appender finishes");
    }
    let mut original = node.client().await;
    let original_head = head(&mut original).await;
    assert!(
        backup.position >= 2 * APPENDS_BEFORE_BACKUP,
        "the backup holds the appends made before it: {}",
        backup.position
    );
    assert!(
        backup.position < original_head,
        "appends went on after the backup's position {} (head {original_head})",
        backup.position
    );
    assert_eq!(backup.position % 2, 0, "appends of two events are whole");
    let original_events = read_all(&mut original, None).await;
    let up_to_backup = &original_events[..backup.position as usize];
    assert_eq!(
        backup.digest,
        digest_of(up_to_backup),
        "the backup's digest is the original log's digest at its position"
    );

    let restored_dir = dir.path().join("restored");
    let restored = restore(&backup_dir, &restored_dir);
    assert!(restored.success, "restore failed: {}", restored.stderr);
    assert!(
        restored
            .stdout
            .contains(&format!("restored position {}", backup.position)),
        "{}",
        restored.stdout
    );
    let restored_node = Node::start(&restored_dir, &[]);
    let mut client = restored_node.client().await;
    let answer = client
        .head(pb::HeadRequest::default())
        .await
        .expect("head")
        .into_inner();
    assert_eq!(answer.position, backup.position);
    assert_eq!(answer.digest, backup.digest);
    let restored_events = read_all(&mut client, None).await;
    assert_eq!(restored_events.len(), up_to_backup.len());
    for (restored, original) in restored_events.iter().zip(up_to_backup) {
        assert_eq!(
            (restored.position, &restored.id, &restored.hash),
            (original.position, &original.id, &original.hash)
        );
    }
}

/// A backup with one byte changed in a segment, a missing segment, or a file the manifest
/// does not name is refused, naming the file, and leaves no data directory behind; a restore
/// into a directory that holds something is refused before anything is read. Catches a
/// restore that trusts its input or leaves a half-written store that looks usable.
/// A backup of a log that is already damaged is refused with DATA_LOSS before its manifest,
/// naming the break, and the client writes nothing: a backup that completes must restore.
/// Catches a backup that copies the damaged bytes and reports success, which only the restore
/// would find.
#[tokio::test]
async fn a_backup_of_a_damaged_log_is_refused_before_its_first_file() {
    let dir = scratch();
    let data = dir.path().join("data");
    let node = Node::start(&data, &[]);
    let mut client = node.client().await;
    for entity_idx in 0..20 {
        let entity = format!("order-{entity_idx:02}");
        append(&mut client, vec![event("acme", &entity, "Placed")]).await;
    }
    // One byte of the eleventh event's entity flipped in place, as a failing disk would.
    let segment = segment_of(&data);
    let bytes = std::fs::read(&segment).expect("read the live segment");
    let at = bytes
        .windows(8)
        .position(|window| window == b"order-10")
        .expect("the eleventh event is in the segment");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open the live segment");
        file.write_all_at(&[bytes[at] ^ 0x01], at as u64)
            .expect("flip a byte");
    }

    let mut operations = operations_client(node.addr).await;
    let status = match operations.backup(pb::BackupRequest {}).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.message().await {
                Err(status) => status,
                Ok(first) => panic!("a damaged log must not be backed up, got {first:?}"),
            }
        }
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(
        status.message().contains("broken at position 11"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("00000000000000000001.seg"),
        "{}",
        status.message()
    );

    let client = causeway_client::Client::connect(&node.addr.to_string())
        .await
        .expect("connect");
    let to = dir.path().join("backup");
    causeway_client::backup::backup(&client, &to)
        .await
        .expect_err("the client's backup fails too");
    assert!(!to.exists(), "nothing written for a refused backup");
}

#[tokio::test]
async fn a_damaged_backup_is_refused_naming_the_file() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    for entity_idx in 0..20 {
        let entity = format!("order-{entity_idx}");
        append(&mut client, vec![event("acme", &entity, "Placed")]).await;
    }
    let backup_dir = dir.path().join("backup");
    take_backup(node.addr, &backup_dir).await;
    let segment_name = "events/00000000000000000001.seg";

    let altered = dir.path().join("altered");
    copy_dir(&backup_dir, &altered);
    let mut bytes = std::fs::read(segment_of(&altered)).expect("read the segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(segment_of(&altered), &bytes).expect("write the segment");

    let missing = dir.path().join("missing");
    copy_dir(&backup_dir, &missing);
    std::fs::remove_file(segment_of(&missing)).expect("remove the segment");

    let extra = dir.path().join("extra");
    copy_dir(&backup_dir, &extra);
    std::fs::write(extra.join("events/00000000000000000099.seg"), b"x").expect("an extra file");

    // Files whose reading would never end, or whose length is wrong, are refused before a
    // byte is copied: a symlink to a device, a FIFO, a segment grown far past its length.
    let endless = dir.path().join("endless");
    copy_dir(&backup_dir, &endless);
    std::fs::remove_file(segment_of(&endless)).expect("remove the segment");
    std::os::unix::fs::symlink("/dev/zero", segment_of(&endless)).expect("a symlink");
    let fifo = dir.path().join("fifo");
    copy_dir(&backup_dir, &fifo);
    std::fs::remove_file(segment_of(&fifo)).expect("remove the segment");
    let made = Command::new("mkfifo")
        .arg(segment_of(&fifo))
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let grown = dir.path().join("grown");
    copy_dir(&backup_dir, &grown);
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment_of(&grown))
        .and_then(|file| file.set_len(50 * 1024 * 1024 * 1024))
        .expect("grow the segment (sparse)");
    let repeated = dir.path().join("repeated");
    copy_dir(&backup_dir, &repeated);
    let mut backup_file = std::fs::read_to_string(repeated.join("BACKUP")).expect("BACKUP");
    backup_file.push_str("position=1\n");
    std::fs::write(repeated.join("BACKUP"), backup_file).expect("write BACKUP");

    for (backup, file, why) in [
        (&endless, segment_name, "is not a regular file"),
        (&fifo, segment_name, "is not a regular file"),
        (&grown, segment_name, "the manifest says"),
        (&repeated, "BACKUP", "names position twice"),
        (&altered, segment_name, "damaged"),
        (&missing, segment_name, "missing"),
        (
            &extra,
            "events/00000000000000000099.seg",
            "not named by the manifest",
        ),
    ] {
        let target = dir.path().join(format!(
            "restored-{}",
            backup.file_name().expect("a name").to_string_lossy()
        ));
        let refused = restore(backup, &target);
        assert!(!refused.success, "{} was restored", backup.display());
        assert!(
            refused.stderr.contains(file) && refused.stderr.contains(why),
            "{}: {}",
            backup.display(),
            refused.stderr
        );
        assert!(
            !target.exists(),
            "a refused restore leaves no data directory"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary copy is left behind");
    }

    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).expect("create a directory");
    std::fs::write(occupied.join("STORE"), b"someone's").expect("a file");
    let refused = restore(&backup_dir, &occupied);
    assert!(!refused.success);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    assert_eq!(
        std::fs::read(occupied.join("STORE")).expect("untouched"),
        b"someone's"
    );

    // A file name that would be a terminal's control sequence is printed escaped.
    let escaped = dir.path().join("escaped");
    copy_dir(&backup_dir, &escaped);
    std::fs::write(
        escaped.join("events/\u{1b}]0;pwned\u{7}\u{1b}[2J.seg"),
        b"x",
    )
    .expect("a file with control characters in its name");
    let refused = restore(&escaped, &dir.path().join("restored-escaped"));
    assert!(!refused.success);
    assert!(!refused.stderr.contains('\u{1b}'), "{:?}", refused.stderr);
    assert!(
        refused.stderr.contains("\\u{1b}]0;pwned"),
        "{:?}",
        refused.stderr
    );

    // Targets a restore cannot fill are refused by name, and nothing is written: a symbolic
    // link (the copy would replace the link), a path whose parent is missing, a directory
    // inside the backup itself (the copy would become a file its manifest does not name).
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("an empty directory");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).expect("a symlink");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("a symlink");
    let inside = backup_dir.join("events/inner");
    for (target, why) in [
        (link.clone(), "symbolic link"),
        (dangling, "symbolic link"),
        (dir.path().join("no/such/parent"), "parent"),
        (inside.clone(), "inside the backup"),
        (empty.join("."), "does not end in a directory name"),
    ] {
        let refused = restore(&backup_dir, &target);
        assert!(!refused.success, "{} was restored into", target.display());
        assert!(
            refused.stderr.contains(why),
            "{}: {}",
            target.display(),
            refused.stderr
        );
    }
    assert!(!inside.exists(), "nothing written inside the backup");
    assert_eq!(std::fs::read_dir(&empty).expect("list").count(), 0);

    // The intact backup still restores.
    let restored = restore(&backup_dir, &dir.path().join("restored"));
    assert!(restored.success, "{}", restored.stderr);
}

/// Backups beyond `BACKUPS_MAX` (2) are refused with RESOURCE_EXHAUSTED while two are held
/// open; once the clients go away, their temporary checkpoints are removed and a backup runs
/// again. A checkpoint a crashed process left behind is removed at start-up. Catches an
/// unbounded number of checkpoints on the node's disk, and checkpoints that outlive their
/// backup.
#[tokio::test]
async fn backups_are_bounded_and_their_checkpoints_removed() {
    let dir = scratch();
    let data = dir.path().join("data");
    let leftover = data.join("backup-77.tmp");
    std::fs::create_dir_all(leftover.join("events")).expect("a leftover checkpoint");
    let node = Node::start(&data, &[]);
    // Requests are served once start-up is over, the removal included.
    let mut client = node.client().await;
    assert_eq!(head(&mut client).await, 0);
    assert!(
        !leftover.exists(),
        "a leftover checkpoint is removed at start-up"
    );

    // More than the chunks and HTTP/2 window a stream buffers, so an unread backup stays open.
    let payload = vec![b'x'; 1024 * 1024];
    for entity_idx in 0..24 {
        let mut big = event("acme", &format!("blob-{entity_idx}"), "Blob");
        big.payload = payload.clone();
        big.content_type = String::new();
        append(&mut client, vec![big]).await;
    }
    let mut operations = operations_client(node.addr).await;
    let first = operations
        .backup(pb::BackupRequest {})
        .await
        .expect("the first backup starts");
    let second = operations
        .backup(pb::BackupRequest {})
        .await
        .expect("the second backup starts");
    let third = operations.backup(pb::BackupRequest {}).await;
    let status = third.expect_err("a third backup is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("BACKUPS_MAX"),
        "{}",
        status.message()
    );
    let checkpoints = |data: &Path| {
        std::fs::read_dir(data)
            .expect("list the data directory")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("backup-"))
            .count()
    };
    assert_eq!(checkpoints(&data), 2, "one checkpoint per running backup");

    drop(first);
    drop(second);
    drop(operations);
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoints(&data) > 0 {
        assert!(
            Instant::now() < deadline,
            "the checkpoints of abandoned backups are still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backup = take_backup(node.addr, &dir.path().join("backup")).await;
    assert_eq!(backup.position, 24);

    // Clients that give up at once, before the checkpoint is taken or checked: each backup's
    // work stops at its next step and removes what it made.
    let mut operations = operations_client(node.addr).await;
    for _ in 0..20 {
        let mut request = tonic::Request::new(pb::BackupRequest {});
        request.set_timeout(Duration::from_millis(1));
        let _ = operations.backup(request).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoints(&data) > 0 {
        assert!(
            Instant::now() < deadline,
            "the checkpoints of backups given up at once are still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
