//! The proxy's listeners and worker threads: a listener accepts TCP connections and hands each
//! to the least busy worker — one single-threaded runtime per core — which serves it (TLS with
//! SNI on the HTTPS listener) with the proxy's own HTTP/1.1 server ([`super::server`]). On
//! shutdown the listeners stop accepting, every connection is asked to finish its current
//! request and gets a grace period, and the workers end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::Proxy;
use super::connection::BufferPool;
use super::forward::{ConnectionContext, Forwarder};
use super::server;

/// Read and write buffers each worker keeps for its connections to take; beyond these, a
/// buffer given back is freed.
const BUFFERS_KEPT: usize = 64;

/// How long a client has to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener speaks.
#[derive(Clone)]
pub enum ListenerKind {
    /// Plain HTTP; with `redirect_to_https_port`, routed hosts are redirected to HTTPS there.
    Http { redirect_to_https_port: Option<u16> },
    /// TLS, with certificates chosen by SNI.
    Https(TlsAcceptor),
}

impl std::fmt::Debug for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http {
                redirect_to_https_port,
            } => f
                .debug_struct("Http")
                .field("redirect_to_https_port", redirect_to_https_port)
                .finish(),
            Self::Https(_) => f.write_str("Https"),
        }
    }
}

/// Accepts connections on `listener` and hands each to the least busy worker thread, until the
/// proxy's shutdown token is cancelled; then waits for the workers to drain.
pub async fn serve(listener: TcpListener, proxy: Proxy, kind: ListenerKind) {
    let shutdown = proxy.forwarder.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "the proxy listener could not accept a connection");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Small responses go out at once instead of waiting for Nagle's timer.
        let _ = stream.set_nodelay(true);
        match stream.into_std() {
            Ok(stream) => proxy.workers.dispatch(Accepted {
                stream,
                peer,
                kind: kind.clone(),
            }),
            Err(error) => tracing::debug!(%error, "an accepted connection could not be handed over"),
        }
    }
    drop(listener);
    proxy.workers.stopped().await;
}

/// A connection accepted by a listener, on its way to a worker.
#[derive(Debug)]
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
}

/// The threads connections are served on: one single-threaded runtime per core, like nginx's
/// worker processes. A connection, the upstream connections its requests use (each worker has
/// its own pool) and every wake-up between them stay on one thread, which is what makes a
/// proxy fast — a work-stealing runtime would move each request across cores several times.
#[derive(Debug)]
pub(super) struct Workers {
    /// Each worker's queue of new connections, and how many it is serving.
    queues: Vec<(mpsc::UnboundedSender<Accepted>, Arc<AtomicUsize>)>,
    /// Closed from the start: `wait` resolves once every worker thread has ended.
    threads: TaskTracker,
}

impl Workers {
    /// Starts `count` worker threads (at least one). They end when the proxy's shutdown token is
    /// cancelled and their connections are done, or when the `Workers` is dropped.
    pub(super) fn start(forwarder: &Arc<Forwarder>, count: usize) -> std::io::Result<Self> {
        let threads = TaskTracker::new();
        let mut queues = Vec::new();
        for index in 0..count.max(1) {
            let (sender, receiver) = mpsc::unbounded_channel();
            let load = Arc::new(AtomicUsize::new(0));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (forwarder, worker_load, alive) = (forwarder.clone(), load.clone(), threads.token());
            std::thread::Builder::new()
                .name(format!("dw-proxy-{index}"))
                .spawn(move || {
                    runtime.block_on(run_worker(forwarder, receiver, worker_load));
                    // Tunnels and idle upstream connections still on this thread end here.
                    drop(runtime);
                    drop(alive);
                })?;
            queues.push((sender, load));
        }
        threads.close();
        Ok(Self { queues, threads })
    }

    /// Hands a connection to the worker serving the fewest.
    fn dispatch(&self, accepted: Accepted) {
        let Some((queue, load)) = self
            .queues
            .iter()
            .min_by_key(|(_, load)| load.load(Ordering::Relaxed))
        else {
            return;
        };
        load.fetch_add(1, Ordering::Relaxed);
        if queue.send(accepted).is_err() {
            load.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("a proxy worker has stopped; dropping the connection");
        }
    }

    /// Resolves once every worker thread has ended.
    async fn stopped(&self) {
        self.threads.wait().await;
    }
}

/// One worker thread's loop: serve the connections handed to it until shutdown, then give them
/// the grace period to finish.
async fn run_worker(
    forwarder: Arc<Forwarder>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    load: Arc<AtomicUsize>,
) {
    let shutdown = forwarder.shutdown.clone();
    let pool = Arc::new(forwarder.worker_pool());
    let buffers = Arc::new(BufferPool::new(BUFFERS_KEPT));
    // Idle upstream connections nobody took back are closed after the pool's idle timeout.
    let sweeper = {
        let pool = pool.clone();
        let every = forwarder.options.pool_idle_timeout;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                pool.sweep();
            }
        })
    };
    let connections = TaskTracker::new();
    let closers = Closers::default();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = accepted.recv() => next,
        };
        let Some(Accepted { stream, peer, kind }) = next else {
            break;
        };
        let counted = CountedConnection::new(forwarder.metrics_client_connections(), load.clone());
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "a connection could not join the worker's runtime");
                continue;
            }
        };
        let context = Arc::new(ConnectionContext {
            forwarder: forwarder.clone(),
            upstream: pool.clone(),
            buffers: buffers.clone(),
            client_ip: client_ip(peer),
            proto: match kind {
                ListenerKind::Http { .. } => "http",
                ListenerKind::Https(_) => "https",
            },
            redirect_to_https_port: match kind {
                ListenerKind::Http {
                    redirect_to_https_port,
                } => redirect_to_https_port,
                ListenerKind::Https(_) => None,
            },
        });
        let closed = closers.register();
        connections.spawn(serve_stream(stream, kind, context, counted, closed));
    }
    closers.close_all();
    // Connections handed over but not picked up are closed.
    accepted.close();
    while let Ok(Accepted { .. }) = accepted.try_recv() {
        load.fetch_sub(1, Ordering::Relaxed);
    }
    connections.close();
    connections.wait().await;
    sweeper.abort();
}

fn client_ip(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

async fn serve_stream(
    stream: TcpStream,
    kind: ListenerKind,
    context: Arc<ConnectionContext>,
    _counted: CountedConnection,
    mut closed: Closed,
) {
    match kind {
        ListenerKind::Http { .. } => serve_io(stream, context, closed).await,
        ListenerKind::Https(acceptor) => {
            let handshake = tokio::select! {
                _ = &mut closed.signal => return,
                handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
            };
            match handshake {
                Ok(Ok(tls)) => serve_io(tls, context, closed).await,
                Ok(Err(error)) => tracing::debug!(%error, "a TLS handshake failed"),
                Err(_) => tracing::debug!("a TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(io: I, context: Arc<ConnectionContext>, mut closed: Closed)
where
    I: super::connection::ClientIo + 'static,
{
    server::serve_connection(io, context, &mut closed.signal).await;
}

/// The shutdown signals of one worker's connections. Each connection waits on its own oneshot
/// rather than on the application's cancellation token: polling the token takes a lock shared
/// by every connection, on every wake-up of every connection, which showed in profiles.
#[derive(Debug, Clone, Default)]
struct Closers {
    senders: Arc<std::sync::Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    senders: HashMap<u64, oneshot::Sender<()>>,
}

/// One connection's shutdown signal; leaving the registry when the connection ends.
#[derive(Debug)]
struct Closed {
    /// Resolves (with an error: its sender is dropped) when the worker shuts down.
    signal: oneshot::Receiver<()>,
    id: u64,
    closers: Closers,
}

impl Closers {
    fn register(&self) -> Closed {
        let (sender, signal) = oneshot::channel();
        let mut registry = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        registry.next_id += 1;
        let id = registry.next_id;
        registry.senders.insert(id, sender);
        Closed {
            signal,
            id,
            closers: self.clone(),
        }
    }

    /// Signals every registered connection to shut down.
    fn close_all(&self) {
        let mut registry = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        registry.senders.clear();
    }
}

impl Drop for Closed {
    fn drop(&mut self) {
        let mut registry = self.closers.senders.lock().unwrap_or_else(|e| e.into_inner());
        registry.senders.remove(&self.id);
    }
}

/// Counts a client connection on the `proxy_client_connections` gauge and its worker's load
/// while it lives.
struct CountedConnection {
    gauge: Gauge,
    load: Arc<AtomicUsize>,
}

impl CountedConnection {
    fn new(gauge: &Gauge, load: Arc<AtomicUsize>) -> Self {
        gauge.inc();
        Self {
            gauge: gauge.clone(),
            load,
        }
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.gauge.dec();
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}
