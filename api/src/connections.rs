//! The node's accepted TCP connections, bounded: what keeps idle or hostile clients from
//! using up the file descriptors the store needs, or the CPU.
//!
//! - **A cap below the descriptor limit**: at start the node raises its soft `RLIMIT_NOFILE`
//!   to the hard limit and keeps [`ConnectionLimits::reserved_descriptors`] of it for the
//!   store, logs and everything else; connections take at most the rest (and at most
//!   [`ConnectionLimits::max_connections`]).
//! - **Eviction at the cap**: a new connection arriving at the cap closes the connection that
//!   has been silent longest (no byte read or written), if it has been silent for at least
//!   [`ConnectionLimits::evict_idle_after_ms`]; otherwise the newcomer is closed. A client
//!   that is talking, or being answered, is not the one evicted.
//! - **A handshake timeout**: a connection that has not sent the 24-byte HTTP/2 preface
//!   within [`ConnectionLimits::handshake_timeout_ms`] is closed.
//! - **An accept loop that never spins**: running out of descriptors, buffers or memory
//!   backs off, from 5 ms doubling to 1 s; other accept errors (a peer that reset before the
//!   accept) retry at once, with a pause after a run of them.
//! - TCP keepalive and no Nagle on every accepted socket.
//!
//! HTTP/2 limits (streams per connection, keepalive pings) are set on the server
//! (`crate::server`); the idle timeout of event streams in the services
//! (`limits.stream_idle_timeout_ms`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The limits on accepted connections (the `[connections]` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Most connections open at once; the node lowers it to its descriptor limit minus
    /// `reserved_descriptors`.
    pub max_connections: usize,
    /// Descriptors kept out of the connections' reach, for the store and everything else.
    pub reserved_descriptors: u64,
    /// A connection that sends no byte within this is closed.
    pub handshake_timeout_ms: u64,
    /// At the cap, the longest-silent connection (no byte either way) is evicted if silent
    /// this long.
    pub evict_idle_after_ms: u64,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    pub max_streams_per_connection: u32,
    /// HTTP/2 keepalive: a ping after this much silence from the peer.
    pub keepalive_interval_ms: u64,
    /// HTTP/2 keepalive: the connection is closed when a ping is not answered within this
    /// (TCP keepalive probes at this interval, three of them).
    pub keepalive_timeout_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            reserved_descriptors: 256,
            handshake_timeout_ms: 10_000,
            evict_idle_after_ms: 5_000,
            max_streams_per_connection: 256,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
        }
    }
}

impl ConnectionLimits {
    /// Checks every value, naming the key of a bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("connections.max_connections", self.max_connections as u64),
            (
                "connections.handshake_timeout_ms",
                self.handshake_timeout_ms,
            ),
            (
                "connections.max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            (
                "connections.keepalive_interval_ms",
                self.keepalive_interval_ms,
            ),
            (
                "connections.keepalive_timeout_ms",
                self.keepalive_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}

/// The fewest connections a node accepts, however low its descriptor limit.
const MIN_CONNECTIONS: usize = 16;

/// Raises the soft descriptor limit to the hard one (where allowed) and answers the
/// connection cap that leaves `limits.reserved_descriptors` free.
pub fn connection_cap(limits: &ConnectionLimits) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut current = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (current.current, current.maximum)
        && soft < hard
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => current = getrlimit(Resource::Nofile),
            Err(error) => tracing::warn!(%error, soft, hard, "raise descriptor limit"),
        }
    }
    let soft = current.current.unwrap_or(u64::MAX);
    let room = soft.saturating_sub(limits.reserved_descriptors);
    let cap = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(limits.max_connections);
    if cap < MIN_CONNECTIONS {
        tracing::warn!(
            descriptor_limit = soft,
            reserved = limits.reserved_descriptors,
            "descriptor limit leaves almost no room for connections; raise `ulimit -n`"
        );
    }
    cap.max(MIN_CONNECTIONS)
}

/// What the accept loop and every connection share.
#[derive(Debug)]
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    /// No connection can be evicted before this (see [`Registry::evict_idlest`]).
    no_candidate_until_ms: AtomicU64,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        // A panic elsewhere must not disable the cap: the map itself is always consistent.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At the cap: evicts the longest-silent connection if it has been silent at least
    /// `idle_ms`; says whether room was made. After a search that found none, newcomers are
    /// refused without searching again until the silent one it saw could qualify, so a flood
    /// at the cap costs no scan per connection.
    fn evict_idlest(&self, idle_ms: u64) -> bool {
        let now = self.now_ms();
        if now < self.no_candidate_until_ms.load(Ordering::Acquire) {
            return false;
        }
        let open = self.open();
        let idlest = open
            .values()
            .filter(|state| !state.evicted.load(Ordering::Acquire))
            .min_by_key(|state| state.last_active_ms.load(Ordering::Acquire));
        match idlest {
            Some(state)
                if now.saturating_sub(state.last_active_ms.load(Ordering::Acquire)) >= idle_ms =>
            {
                state.evict();
                true
            }
            Some(state) => {
                let ready_at = state
                    .last_active_ms
                    .load(Ordering::Acquire)
                    .saturating_add(idle_ms);
                self.no_candidate_until_ms
                    .store(ready_at, Ordering::Release);
                false
            }
            None => false,
        }
    }
}

/// One connection's shared state: when a byte last went either way, and whether it was
/// evicted.
#[derive(Debug)]
struct ConnectionState {
    last_active_ms: AtomicU64,
    evicted: AtomicBool,
    /// The task reading the connection, woken to see its eviction.
    reader: AtomicWaker,
}

impl ConnectionState {
    fn touch(&self, registry: &Registry) {
        self.last_active_ms
            .store(registry.now_ms(), Ordering::Release);
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// An accepted connection, counted against the cap until dropped.
#[derive(Debug)]
pub struct TrackedConnection {
    stream: TcpStream,
    id: u64,
    state: Arc<ConnectionState>,
    registry: Arc<Registry>,
    /// Until the HTTP/2 preface has arrived: when the handshake times out.
    handshake: Option<Pin<Box<Sleep>>>,
    /// Bytes read so far, counted up to the preface's length.
    handshake_bytes: usize,
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.registry.open().remove(&self.id);
    }
}

impl Connected for TrackedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

fn evicted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection evicted: the node is at its connection cap and this one was idle",
    )
}

impl AsyncRead for TrackedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The waker first, then the flag: an eviction between the two still wakes us.
        this.state.reader.register(cx.waker());
        if this.state.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(evicted_error()));
        }
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len() - filled_before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            this.state.touch(&this.registry);
            this.handshake_bytes += read;
            if this.handshake_bytes >= HTTP2_PREFACE_BYTES {
                this.handshake = None;
            }
            return polled;
        }
        if polled.is_pending()
            && let Some(handshake) = this.handshake.as_mut()
            && handshake.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within the handshake timeout",
            )));
        }
        polled
    }
}

impl AsyncWrite for TrackedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(evicted_error()));
        }
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.state.touch(&self.registry);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(evicted_error()));
        }
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.state.touch(&self.registry);
        }
        polled
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

/// The stream of accepted connections the gRPC server serves.
pub type Incoming = ReceiverStream<Result<TrackedConnection, io::Error>>;

/// Whether an accept error is the process or system running out of something (descriptors,
/// buffers, memory): worth a warning, and a back-off.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    use rustix::io::Errno;
    error.raw_os_error().is_some_and(|code| {
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
            .iter()
            .any(|errno| errno.raw_os_error() == code)
    })
}

/// The length of the HTTP/2 client connection preface.
const HTTP2_PREFACE_BYTES: usize = 24;

/// Other accept errors in a row before the loop pauses (a peer's reset is one error, a run of
/// them is something else going wrong).
const ACCEPT_ERRORS_BEFORE_PAUSE: u32 = 64;

/// Accepts on `listener` under `limits` with at most `cap` connections open; the stream
/// ends (and the listener closes) once the server drops it.
pub fn accept(listener: TcpListener, limits: ConnectionLimits, cap: usize) -> Incoming {
    let (sender, receiver) = mpsc::channel(64);
    let registry = Arc::new(Registry {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        no_candidate_until_ms: AtomicU64::new(0),
    });
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        let mut errors_in_a_row: u32 = 0;
        let mut refused: u64 = 0;
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => {
                    backoff = Duration::ZERO;
                    errors_in_a_row = 0;
                    stream
                }
                Err(error) => {
                    errors_in_a_row = errors_in_a_row.saturating_add(1);
                    if is_resource_exhaustion(&error) {
                        backoff =
                            (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                        tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept connection: out of resources; backing off");
                    } else if errors_in_a_row.is_multiple_of(ACCEPT_ERRORS_BEFORE_PAUSE) {
                        backoff = Duration::from_millis(5);
                        tracing::warn!(%error, errors_in_a_row, "accept connection keeps failing; pausing");
                    } else {
                        tracing::debug!(%error, "accept connection");
                        continue;
                    }
                    tokio::select! {
                        () = sender.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            };
            let open_now = registry.open().len();
            if open_now >= cap && !registry.evict_idlest(limits.evict_idle_after_ms) {
                // Every open connection is busy: the newcomer is the one refused.
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(cap, refused, "connection cap reached; refusing connections");
                }
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_millis(limits.keepalive_interval_ms))
                .with_interval(Duration::from_millis(limits.keepalive_timeout_ms))
                .with_retries(3);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
            let state = Arc::new(ConnectionState {
                last_active_ms: AtomicU64::new(registry.now_ms()),
                evicted: AtomicBool::new(false),
                reader: AtomicWaker::new(),
            });
            registry.open().insert(id, Arc::clone(&state));
            let connection = TrackedConnection {
                stream,
                id,
                state,
                registry: Arc::clone(&registry),
                handshake: Some(Box::pin(tokio::time::sleep(Duration::from_millis(
                    limits.handshake_timeout_ms,
                )))),
                handshake_bytes: 0,
            };
            if sender.send(Ok(connection)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            handshake_timeout_ms: 200,
            evict_idle_after_ms: 0,
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = accept(listener, limits(), 4);
        let _client = TcpStream::connect(address).await.expect("connect");
        let mut accepted = incoming.next().await.expect("one").expect("accepted");
        let mut buffer = [0u8; 8];
        let error = accepted.read(&mut buffer).await.expect_err("timed out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_is_evicted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = accept(
            listener,
            ConnectionLimits {
                handshake_timeout_ms: 60_000,
                ..limits()
            },
            MIN_CONNECTIONS,
        );
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for index in 0..MIN_CONNECTIONS {
            clients.push(TcpStream::connect(address).await.expect("connect"));
            accepted.push(incoming.next().await.expect("one").expect("accepted"));
            if index == 0 {
                // The first is the longest silent by a clear margin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // One more: the first (the longest silent) is evicted to make room.
        clients.push(TcpStream::connect(address).await.expect("connect"));
        let _newest = incoming.next().await.expect("one").expect("accepted");
        let mut buffer = [0u8; 8];
        let error = accepted[0].read(&mut buffer).await.expect_err("evicted");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }
}
