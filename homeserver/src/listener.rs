//! The HTTP listeners: accepting connections and serving HTTP/1.1 on them within limits that
//! no client can talk its way past.
//!
//! Every connection, logged in or not, costs a file descriptor and memory, so before a request
//! reaches a router:
//! - connections are capped per listener, in total and per client IP address; one over a cap
//!   gets a JSON 503 or 429 on plain HTTP (TLS connections are closed) and is never served;
//! - the request head must arrive within `header_read_timeout_secs` (hyper's timer, which also
//!   closes a keep-alive connection waiting that long for its next request), a body that sends
//!   nothing for `body_read_timeout_secs` fails with 408, and a connection on which no byte
//!   moves for `idle_timeout_secs` is closed;
//! - a declared `Content-Length` over the route's limit is answered 413 before any of the body
//!   is read, an over-long URI 414 and over-large headers 431, all in the JSON envelope. The
//!   few answers hyper writes itself (a head it cannot parse or buffer) are rewritten on their
//!   way out into the same envelope ([`Guarded`]);
//! - on shutdown, connections finish their requests within `shutdown_grace_secs`, then are
//!   dropped whatever their clients do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::config::Limits;
use crate::error::ApiError;

/// The message a body that timed out fails with; extractors recognise it (408).
pub const BODY_TIMEOUT_MESSAGE: &str = "request body timed out";

/// The largest body each path accepts, and the error that refuses a larger one: a declared
/// `Content-Length` over it is refused at once, with the error the route itself would give.
pub type BodyLimit = Arc<dyn Fn(&str) -> RouteBody + Send + Sync>;

#[derive(Clone, Copy)]
pub struct RouteBody {
    pub max_bytes: u64,
    pub too_large: fn() -> ApiError,
}

impl RouteBody {
    /// A body over `max_bytes` is 413 `SW_CONTENT_TOO_LARGE`.
    pub fn plain(max_bytes: u64) -> RouteBody {
        RouteBody {
            max_bytes,
            too_large: || ApiError::ContentTooLarge("the declared body is over this endpoint's limit".into()),
        }
    }
}

/// The limits one listener enforces, taken from [`Limits`].
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl ConnLimits {
    /// `fd_budget` caps the connections below what the process may open (see
    /// [`raise_fd_limit`]).
    pub fn new(l: &Limits, fd_budget: usize) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(l.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            max_connections: l.max_connections.min(fd_budget).max(1),
            max_connections_per_address: l.max_connections_per_address,
            max_uri_bytes: l.max_uri_bytes,
            max_header_bytes: l.max_header_bytes,
            shutdown_grace: Duration::from_secs(l.shutdown_grace_secs),
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one and answers how many connections
/// that leaves room for, keeping descriptors back for the database, media and peers.
pub fn raise_fd_limit() -> usize {
    const RESERVED: u64 = 256;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let soft = u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX);
    // Both listeners share the descriptors; give each half of what is left.
    usize::try_from(soft.saturating_sub(RESERVED) / 2).unwrap_or(usize::MAX).max(16)
}

/// One listener: a TCP socket, optionally TLS, and the router it serves.
pub struct Listener {
    pub name: &'static str,
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub router: Router,
    pub limits: ConnLimits,
    pub body_limit: BodyLimit,
}

/// Open connections, in total and per client address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

struct Tracker {
    counts: Mutex<Counts>,
    /// Woken when the last connection closes.
    drained: Notify,
}

impl Tracker {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Refusal {
    Full,
    AddressFull,
}

/// A connection's place in the counts, given back when it is dropped (with the connection's
/// I/O, so an upgraded WebSocket keeps its place).
struct Slot {
    tracker: Arc<Tracker>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.tracker.counts();
        c.total -= 1;
        if let Some(n) = c.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.ip);
            }
        }
        if c.total == 0 {
            self.tracker.drained.notify_waiters();
        }
    }
}

fn admit(tracker: &Arc<Tracker>, limits: &ConnLimits, ip: IpAddr) -> Result<Slot, Refusal> {
    let mut c = tracker.counts();
    if c.total >= limits.max_connections {
        return Err(Refusal::Full);
    }
    let n = c.per_address.entry(ip).or_insert(0);
    if *n >= limits.max_connections_per_address {
        return Err(Refusal::AddressFull);
    }
    *n += 1;
    c.total += 1;
    Ok(Slot { tracker: tracker.clone(), ip })
}

/// What every connection of a listener shares.
struct Shared {
    router: Router,
    limits: ConnLimits,
    body_limit: BodyLimit,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http: hyper::server::conn::http1::Builder,
}

impl Listener {
    /// Serves until `stop` turns true, then lets connections finish within the grace period.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let tracker = Arc::new(Tracker { counts: Mutex::new(Counts::default()), drained: Notify::new() });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            // Larger than our own head limits, so that requests over those reach
            // `check_head` and get our answer; beyond these, hyper answers and `Guarded`
            // rewrites it.
            .max_buf_size((self.limits.max_uri_bytes + self.limits.max_header_bytes) * 2 + 16 * 1024)
            .max_headers(MAX_HEADERS * 2);
        let shared = Arc::new(Shared {
            router: self.router,
            limits: self.limits,
            body_limit: self.body_limit,
            tls: self.tls,
            http,
        });
        // Refusals are written by short tasks; past this many at once, sockets are just closed.
        let refusing = Arc::new(tokio::sync::Semaphore::new(64));
        // Turns true when the grace period is over: connections still open are dropped.
        let (force_tx, force) = watch::channel(false);
        loop {
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(listener = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            match admit(&tracker, &shared.limits, peer.ip()) {
                Ok(slot) => {
                    let shared = shared.clone();
                    let signals = Signals { stop: stop.clone(), force: force.clone() };
                    tokio::spawn(async move { connection(shared, stream, peer, slot, signals).await });
                }
                Err(refusal) => {
                    tracing::debug!(listener = self.name, peer = %peer, "connection refused: over the connection limit");
                    if shared.tls.is_none() {
                        if let Ok(permit) = refusing.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                refuse(stream, refusal).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
        }
        let open = tracker.counts().total;
        if open > 0 {
            tracing::info!(listener = self.name, open, "waiting for open connections to finish");
            let drained = tracker.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if tracker.counts().total > 0 && tokio::time::timeout(shared.limits.shutdown_grace, drained).await.is_err()
            {
                let left = tracker.counts().total;
                tracing::warn!(listener = self.name, left, "grace period over: dropping connections");
                let _ = force_tx.send(true);
            }
        }
    }
}

/// What a connection watches: `stop` to finish its request and close, `force` to close now.
struct Signals {
    stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
}

/// Writes a JSON refusal on a connection over a cap, then closes it.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let (status, code, message) = match refusal {
        Refusal::Full => (StatusCode::SERVICE_UNAVAILABLE, "SW_UNAVAILABLE", "too many open connections"),
        Refusal::AddressFull => {
            (StatusCode::TOO_MANY_REQUESTS, "SW_RATE_LIMIT_EXCEEDED", "too many open connections from this address")
        }
    };
    let bytes = raw_error_response(status, code, message, Some(1));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        // Read what the client sends meanwhile, so that closing does not reset the connection
        // before it has read the answer.
        let mut scratch = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while let Ok(n @ 1..) = stream.read(&mut scratch).await {
            left = match left.checked_sub(n) {
                Some(l) => l,
                None => break,
            };
        }
    })
    .await;
}

/// A complete HTTP/1.1 error response in the JSON envelope, closing the connection.
fn raw_error_response(status: StatusCode, code: &str, message: &str, retry_after: Option<u64>) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(s) = retry_after {
        head.push_str(&format!("retry-after: {s}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

async fn connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, slot: Slot, signals: Signals) {
    let activity = Arc::new(Activity::new());
    match &shared.tls {
        None => serve_io(shared.clone(), Guarded::new(stream, slot, activity.clone()), peer, activity, signals).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls)) => {
                    serve_io(shared.clone(), Guarded::new(tls, slot, activity.clone()), peer, activity, signals).await
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<IO>(
    shared: Arc<Shared>,
    io: Guarded<IO>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    Signals { mut stop, mut force }: Signals,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| handle(svc_shared.clone(), peer, req));
    let conn = shared.http.serve_connection(TokioIo::new(io), svc).with_upgrades();
    tokio::pin!(conn);
    let idle = shared.limits.idle_timeout;
    let mut check = tokio::time::interval(idle.div_f64(4.0).clamp(Duration::from_millis(250), Duration::from_secs(5)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = force.wait_for(|f| *f) => return,
            _ = check.tick() => {
                if activity.idle_for() >= idle {
                    tracing::debug!(peer = %peer, "closing a connection idle for {idle:?}");
                    return;
                }
            }
        }
    }
}

/// Headers a request may carry; more answer 431.
const MAX_HEADERS: usize = 100;

/// Checks a request's head against the limits before it is routed.
fn check_head(req: &Request<Incoming>, limits: &ConnLimits, body_limit: &BodyLimit) -> Result<(), ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(ApiError::UriTooLong(format!("the request URI is over {} bytes", limits.max_uri_bytes)));
    }
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || header_bytes > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge(format!(
            "request headers over {} bytes or {MAX_HEADERS} fields",
            limits.max_header_bytes
        )));
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let declared = len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        match declared {
            None => return Err(ApiError::bad_request("malformed Content-Length")),
            Some(n) => {
                let route = body_limit(req.uri().path());
                if n > route.max_bytes {
                    return Err((route.too_large)());
                }
            }
        }
    }
    Ok(())
}

async fn handle(shared: Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if let Err(e) = check_head(&req, &shared.limits, &shared.body_limit) {
        let mut resp = e.into_response();
        // The body was not read: the connection cannot carry another request.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    }
    let timeout = shared.limits.body_read_timeout;
    let mut req = req.map(|b| Body::new(TimedBody::new(b, timeout)));
    req.extensions_mut().insert(ConnectInfo(peer));
    shared.router.clone().oneshot(req).await
}

/// A request body that fails when no data arrives for `timeout`.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed when the body is first polled, so bodies never read cost no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody { inner, timeout, sleep: None }
    }
}

#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(BODY_TIMEOUT_MESSAGE)
    }
}

impl std::error::Error for BodyTimedOut {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When bytes last moved on a connection, in milliseconds since the process's clock base.
struct Activity {
    last_ms: AtomicU64,
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(clock_base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    fn new() -> Activity {
        Activity { last_ms: AtomicU64::new(now_ms()) }
    }
    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A connection's I/O: records activity, holds the connection's [`Slot`], and turns the bare
/// error answers hyper writes itself (400, 414, 431 with no body) into the JSON envelope.
struct Guarded<IO> {
    io: IO,
    _slot: Slot,
    activity: Arc<Activity>,
    /// A rewritten answer still being written, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
    /// Set once our side is shut down: what is still arriving is read and dropped for a while,
    /// so that a client still sending a body we refused reads our answer instead of a reset.
    linger: Option<Linger>,
}

struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    discarded: usize,
}

/// How long, and how much, a closing connection reads and drops.
const LINGER_FOR: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 16 * 1024 * 1024;

impl<IO> Guarded<IO> {
    fn new(io: IO, slot: Slot, activity: Arc<Activity>) -> Guarded<IO> {
        Guarded { io, _slot: slot, activity, replacement: None, linger: None }
    }
}

/// If `buf` is an answer hyper wrote for a request it could not parse, the JSON one to send.
fn rewrite_bare_error(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") || buf.len() < 12 {
        return None;
    }
    let (status, message) = match &buf[9..12] {
        b"400" => (StatusCode::BAD_REQUEST, "malformed HTTP request"),
        b"414" => (StatusCode::URI_TOO_LONG, "the request URI is too long"),
        b"431" => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request headers are too large"),
        _ => return None,
    };
    // Our own answers always carry a body; hyper's never do.
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?.to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0") || head_end + 4 != buf.len() {
        return None;
    }
    Some(raw_error_response(status, "SW_BAD_REQUEST", message, None))
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes what is left of a rewritten answer; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = self.replacement.as_mut() {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if let Some(json) = rewrite_bare_error(buf) {
            this.replacement = Some((json, 0));
            // hyper's bytes count as written; ours go out now or on the next poll.
            return match this.poll_replacement(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        // A bare error head is written alone, as the first buffer.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if first.starts_with(b"HTTP/1.1 4") && bufs.iter().filter(|b| !b.is_empty()).count() == 1 {
                return Pin::new(this).poll_write(cx, &first[..]);
            }
        }
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Linger { until: Box::pin(tokio::time::sleep(LINGER_FOR)), discarded: 0 });
        }
        let Some(linger) = this.linger.as_mut() else { return Poll::Ready(Ok(())) };
        let mut scratch = [0u8; 8192];
        loop {
            if linger.until.as_mut().poll(cx).is_ready() || linger.discarded >= LINGER_MAX_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => linger.discarded += buf.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// TLS settings for a listener from PEM files (rustls with ring), offering HTTP/1.1.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    federation::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_bare_errors_become_json() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = rewrite_bare_error(bare).expect("rewritten");
        let text = String::from_utf8(json).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "));
        assert!(text.contains("application/json"));
        assert!(text.ends_with(r#"{"error":{"code":"SW_BAD_REQUEST","message":"the request headers are too large"}}"#));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 52\r\n\r\n";
        assert!(rewrite_bare_error(ours).is_none(), "answers with a body are ours");
        assert!(rewrite_bare_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn connection_caps_count_per_address_and_in_total() {
        let tracker = Arc::new(Tracker { counts: Mutex::new(Counts::default()), drained: Notify::new() });
        let limits = ConnLimits::new(
            &Limits { max_connections: 3, max_connections_per_address: 2, ..Limits::default() },
            usize::MAX,
        );
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = admit(&tracker, &limits, a).ok().unwrap();
        let _a2 = admit(&tracker, &limits, a).ok().unwrap();
        assert!(matches!(admit(&tracker, &limits, a), Err(Refusal::AddressFull)));
        let _b1 = admit(&tracker, &limits, b).ok().unwrap();
        assert!(matches!(admit(&tracker, &limits, b), Err(Refusal::Full)));
        drop(a1);
        assert!(admit(&tracker, &limits, b).is_ok(), "a closed connection gives its place back");
        assert_eq!(tracker.counts().per_address.get(&a), Some(&1));
    }
}
