//! The `causeway` CLI against a real `causewayd` serving TLS with client certificates
//! required: a CLI that leaves out its client certificate, presents an expired one, or talks
//! plaintext to the TLS port gets one line that says what is likely wrong, and the exit status
//! of a server it cannot reach (4), not a bare `CANCELLED` or an `INTERNAL` error of the
//! server's.
//!
//! Certificates are made here with `rcgen`, as in the server's `tests/it/tls.rs`: one CA signs
//! the server's certificate (for 127.0.0.1) and the clients'.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};

use common::{Run, causewayd, finish, line_channel};

/// How long the server may take to print its address, or a CLI command to finish.
const DEADLINE: Duration = Duration::from_secs(60);
/// The CLI's exit status for a server it cannot reach (`cli/src/exit.rs`).
const EXIT_UNAVAILABLE: i32 = 4;

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

/// Writes a CA to `dir/ca.crt` and returns it with that path.
fn ca(dir: &Path) -> (CertifiedIssuer<'static, KeyPair>, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "causeway test CA");
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
        .expect("a CA certificate");
    let path = dir.join("ca.crt");
    std::fs::write(&path, issuer.pem()).expect("write the CA");
    (issuer, path)
}

/// A certificate for `names` signed by `ca`, written to `dir/{stem}.crt` and `.key`; `expired`
/// makes one whose validity ended in 2001.
fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    dir: &Path,
    stem: &str,
    names: &[&str],
    expired: bool,
) -> Issued {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, stem);
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().expect("a leaf key");
    let cert = params.signed_by(&key, ca).expect("sign the leaf");
    let issued = Issued {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
    std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
    issued
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A `causewayd` serving TLS that requires client certificates, killed on drop.
struct Server {
    child: Child,
    /// HOST:PORT.
    address: String,
}

impl Server {
    fn start(dir: &Path, server: &Issued, client_ca: &Path) -> Server {
        let log = std::fs::File::create(dir.join("server.log")).expect("create a log");
        let mut child = Command::new(causewayd())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .args([
                "--tls-cert",
                path(&server.cert),
                "--tls-key",
                path(&server.key),
            ])
            .args(["--tls-client-ca", path(client_ca)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start causewayd");
        let lines = line_channel(child.stdout.take().expect("stdout is piped"));
        let first = match lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(err) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("causewayd printed no address ({err}); its log:\n{log}");
            }
        };
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from causewayd: {first:?}"))
            .trim()
            .to_string();
        Server { child, address }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `causeway` with `args` to completion.
fn run_cli(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the causeway binary");
    finish(child, args, DEADLINE)
}

/// Asserts `run` failed with exit status 4 and one `error:` line that contains every one of
/// `needles`, and returns that line.
fn assert_unreachable<'a>(run: &'a Run, needles: &[&str]) -> &'a str {
    let line = run.stderr.trim_end();
    assert_eq!(
        run.code,
        Some(EXIT_UNAVAILABLE),
        "`causeway {}`: {line}",
        run.args
    );
    assert!(line.starts_with("error: "), "stderr: {line:?}");
    assert_eq!(line.lines().count(), 1, "one line, got {line:?}");
    for needle in needles {
        assert!(line.contains(needle), "{needle:?} is not in {line:?}");
    }
    for raw in ["CANCELLED", "INTERNAL"] {
        assert!(!line.contains(raw), "{raw} in {line:?}");
    }
    line
}

/// With client certificates required, `causeway head` without one, or with an expired one,
/// says the server closed the connection during the TLS handshake and names the flags for a
/// client certificate; plaintext to the TLS port says the server does not speak plaintext
/// gRPC and names `https://` and `--tls-ca`; an untrusted server certificate, or one for
/// another name, says the TLS error once. All of them exit 4. The right certificate works.
/// Catches a TLS 1.3 refusal (which arrives after the client's handshake is done) reported as
/// `CANCELLED`, and a plaintext client's garbled answer reported as the server's INTERNAL
/// error, and a TLS error repeated by every layer that wraps it.
#[test]
fn tls_failures_are_reported_as_connection_problems_that_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let (issuer, ca_file) = ca(dir.path());
    let server_cert = issue(&issuer, dir.path(), "server", &["127.0.0.1"], false);
    let client = issue(&issuer, dir.path(), "client", &["app.example"], false);
    let expired = issue(&issuer, dir.path(), "expired", &["app.example"], true);
    let server = Server::start(dir.path(), &server_cert, &ca_file);
    let https = format!("https://{}", server.address);
    let http = format!("http://{}", server.address);

    let ok = run_cli(&[
        "--server",
        &https,
        "--tls-ca",
        path(&ca_file),
        "--tls-cert",
        path(&client.cert),
        "--tls-key",
        path(&client.key),
        "head",
    ]);
    assert!(
        ok.success,
        "with the right certificate: {}{}",
        ok.stdout, ok.stderr
    );

    let none = run_cli(&["--server", &https, "--tls-ca", path(&ca_file), "head"]);
    let line = assert_unreachable(
        &none,
        &[
            "TLS handshake",
            "client certificate",
            "--tls-cert",
            &server.address,
        ],
    );
    assert!(line.contains("--tls-key"), "{line}");

    let stale = run_cli(&[
        "--server",
        &https,
        "--tls-ca",
        path(&ca_file),
        "--tls-cert",
        path(&expired.cert),
        "--tls-key",
        path(&expired.key),
        "head",
    ]);
    assert_unreachable(&stale, &["TLS handshake", "client certificate"]);

    // A server certificate the client does not trust, or one for another name: the TLS
    // error's text once, not once per layer that wraps it.
    let untrusted = run_cli(&["--server", &https, "head"]);
    let line = assert_unreachable(&untrusted, &["UnknownIssuer", &server.address, "--tls-ca"]);
    assert_eq!(line.matches("UnknownIssuer").count(), 1, "{line}");
    let port = server.address.rsplit(':').next().expect("host:port");
    let localhost = format!("https://localhost:{port}");
    let wrong_name = run_cli(&["--server", &localhost, "--tls-ca", path(&ca_file), "head"]);
    let line = assert_unreachable(&wrong_name, &["not valid for name \"localhost\""]);
    assert_eq!(line.matches("not valid for name").count(), 1, "{line}");

    let plaintext = run_cli(&["--server", &http, "head"]);
    assert_unreachable(
        &plaintext,
        &["does not speak plaintext gRPC", "https://", "--tls-ca"],
    );

    // A write to the TLS port in plaintext never reaches the server, so its outcome is known:
    // the same hint, at once, not "the outcome of the write is unknown" after a wait.
    let started = std::time::Instant::now();
    let write = run_cli(&[
        "--server", &http, "append", "acme", "order-1", "Placed", "--data", "{}",
    ]);
    let line = assert_unreachable(
        &write,
        &["does not speak plaintext gRPC", "https://", "--tls-ca"],
    );
    assert!(!line.contains("unknown"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once ({:?})",
        started.elapsed()
    );
}

/// A port whose server closes each connection as soon as the client's first bytes are in,
/// unread, as a TLS port does to a plaintext client: the client's next bytes then draw a
/// reset that discards any alert, so the client sees only a broken connection. It still gets
/// exit status 4 and the hint to use TLS, not `UNKNOWN: transport error` and status 5.
/// Catches the race that made the plaintext case above fail now and then.
#[test]
fn a_port_that_breaks_every_connection_unread_is_reported_as_not_plaintext_grpc() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::sleep(Duration::from_millis(20));
            drop(stream);
        }
    });
    let run = run_cli(&["--server", &format!("http://{address}"), "head"]);
    assert_unreachable(
        &run,
        &["does not speak plaintext gRPC", "https://", "--tls-ca"],
    );

    // `health` says the same, within the time a probe gives it.
    let started = std::time::Instant::now();
    let health = run_cli(&["--server", &format!("http://{address}"), "health"]);
    assert_unreachable(&health, &["does not speak plaintext gRPC", "https://"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}
