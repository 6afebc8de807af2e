//! A TCP proxy for partition tests: it sits between nodes (or a client and a node) on a
//! loopback address and drops, delays or cuts the bytes between them, with no root and no
//! firewall.
//!
//! A [`Proxy`] listens on its own port and opens one connection to the target for every
//! connection it accepts. It runs on its own thread with its own single-threaded tokio runtime,
//! so plain `#[test]` functions can use it and it outlives any runtime a test starts or stops.
//! The contract:
//! - each direction has a [`Mode`]: `Pass` forwards bytes in order; `Drop` reads and discards
//!   them, leaving the connection open, as a black-holed link does; `Delay(d)` holds each chunk
//!   until `d` after it was read, in order;
//! - a mode change reaches every open connection at once, chunks already held included: a
//!   delayed chunk leaves at its read time plus the current delay, and is discarded if its
//!   direction is set to `Drop` before it leaves;
//! - while both directions are `Drop`, a new connection is accepted and held without reaching
//!   the target, as a SYN into a black hole would be; it goes on to the target once either
//!   direction stops dropping, with the bytes the client sent in the meantime;
//! - end of stream is passed on in every mode, so a closed peer is not hidden by a partition;
//!   a reset on either side resets both;
//! - [`Proxy::set_from`] gives the connections from one source IP modes of their own, which
//!   override [`Proxy::set`]'s for them: one proxy in front of a node can then cut that node
//!   off from some peers (each dialling from its own loopback IP) and not from others;
//! - [`Proxy::cut`] resets every open connection (new ones are served as usual), and dropping
//!   the proxy resets them all and closes its port before `drop` returns.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The most bytes read from a socket at once; one read becomes one chunk.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// The most chunks one direction of one connection holds (delayed or waiting for the peer to
/// read) before the proxy stops reading from the sender, which then feels TCP backpressure.
pub const CHUNKS_QUEUED_MAX: usize = 256;
/// How long [`Proxy::cut`] waits for the cut connections to close before it panics.
pub const CUT_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long the proxy waits after a failed accept (out of file descriptors, say) before the next.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// Which way bytes travel through a [`Proxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target.
    Forward,
    /// From the target back to the connecting side.
    Backward,
    /// Both ways at once.
    Both,
}

/// What a [`Proxy`] does with the bytes of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward them as they come.
    Pass,
    /// Read and discard them; the connection stays open and the sender's writes succeed.
    Drop,
    /// Forward each chunk this long after it was read, keeping their order.
    Delay(Duration),
}

/// The modes of both directions of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Modes {
    forward: Mode,
    backward: Mode,
}

impl Modes {
    /// Both directions pass.
    const PASS: Modes = Modes {
        forward: Mode::Pass,
        backward: Mode::Pass,
    };

    fn set(&mut self, direction: Direction, mode: Mode) {
        match direction {
            Direction::Forward => self.forward = mode,
            Direction::Backward => self.backward = mode,
            Direction::Both => {
                self.forward = mode;
                self.backward = mode;
            }
        }
    }
}

/// The proxy's settings, shared with every connection through a `watch` channel.
#[derive(Clone, Debug)]
struct Control {
    /// The modes of connections from a source without modes of its own.
    modes: Modes,
    /// The modes of connections from these source IPs.
    from: BTreeMap<IpAddr, Modes>,
    /// Bumped by every cut; a connection ends when it differs from the one it was accepted in.
    generation: u64,
    /// Set when the proxy is dropped: everything ends.
    stopping: bool,
}

impl Control {
    /// The modes of a connection from `source`.
    fn modes(&self, source: IpAddr) -> Modes {
        self.from.get(&source).copied().unwrap_or(self.modes)
    }

    fn isolated(&self, source: IpAddr) -> bool {
        let modes = self.modes(source);
        modes.forward == Mode::Drop && modes.backward == Mode::Drop
    }

    fn ends(&self, generation: u64) -> bool {
        self.stopping || self.generation != generation
    }
}

/// One direction of one connection, to pick its mode out of a [`Control`].
#[derive(Clone, Copy, Debug)]
enum Way {
    Forward,
    Backward,
}

impl Way {
    fn mode(self, control: &Control, source: IpAddr) -> Mode {
        let modes = control.modes(source);
        match self {
            Way::Forward => modes.forward,
            Way::Backward => modes.backward,
        }
    }
}

/// A TCP proxy on a loopback address whose links can be dropped, delayed and cut; see the
/// module docs.
///
/// - Every connection it accepts has at most one connection to the target.
/// - After [`Proxy::cut`] returns, no connection accepted before the call is open.
/// - After it is dropped, none of its connections is open and its port refuses connections.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: watch::Sender<Control>,
    registry: Arc<Registry>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `target` on an ephemeral port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), target)
            .expect("an ephemeral port on 127.0.0.1 can be bound")
    }

    /// Starts a proxy to `target` listening on `listen`, for a test that needs a fixed
    /// address (a peer address written into a node's configuration, say). Fails when the
    /// address cannot be bound.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> io::Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        let (control, control_rx) = watch::channel(Control {
            modes: Modes::PASS,
            from: BTreeMap::new(),
            generation: 0,
            stopping: false,
        });
        let registry = Arc::new(Registry::default());
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn({
                let registry = Arc::clone(&registry);
                move || runtime.block_on(accept_loop(listener, target, control_rx, registry))
            })?;
        Ok(Proxy {
            addr,
            target,
            control,
            registry,
            thread: Some(thread),
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets the mode of one direction or both, on open connections and new ones alike (those
    /// from a source given modes of its own by [`Proxy::set_from`] excepted).
    pub fn set(&self, direction: Direction, mode: Mode) {
        self.control
            .send_modify(|control| control.modes.set(direction, mode));
    }

    /// Sets the mode of one direction or both for the connections whose client is at `source`
    /// (open ones and new ones alike). The source keeps these modes, whatever [`Proxy::set`]
    /// does, until [`Proxy::heal`]; the directions not named start from the proxy's own.
    pub fn set_from(&self, source: IpAddr, direction: Direction, mode: Mode) {
        self.control.send_modify(|control| {
            let own = control.modes;
            control
                .from
                .entry(source)
                .or_insert(own)
                .set(direction, mode);
        });
    }

    /// Makes every direction of every connection pass again, from whatever source.
    pub fn heal(&self) {
        self.control.send_modify(|control| {
            control.modes = Modes::PASS;
            control.from.clear();
        });
    }

    /// Resets every open connection, both towards the client and towards the target, and
    /// returns once they are closed. Connections accepted afterwards are served as usual,
    /// so a client that reconnects gets through (unless both directions drop). A connection
    /// still in the kernel's accept queue when this is called is not one the proxy has yet,
    /// and is not cut.
    pub fn cut(&self) {
        let mut generation = 0;
        self.control.send_modify(|control| {
            control.generation += 1;
            generation = control.generation;
        });
        self.registry.wait_closed_before(generation);
    }

    /// How many client connections the proxy holds open now (held ones included).
    pub fn connections(&self) -> usize {
        self.registry.open()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.control.send_modify(|control| control.stopping = true);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the proxy on {} panicked", self.addr);
        }
    }
}

/// The open connections by the generation they were accepted in, so that a cut can wait for
/// the ones it ended.
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, usize>>,
    closed: Condvar,
}

impl Registry {
    /// Counts a connection as open until the returned guard is dropped.
    fn register(self: &Arc<Self>, generation: u64) -> Registration {
        *self.lock().entry(generation).or_default() += 1;
        Registration {
            registry: Arc::clone(self),
            generation,
        }
    }

    fn open(&self) -> usize {
        self.lock().values().sum()
    }

    fn wait_closed_before(&self, generation: u64) {
        let (open, timeout) = self
            .closed
            .wait_timeout_while(self.lock(), CUT_WAIT_MAX, |open| {
                open.range(..generation).next().is_some()
            })
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            !timeout.timed_out(),
            "cut connections still open after {CUT_WAIT_MAX:?}: {open:?}"
        );
    }

    // The map only holds counts, each updated in one step, so a panic elsewhere cannot leave
    // it half-changed.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open connection, counted in its [`Registry`] while this lives.
struct Registration {
    registry: Arc<Registry>,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(n_open) = open.get_mut(&self.generation) {
            *n_open -= 1;
            if *n_open == 0 {
                open.remove(&self.generation);
            }
        }
        drop(open);
        self.registry.closed.notify_all();
    }
}

/// Accepts connections until the proxy stops, then waits for every connection to close.
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    control: watch::Receiver<Control>,
    registry: Arc<Registry>,
) {
    let mut connections = JoinSet::new();
    let mut stopping = control.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, source)) => {
                    let generation = control.borrow().generation;
                    let registration = registry.register(generation);
                    let link = Link { target, source: source.ip(), generation };
                    connections.spawn(serve(client, link, control.clone(), registration));
                }
                Err(_) => tokio::time::sleep(ACCEPT_RETRY_DELAY).await,
            },
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished && error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
            _ = stopping.wait_for(|control| control.stopping) => break,
        }
    }
    drop(listener);
    while let Some(finished) = connections.join_next().await {
        if let Err(error) = finished
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// How a connection's forwarding ended.
enum End {
    /// Both sides closed their end of the stream.
    Closed,
    /// A side reset, or the proxy cut the connection or stopped.
    Reset,
}

/// What a connection's forwarding needs to know of it.
#[derive(Clone, Copy, Debug)]
struct Link {
    /// Where it is forwarded to.
    target: SocketAddr,
    /// The client's IP, which picks its modes.
    source: IpAddr,
    /// The generation it was accepted in; a cut ends it.
    generation: u64,
}

/// Serves one accepted connection: holds it while the link is isolated, connects to the
/// target, and forwards both directions until they end or the connection is cut.
async fn serve(
    mut client: TcpStream,
    link: Link,
    mut control: watch::Receiver<Control>,
    registration: Registration,
) {
    let Link {
        target,
        source,
        generation,
    } = link;
    let released = control
        .wait_for(|control| control.ends(generation) || !control.isolated(source))
        .await
        .is_ok_and(|control| !control.ends(generation));
    let upstream = if released {
        tokio::select! {
            connected = TcpStream::connect(target) => connected.ok(),
            _ = control.wait_for(|control| control.ends(generation)) => None,
        }
    } else {
        None
    };
    // A target that refuses shows the client a reset, as a refused connection would.
    let Some(mut upstream) = upstream else {
        reset(client);
        drop(registration);
        return;
    };
    // Small writes (one Raft heartbeat, one echo in a test) must not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let end = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let forward = pump(client_read, upstream_write, Way::Forward, source, &control);
        let backward = pump(upstream_read, client_write, Way::Backward, source, &control);
        let mut ended = control.clone();
        tokio::select! {
            pumped = async { tokio::try_join!(forward, backward) } => match pumped {
                Ok(_) => End::Closed,
                Err(_) => End::Reset,
            },
            _ = ended.wait_for(|control| control.ends(generation)) => End::Reset,
        }
    };
    match end {
        End::Closed => {
            drop(client);
            drop(upstream);
        }
        End::Reset => {
            reset(client);
            reset(upstream);
        }
    }
    drop(registration);
}

/// Closes a socket with a reset rather than an orderly close, discarding unsent bytes.
fn reset(stream: TcpStream) {
    // Failing to set the option only turns the reset into an orderly close.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A run of bytes read from one side, waiting to be written to the other.
struct Chunk {
    read_at: Instant,
    bytes: Vec<u8>,
}

/// Forwards one direction of a connection until its sender ends the stream (passed on as a
/// shutdown of the receiver's write side) or either side fails.
async fn pump(
    from: ReadHalf<'_>,
    to: WriteHalf<'_>,
    way: Way,
    source: IpAddr,
    control: &watch::Receiver<Control>,
) -> io::Result<()> {
    let (chunks_tx, chunks_rx) = mpsc::channel(CHUNKS_QUEUED_MAX);
    tokio::try_join!(
        read_chunks(from, chunks_tx, way, source, control.clone()),
        write_chunks(to, chunks_rx, way, source, control.clone()),
    )?;
    Ok(())
}

/// Reads chunks and queues them, discarding those read while the direction drops.
async fn read_chunks(
    from: ReadHalf<'_>,
    chunks: mpsc::Sender<Chunk>,
    way: Way,
    source: IpAddr,
    control: watch::Receiver<Control>,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK_BYTES_MAX];
    loop {
        from.readable().await?;
        let n_bytes = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n_bytes) => n_bytes,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        };
        let mode = way.mode(&control.borrow(), source);
        if mode == Mode::Drop {
            continue;
        }
        let chunk = Chunk {
            read_at: Instant::now(),
            bytes: buf[..n_bytes].to_vec(),
        };
        if chunks.send(chunk).await.is_err() {
            // The writer failed; the pump is ending with its error.
            return Ok(());
        }
    }
}

/// Writes queued chunks in order, each when the current mode lets it go.
async fn write_chunks(
    mut to: WriteHalf<'_>,
    mut chunks: mpsc::Receiver<Chunk>,
    way: Way,
    source: IpAddr,
    mut control: watch::Receiver<Control>,
) -> io::Result<()> {
    while let Some(chunk) = chunks.recv().await {
        if release(&chunk, way, source, &mut control).await {
            write_all(&to, &chunk.bytes).await?;
        }
    }
    poll_fn(|cx| Pin::new(&mut to).poll_shutdown(cx)).await
}

/// Waits until `chunk` may leave under the direction's current mode, following changes;
/// returns false when it is to be discarded instead.
async fn release(
    chunk: &Chunk,
    way: Way,
    source: IpAddr,
    control: &mut watch::Receiver<Control>,
) -> bool {
    loop {
        let mode = way.mode(&control.borrow_and_update(), source);
        let due = match mode {
            Mode::Pass => return true,
            Mode::Drop => return false,
            Mode::Delay(delay) => chunk.read_at.checked_add(delay),
        };
        let changed = match due {
            Some(due) => tokio::select! {
                () = tokio::time::sleep_until(due) => return true,
                changed = control.changed() => changed,
            },
            // A delay past the end of time: only a mode change releases the chunk.
            None => control.changed().await,
        };
        if changed.is_err() {
            return false;
        }
    }
}

async fn write_all(to: &WriteHalf<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n_bytes) => bytes = &bytes[n_bytes..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each test drives a proxy with blocking std sockets, as a plain `#[test]` would, between a
    //! client and the target's side of the same connection, so both ends can write and read.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    use super::*;

    /// How long something that should arrive may take on a loaded machine.
    const ARRIVES_WAIT: Duration = Duration::from_secs(10);
    /// How long nothing must arrive for a test to believe nothing will.
    const SILENCE: Duration = Duration::from_millis(300);
    /// The delay the delay tests set.
    const DELAY: Duration = Duration::from_millis(200);

    /// The proxy's target: hands over the connections the proxy opens.
    struct Target {
        listener: TcpListener,
    }

    impl Target {
        fn new() -> Target {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the target");
            listener.set_nonblocking(true).expect("nonblocking target");
            Target { listener }
        }

        fn addr(&self) -> SocketAddr {
            self.listener.local_addr().expect("the target's address")
        }

        fn accept_within(&self, wait: Duration) -> Option<TcpStream> {
            let deadline = Instant::now() + wait;
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking stream");
                        return Some(stream);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(error) => panic!("accept failed: {error}"),
                }
            }
        }

        fn accept(&self) -> TcpStream {
            self.accept_within(ARRIVES_WAIT)
                .expect("the proxy connects to the target")
        }
    }

    /// A connection through the proxy: the client's end and the target's end.
    fn connect(proxy: &Proxy, target: &Target) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        let server = target.accept();
        (client, server)
    }

    fn send(stream: &mut TcpStream, bytes: &[u8]) {
        stream.write_all(bytes).expect("write");
    }

    fn receive(stream: &mut TcpStream, n_bytes: usize) -> Vec<u8> {
        stream
            .set_read_timeout(Some(ARRIVES_WAIT))
            .expect("read timeout");
        let mut bytes = vec![0; n_bytes];
        stream.read_exact(&mut bytes).expect("the bytes arrive");
        bytes
    }

    fn assert_silent(stream: &mut TcpStream) {
        stream
            .set_read_timeout(Some(SILENCE))
            .expect("read timeout");
        let mut byte = [0; 1];
        match stream.read(&mut byte) {
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected nothing within {SILENCE:?}, got {other:?} ({byte:?})"),
        }
    }

    fn assert_closed(stream: &mut TcpStream) {
        stream
            .set_read_timeout(Some(ARRIVES_WAIT))
            .expect("read timeout");
        let mut byte = [0; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the connection closed, got {other:?} ({byte:?})"),
        }
    }

    #[test]
    fn pass_forwards_both_ways() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        assert_eq!(proxy.target(), target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        send(&mut client, b"ping");
        assert_eq!(receive(&mut server, 4), b"ping");
        send(&mut server, b"pong");
        assert_eq!(receive(&mut client, 4), b"pong");
        assert_eq!(proxy.connections(), 1);
    }

    #[test]
    fn end_of_stream_is_passed_on_and_the_other_way_stays_open() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        assert_closed(&mut server);
        send(&mut server, b"after");
        assert_eq!(receive(&mut client, 5), b"after");
    }

    #[test]
    fn dropping_forward_is_one_way_and_pass_resumes() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        proxy.set(Direction::Forward, Mode::Drop);
        send(&mut client, b"lost");
        assert_silent(&mut server);
        send(&mut server, b"back");
        assert_eq!(receive(&mut client, 4), b"back");

        proxy.set(Direction::Forward, Mode::Pass);
        send(&mut client, b"found");
        assert_eq!(receive(&mut server, 5), b"found", "dropped bytes stay lost");
    }

    #[test]
    fn dropping_backward_is_one_way_and_pass_resumes() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        proxy.set(Direction::Backward, Mode::Drop);
        send(&mut server, b"lost");
        assert_silent(&mut client);
        send(&mut client, b"there");
        assert_eq!(receive(&mut server, 5), b"there");

        proxy.set(Direction::Backward, Mode::Pass);
        send(&mut server, b"found");
        assert_eq!(receive(&mut client, 5), b"found", "dropped bytes stay lost");
    }

    #[test]
    fn delay_adds_at_least_the_delay_and_keeps_order() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        proxy.set(Direction::Both, Mode::Delay(DELAY));

        let sent_at = Instant::now();
        for chunk in [b"one.", b"two.", b"six."] {
            send(&mut client, chunk);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(receive(&mut server, 12), b"one.two.six.");
        assert!(
            sent_at.elapsed() >= DELAY,
            "forward took {:?}",
            sent_at.elapsed()
        );

        let sent_at = Instant::now();
        send(&mut server, b"reply");
        assert_eq!(receive(&mut client, 5), b"reply");
        assert!(
            sent_at.elapsed() >= DELAY,
            "backward took {:?}",
            sent_at.elapsed()
        );
    }

    #[test]
    fn a_mode_change_reaches_bytes_already_delayed() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        // Far longer than the read below waits: only the change to Pass can release the bytes.
        proxy.set(Direction::Forward, Mode::Delay(Duration::from_secs(600)));
        send(&mut client, b"held");
        assert_silent(&mut server);
        proxy.set(Direction::Forward, Mode::Pass);
        send(&mut client, b"next");
        assert_eq!(receive(&mut server, 8), b"heldnext");
    }

    #[test]
    fn dropping_both_ways_holds_new_connections_until_healed() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        proxy.set(Direction::Both, Mode::Drop);
        let mut client = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        send(&mut client, b"early");
        assert!(
            target.accept_within(SILENCE).is_none(),
            "an isolated proxy reached the target"
        );

        proxy.set(Direction::Both, Mode::Pass);
        let mut server = target.accept();
        assert_eq!(receive(&mut server, 5), b"early");
        send(&mut server, b"hello");
        assert_eq!(receive(&mut client, 5), b"hello");
    }

    #[test]
    fn cut_closes_open_connections_and_new_ones_get_through() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let (mut client, mut server) = connect(&proxy, &target);
        send(&mut client, b"before");
        assert_eq!(receive(&mut server, 6), b"before");

        proxy.cut();
        assert_eq!(proxy.connections(), 0);
        assert_closed(&mut client);
        assert_closed(&mut server);

        let (mut client, mut server) = connect(&proxy, &target);
        send(&mut client, b"after");
        assert_eq!(receive(&mut server, 5), b"after");
    }

    #[test]
    fn cut_ends_held_connections() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        proxy.set(Direction::Both, Mode::Drop);
        let mut client = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        let deadline = Instant::now() + ARRIVES_WAIT;
        while proxy.connections() == 0 {
            assert!(Instant::now() < deadline, "the proxy never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.cut();
        assert_closed(&mut client);
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections_and_its_port() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let addr = proxy.addr();
        let (mut client, mut server) = connect(&proxy, &target);
        send(&mut client, b"x");
        assert_eq!(receive(&mut server, 1), b"x");

        drop(proxy);
        assert_closed(&mut client);
        assert_closed(&mut server);
        assert!(
            TcpStream::connect(addr).is_err(),
            "a dropped proxy still accepts"
        );
    }

    #[test]
    fn a_refusing_target_resets_the_client() {
        let target = Target::new();
        let target_addr = target.addr();
        drop(target);
        let proxy = Proxy::start(target_addr);
        let mut client = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        assert_closed(&mut client);
    }

    /// Connects to `proxy` from `source`, as a node listening on that loopback IP dials.
    async fn connect_from(source: Ipv4Addr, proxy: &Proxy) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind the source IP");
        let stream = socket
            .connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        let stream = stream.into_std().expect("a std stream");
        stream.set_nonblocking(false).expect("blocking stream");
        stream
    }

    #[tokio::test]
    async fn set_from_drops_one_source_only_and_heal_restores_it() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let cut_off = Ipv4Addr::new(127, 0, 0, 2);
        let mut client_cut = connect_from(cut_off, &proxy).await;
        let mut server_cut = target.accept();
        let mut client_kept = connect_from(Ipv4Addr::new(127, 0, 0, 3), &proxy).await;
        let mut server_kept = target.accept();

        proxy.set_from(IpAddr::V4(cut_off), Direction::Both, Mode::Drop);
        send(&mut client_cut, b"lost");
        assert_silent(&mut server_cut);
        send(&mut server_cut, b"lost");
        assert_silent(&mut client_cut);
        send(&mut client_kept, b"kept");
        assert_eq!(receive(&mut server_kept, 4), b"kept");
        // The proxy-wide mode does not override a source's own.
        proxy.set(Direction::Both, Mode::Pass);
        let mut client_held = connect_from(cut_off, &proxy).await;
        send(&mut client_held, b"held");
        assert!(
            target.accept_within(SILENCE).is_none(),
            "a connection from an isolated source reached the target"
        );

        proxy.heal();
        let mut server_held = target.accept();
        assert_eq!(receive(&mut server_held, 4), b"held");
        send(&mut client_cut, b"again");
        assert_eq!(receive(&mut server_cut, 5), b"again");
    }

    #[test]
    fn start_on_a_taken_address_fails() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        assert!(Proxy::start_on(proxy.addr(), target.addr()).is_err());
    }

    #[tokio::test]
    async fn works_from_inside_a_tokio_test() {
        let target = Target::new();
        let proxy = Proxy::start(target.addr());
        let client = tokio::net::TcpStream::connect(proxy.addr())
            .await
            .expect("connect to the proxy");
        let mut server = tokio::task::spawn_blocking(move || target.accept())
            .await
            .expect("accept");
        client.writable().await.expect("writable");
        assert_eq!(client.try_write(b"async").expect("write"), 5);
        let received = tokio::task::spawn_blocking(move || receive(&mut server, 5))
            .await
            .expect("receive");
        assert_eq!(received, b"async");
        // Stopping the proxy's runtime from inside this one must not panic.
        drop(proxy);
    }
}
