//! The test harness: real `causewayd` processes on 127.0.0.1, and the small helpers every
//! scenario shares.
//!
//! [`Node::start`] spawns the built binary with `--listen 127.0.0.1:0`, reads the first line of
//! its stdout (`listening on ADDR`) to learn the port, and sends its log to a file in the
//! node's scratch directory (shown when a start fails). Dropping a node kills it; [`Node::terminate`]
//! sends SIGTERM and waits for a graceful exit, as an operator's `systemctl stop` would.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use causeway_client::pb;
use pb::event_store_service_client::EventStoreServiceClient;
use tonic::transport::Channel;

/// The raw generated client the tests drive the server with.
pub type Client = EventStoreServiceClient<Channel>;

/// How long a node may take to exit after SIGTERM before a test fails.
pub const EXIT_WAIT: Duration = Duration::from_secs(20);
/// Messages up to this size are accepted by test clients (reads of large events, big appends).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A scratch directory for one test: data directories and logs live under it.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("causewayd-it-")
        .tempdir()
        .expect("a temporary directory")
}

/// A running `causewayd`.
pub struct Node {
    child: Child,
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The address of its admin HTTP port, unless started with `--admin-listen off`.
    pub admin: Option<SocketAddr>,
    log: PathBuf,
}

impl Node {
    /// Starts a node on `data_dir` with extra flags.
    pub fn start(data_dir: &Path, args: &[&str]) -> Node {
        Node::start_with_env(data_dir, args, &[])
    }

    /// Starts a node with extra flags and environment variables. `data_dir` is passed as a
    /// flag unless the environment names one.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        Node::start_through(&[], data_dir, args, env)
    }

    /// Starts a node through `wrapper`, a command that runs the binary and the arguments it
    /// is given after it (for instance `bash -c 'trap "" XFSZ; exec "$0" "$@"'`).
    pub fn start_through(
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let log = data_dir.with_extension(format!("{}.log", unique()));
        let log_file = std::fs::File::create(&log).expect("create the node's log file");
        let binary = env!("CARGO_BIN_EXE_causewayd");
        let mut command = match wrapper.split_first() {
            None => Command::new(binary),
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
        };
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.args(["--admin-listen", "127.0.0.1:0"]);
        if !env.iter().any(|(name, _)| *name == "CAUSEWAY_DATA_DIR") {
            command.arg("--data-dir").arg(data_dir);
        }
        command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = command.spawn().expect("spawn causewayd");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read causewayd's first line");
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            panic!(
                "causewayd did not start; its first line was {line:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr = addr.parse().expect("a socket address");
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read causewayd's second line");
        let admin = line
            .trim()
            .strip_prefix("admin on ")
            .and_then(|admin| admin.parse().ok());
        Node {
            addr,
            admin,
            child,
            log,
        }
    }

    /// A client connected to this node.
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Sends SIGTERM and waits for the process to exit; fails the test after [`EXIT_WAIT`].
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_terminate();
        self.wait_exit()
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit; fails the test after [`EXIT_WAIT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "causewayd did not exit within {EXIT_WAIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the node has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A client on a fresh connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to causewayd");
    EventStoreServiceClient::new(channel)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
}

/// A proposed event with the three required names and a small payload.
pub fn event(scope: &str, entity: &str, event_type: &str) -> pb::NewEvent {
    pb::NewEvent {
        scope: scope.to_string(),
        entity: entity.to_string(),
        r#type: event_type.to_string(),
        payload: format!("{{\"entity\":\"{entity}\"}}").into_bytes(),
        content_type: "application/json".to_string(),
        ..Default::default()
    }
}

/// An append of these events with no conditions.
pub fn append_of(events: Vec<pb::NewEvent>) -> pb::AppendRequest {
    pb::AppendRequest {
        events,
        ..Default::default()
    }
}

/// Appends and returns the receipt, failing the test on an error.
pub async fn append(client: &mut Client, events: Vec<pb::NewEvent>) -> pb::Receipt {
    client
        .append(append_of(events))
        .await
        .expect("the append succeeds")
        .into_inner()
        .receipt
        .expect("an append answers with a receipt")
}

/// Reads the whole log forward with a filter, paging until the end.
pub async fn read_all(client: &mut Client, filter: Option<pb::Filter>) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut from_position = 1;
    loop {
        let page = client
            .read_log(pb::ReadLogRequest {
                consistency: 0,
                from_position,
                direction: pb::Direction::Forward as i32,
                limit: 10_000,
                filter: filter.clone(),
            })
            .await
            .expect("read the log")
            .into_inner();
        events.extend(page.events);
        if page.end {
            return events;
        }
        from_position = page.next_position;
    }
}

/// The committed head.
pub async fn head(client: &mut Client) -> u64 {
    client
        .head(pb::HeadRequest::default())
        .await
        .expect("read the head")
        .into_inner()
        .position
}

/// The error of a call that must fail.
pub fn failure<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> tonic::Status {
    match result {
        Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
        Err(status) => status,
    }
}

/// A GET of `path` on an HTTP/1.1 server: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, b"")
}

/// A POST of `body` to `path` on an HTTP/1.1 server: the status code and the body.
pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    http_request(addr, "POST", path, body)
}

fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("send the request");
    // The server may answer before it has read a body it refuses; later writes then fail.
    let _ = stream.write_all(body);
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head and a body");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the admin port answers with a length, not chunks: {head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// Registers gate `small-orders`: a CEL gate on `OrderPlaced` in scope `acme` that refuses a
/// payload whose `total` is 1000 or more.
pub async fn register_small_orders(client: &mut Client) {
    client
        .register_gate(pb::RegisterGateRequest {
            definition: Some(pb::GateDefinition {
                name: "small-orders".to_string(),
                scopes: vec!["acme".to_string()],
                types: vec!["OrderPlaced".to_string()],
                rule: Some(pb::gate_definition::Rule::Cel(pb::CelRule {
                    expression: "event.payload.total < 1000".to_string(),
                })),
            }),
        })
        .await
        .expect("register the gate");
}

/// Health of the server and of the store service, as gRPC health reports it.
pub async fn health_of(node: &Node) -> Vec<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut statuses = Vec::new();
    for service in ["", "causeway.v1.EventStoreService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        statuses.push(status);
    }
    statuses
}

/// Every method of every `causeway.v1` service, from the descriptors reflection serves.
pub fn every_rpc() -> std::collections::BTreeSet<String> {
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
        causeway_server::pb::FILE_DESCRIPTOR_SET,
    )
    .expect("the descriptor set decodes");
    set.file
        .iter()
        .filter(|file| file.package() == "causeway.v1")
        .flat_map(|file| {
            file.service.iter().flat_map(|service| {
                service
                    .method
                    .iter()
                    .map(|method| format!("/causeway.v1.{}/{}", service.name(), method.name()))
            })
        })
        .collect()
}

/// An `AppendStream` answer as the unary `Append` call's result: the receipt, or the refusal
/// as the status (with its details) the unary call would have returned.
pub fn answer_of(response: pb::AppendStreamResponse) -> Result<pb::Receipt, tonic::Status> {
    match response.answer.expect("an answer") {
        pb::append_stream_response::Answer::Receipt(receipt) => Ok(receipt),
        pb::append_stream_response::Answer::Error(status) => Err(tonic::Status::with_details(
            tonic::Code::from(status.code),
            status.message.clone(),
            prost::Message::encode_to_vec(&status).into(),
        )),
    }
}

/// Reads a gRPC response body to its end: its messages, and the status its trailers carry.
pub async fn read_grpc_body(mut body: tonic::body::Body) -> (Vec<bytes::Bytes>, tonic::Status) {
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    loop {
        let next = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        });
        match tokio::time::timeout(Duration::from_secs(20), next)
            .await
            .expect("the body ends in time")
        {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Some(Err(err)) => panic!("the body fails: {err:?}"),
            None => break,
        }
    }
    let mut messages = Vec::new();
    while !data.is_empty() {
        let len = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
        messages.push(data.split_to(5 + len).split_off(5).freeze());
    }
    let trailers = trailers.expect("trailers end the body");
    let status = tonic::Status::from_header_map(&trailers).expect("a status in the trailers");
    (messages, status)
}
