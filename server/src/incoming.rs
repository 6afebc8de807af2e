//! The connections a port takes: at most a bounded number open at once, and a failed accept
//! (out of file descriptors, most often) paused on rather than retried in a tight loop.
//!
//! Without a bound, idle connections held open by one client exhausted the process's file
//! descriptors: every port stopped answering, the store could not open a new segment, and the
//! accept loop spun on EMFILE. With it, connections past the bound wait in the kernel's
//! backlog until one closes, and the descriptors the store needs stay free. Each accepted
//! socket carries its permit ([`Bounded`]) and gives it back when it closes.
//!
//! A connection that sends nothing holds a permit too: the gRPC port's stream
//! ([`BoundedListener::into_stream`]) hands a connection on only once its first bytes (the
//! HTTP/2 preface, or a TLS ClientHello) arrived, and closes one that stays silent for
//! [`FIRST_BYTES_TIMEOUT`], so idle sockets cannot hold every permit for ever.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::{ACCEPT_ERROR_PAUSE, FIRST_BYTES_TIMEOUT};

/// An accepted connection holding one of its port's permits until it closes.
#[derive(Debug)]
pub struct Bounded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Bounded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

/// A listener that holds at most `max` connections open.
#[derive(Debug)]
pub struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max: usize,
    port: &'static str,
    last_error_log: Option<Instant>,
}

impl BoundedListener {
    /// Bounds `listener` (named `port` in logs) to `max` open connections.
    pub fn new(listener: TcpListener, max: usize, port: &'static str) -> BoundedListener {
        BoundedListener {
            listener,
            permits: Arc::new(Semaphore::new(max)),
            max,
            port,
            last_error_log: None,
        }
    }

    /// Waits for a free permit, then for a connection; a failed accept is logged (at most
    /// once a second) and retried after `ACCEPT_ERROR_PAUSE`.
    pub async fn accept_bounded(&mut self) -> (Bounded, SocketAddr) {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the semaphore is never closed"),
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Bounded {
                            stream,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(err) => {
                    let due = self
                        .last_error_log
                        .is_none_or(|last| last.elapsed() >= Duration::from_secs(1));
                    if due {
                        tracing::warn!(
                            port = self.port,
                            %err,
                            open = self.open(),
                            "accepting a connection failed; pausing"
                        );
                        self.last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The connections, as the stream tonic serves, until `stop` resolves; then the listener
    /// closes (new connections are refused) while open ones finish. Each is handed on once it
    /// has something to read, or closed after [`FIRST_BYTES_TIMEOUT`] of silence.
    pub fn into_stream(
        mut self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> ReceiverStream<io::Result<Bounded>> {
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                let accepted = tokio::select! {
                    accepted = self.accept_bounded() => accepted,
                    () = &mut stop => return,
                    () = sender.closed() => return,
                };
                let (conn, peer) = accepted;
                let sender = sender.clone();
                let port = self.port;
                tokio::spawn(async move {
                    // `peek` waits for a byte (or the end); `readable` may wake spuriously.
                    let mut first = [0u8; 1];
                    let peeked = conn.stream.peek(&mut first);
                    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, peeked).await {
                        Ok(Ok(_)) => {
                            let _ = sender.send(Ok(conn)).await;
                        }
                        Ok(Err(_)) => {}
                        Err(_) => tracing::info!(
                            port,
                            %peer,
                            timeout_ms = FIRST_BYTES_TIMEOUT.as_millis() as u64,
                            "a connection sent nothing in time; closed"
                        ),
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        self.accept_bounded().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
