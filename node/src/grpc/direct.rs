//! The client port's own HTTP/2 server for plaintext connections: KV calls answered in
//! the connection's task, everything else handed to the tonic services.
//!
//! Why it exists: hyper serves every HTTP/2 stream in a task of its own, and a unary call
//! crossed three tasks — the connection's (frames in), the stream's (decode, call, encode)
//! and the connection's again (frames out) — with a wake-up, often of the other worker
//! thread, at each hand-over. Nearly every request a busy member serves is a small KV
//! call, so here the connection's task reads it, calls the KV service, and writes the
//! answer itself (`KvCall`), as the load tool's light client does on the other side.
//! Every other request — watch and lease streams, the other services, the JSON gateway
//! spoken over HTTP/2, a compressed message — goes to the same [`Front`] service tonic
//! serves, in a task of its own (`bridge`), exactly as before.
//!
//! What it leaves to tonic: TLS connections (ALPN, client certificates) and HTTP/1.1
//! (curl, the gateway, `/metrics`), told apart from HTTP/2 by the connection's first
//! bytes (`is_http2_preface`) and handed to tonic's server unchanged.
//!
//! Invariants: a KV call is answered as tonic answered it — the same headers, one
//! message, `grpc-status` in trailers, a refusal as a trailers-only answer with tonic's
//! status encoding — and counted in `/metrics` as the front counts it; the HTTP/2
//! settings are hyper's defaults with etcd's flags (`GrpcSettings`) applied.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tonic::body::Body;
use tonic::codegen::http::{self, header, HeaderMap, HeaderValue, Request, Response};
use tonic::codegen::Service;
use tonic::Status;

use super::front::{Front, KV_PATH_PREFIX};
use super::metrics::Metrics;
use super::{GrpcSettings, KvService};
use crate::pb::etcdserverpb::kv_server::Kv;

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4); an
/// HTTP/1.1 request cannot begin with them.
const HTTP2_PREFACE_START: &[u8] = b"PRI ";

/// How many times a connection that sent fewer bytes than `HTTP2_PREFACE_START` is looked
/// at again (1 ms apart) before it is handed to tonic, which then waits for the rest.
const PREFACE_PEEKS_MAX: u32 = 100;

/// hyper's HTTP/2 server defaults (hyper/src/proto/h2/server.rs), which tonic used.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
const SEND_BUFFER_BYTES_MAX: usize = 400 * 1024;
const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;

/// The length of a gRPC message's prefix: a compressed flag and a 4-byte length.
const GRPC_MESSAGE_PREFIX_BYTES: usize = 5;

/// An answer at least this large is encoded on a blocking thread (see `unary`): about
/// a millisecond of encoding.
const BLOCKING_ENCODE_BYTES_MIN: usize = 1 << 20;

/// `KeepAlive::poll`'s rounds: see there.
const KEEPALIVE_POLL_ROUNDS_MAX: usize = 2;

/// How many times one poll of a connection's task polls its connection and calls again
/// because they woke it meanwhile (see [`SelfWakeFilter`]); past that, the task yields.
const CONNECTION_REPOLLS_MAX: usize = 8;

/// The service every request other than a plain KV call goes to: the front, as tonic
/// serves it (the router with every other service, the gateway and the HTTP endpoints).
pub type BridgeService = Front<tonic::service::Routes>;

/// What a connection's KV calls need.
#[derive(Clone)]
pub struct KvCalls {
    pub kv: Arc<KvService>,
    pub metrics: Arc<Metrics>,
    /// The largest request message taken (`--max-request-bytes` plus gRPC's framing).
    pub request_bytes_max: usize,
}

/// Accepts plaintext connections until the process ends: HTTP/2 ones are served here,
/// the rest are sent to `http1` (tonic's server).
pub async fn accept_loop(
    listener: TcpListener,
    settings: GrpcSettings,
    calls: KvCalls,
    bridge: BridgeService,
    http1: tokio::sync::mpsc::UnboundedSender<TcpStream>,
) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _peer)) => socket,
            Err(e) => {
                // Out of file descriptors and the like: pass, as tonic's accept loop does.
                tracing::debug!("accept on the client port: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!("client connection: set TCP_NODELAY: {e}");
        }
        let calls = calls.clone();
        let bridge = bridge.clone();
        let http1 = http1.clone();
        tokio::spawn(async move {
            if is_http2_preface(&socket).await {
                serve_connection(socket, settings, calls, bridge).await;
            } else if http1.send(socket).is_err() {
                tracing::debug!("client connection: tonic's server is gone");
            }
        });
    }
}

/// Whether the connection begins as HTTP/2 with prior knowledge. Looks without taking
/// the bytes, so that whoever serves it reads the whole preface.
async fn is_http2_preface(socket: &TcpStream) -> bool {
    let mut first = [0u8; 4];
    for _ in 0..PREFACE_PEEKS_MAX {
        let n = match socket.peek(&mut first).await {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 || first[..n] != HTTP2_PREFACE_START[..n] {
            return false;
        }
        if n == HTTP2_PREFACE_START.len() {
            return true;
        }
        // A few bytes only so far (peek returns at once while any are there).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Serves one HTTP/2 connection until either side closes it.
async fn serve_connection(socket: TcpStream, settings: GrpcSettings, calls: KvCalls, bridge: BridgeService) {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_send_buffer_size(SEND_BUFFER_BYTES_MAX)
        .max_header_list_size(HEADER_LIST_BYTES_MAX)
        .max_concurrent_streams(settings.max_concurrent_streams);
    let mut connection = match builder.handshake::<_, Bytes>(socket).await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!("client connection: HTTP/2 handshake: {e}");
            return;
        }
    };
    let mut keepalive = KeepAlive::new(&mut connection, settings);
    // The connection's KV calls, polled by this task (see the module's header).
    let mut kv_calls: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>> = FuturesUnordered::new();
    let filter = Arc::new(SelfWakeFilter::default());
    let filtered_waker = std::task::Waker::from(filter.clone());
    loop {
        let next = poll_fn(|cx| {
            filter.poll(cx, &filtered_waker, |cx| {
                // Answers first, so that the connection's poll below writes them.
                while let Poll::Ready(Some(())) = kv_calls.poll_next_unpin(cx) {}
                if keepalive.poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                connection.poll_accept(cx).map(Some)
            })
        })
        .await;
        let Some(next) = next else {
            // Ping unanswered: drop the connection, as hyper's keep-alive does.
            return;
        };
        match next {
            Some(Ok((request, respond))) => match kv_method(&request) {
                Some(method) => kv_calls.push(Box::pin(serve_kv_call(calls.clone(), method, request, respond))),
                None => {
                    tokio::spawn(bridge_call(bridge.clone(), request, respond));
                }
            },
            Some(Err(e)) => {
                tracing::debug!("client connection: {e}");
                return;
            }
            // Closed: h2 closes only once no stream is left, so every call was answered.
            None => return,
        }
    }
}

/// The waker a connection's task polls its connection and calls with: a wake while the
/// task itself is polling only asks for another round of the same poll.
///
/// Why: answering a call wakes the connection's task from inside its own poll (h2 wakes
/// the connection to write the answer's frames, which the same poll then writes). tokio
/// puts a task woken while it runs at the back of the queue *and wakes the other worker
/// thread* to take it — a futex wake per answer, 94% of all futex wakes on a member
/// serving one client (`perf record -e syscalls:sys_enter_futex --call-graph dwarf`),
/// and often the connection's next poll moved to the other CPU. A wake from elsewhere
/// (the loop's answer, the socket, a timer) wakes the task as before.
#[derive(Default)]
struct SelfWakeFilter {
    /// [`SELF_WAKE_IDLE`], [`SELF_WAKE_POLLING`] or [`SELF_WAKE_POLLING_WOKEN`].
    state: std::sync::atomic::AtomicU8,
    task: futures_util::task::AtomicWaker,
}

const SELF_WAKE_IDLE: u8 = 0;
const SELF_WAKE_POLLING: u8 = 1;
const SELF_WAKE_POLLING_WOKEN: u8 = 2;

impl SelfWakeFilter {
    /// Polls `inner` with `filtered` (this filter's waker) until it is ready or nothing
    /// woke it during the poll, at most [`CONNECTION_REPOLLS_MAX`] rounds. A wake during
    /// a round that ends ready is dropped: the caller polls again at once (the
    /// connection's loop), which is what the wake asked for.
    fn poll<T>(&self, cx: &mut Context<'_>, filtered: &std::task::Waker, mut inner: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        use std::sync::atomic::Ordering::AcqRel;
        self.task.register(cx.waker());
        let mut filtered_cx = Context::from_waker(filtered);
        for _ in 0..CONNECTION_REPOLLS_MAX {
            let previous = self.state.swap(SELF_WAKE_POLLING, AcqRel);
            assert_eq!(previous, SELF_WAKE_IDLE, "a connection's task polled from two places at once");
            let result = inner(&mut filtered_cx);
            // Back to idle unless woken meanwhile; from now on a wake wakes the task.
            let woken = self.state.swap(SELF_WAKE_IDLE, AcqRel) == SELF_WAKE_POLLING_WOKEN;
            if result.is_ready() || !woken {
                return result;
            }
        }
        // Woken every round (e.g. tokio's budget for a task is spent): let others run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl std::task::Wake for SelfWakeFilter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        match self.state.compare_exchange(SELF_WAKE_POLLING, SELF_WAKE_POLLING_WOKEN, AcqRel, Acquire) {
            // Noted: the poll under way goes round again.
            Ok(_) => {}
            Err(SELF_WAKE_POLLING_WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// `--grpc-keepalive-interval` / `--grpc-keepalive-timeout`: the server pings the client
/// every interval and closes the connection when an answer takes longer than the timeout.
struct KeepAlive {
    ping_pong: Option<h2::PingPong>,
    interval: Option<Duration>,
    timeout: Duration,
    /// When the next ping is due, or (while one is out) when its answer is overdue.
    timer: Pin<Box<tokio::time::Sleep>>,
    ping_out: bool,
}

impl KeepAlive {
    fn new<T, B: bytes::Buf>(connection: &mut h2::server::Connection<T, B>, settings: GrpcSettings) -> KeepAlive
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let interval = (settings.keepalive_interval_ms > 0).then(|| Duration::from_millis(settings.keepalive_interval_ms));
        KeepAlive {
            ping_pong: connection.ping_pong(),
            interval,
            timeout: Duration::from_millis(settings.keepalive_timeout_ms),
            timer: Box::pin(tokio::time::sleep(interval.unwrap_or(Duration::MAX / 4))),
            ping_out: false,
        }
    }

    /// Ready when the client did not answer a ping in time (or pings fail).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(interval), Some(ping_pong)) = (self.interval, self.ping_pong.as_mut()) else { return Poll::Pending };
        // Round 1 may send a ping; round 2 then registers for its answer and its timer.
        for _ in 0..KEEPALIVE_POLL_ROUNDS_MAX {
            if self.ping_out {
                match ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.ping_out = false;
                        self.timer.as_mut().reset(tokio::time::Instant::now() + interval);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.ping_out {
                tracing::debug!("client connection: no answer to a keepalive ping in {:?}; closing", self.timeout);
                return Poll::Ready(());
            }
            if ping_pong.send_ping(h2::Ping::opaque()).is_err() {
                return Poll::Ready(());
            }
            self.ping_out = true;
            self.timer.as_mut().reset(tokio::time::Instant::now() + self.timeout);
        }
        Poll::Pending
    }
}

/// The KV methods served in the connection's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvMethod {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
}

/// The KV method a request calls, when it is one served here: a gRPC POST of an
/// uncompressed message. Anything else (an unknown method, compression) is the bridge's.
fn kv_method(request: &Request<RecvStream>) -> Option<KvMethod> {
    let method = request.uri().path().strip_prefix(KV_PATH_PREFIX)?;
    let headers = request.headers();
    let is_grpc = headers.get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let identity = headers.get("grpc-encoding").is_none_or(|e| e.as_bytes() == b"identity");
    if request.method() != http::Method::POST || !is_grpc || !identity {
        return None;
    }
    match method {
        "Range" => Some(KvMethod::Range),
        "Put" => Some(KvMethod::Put),
        "DeleteRange" => Some(KvMethod::DeleteRange),
        "Txn" => Some(KvMethod::Txn),
        "Compact" => Some(KvMethod::Compact),
        _ => None,
    }
}

/// Serves one KV call: reads its message, calls the KV service, writes the answer.
async fn serve_kv_call(calls: KvCalls, method: KvMethod, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let (parts, body) = request.into_parts();
    let call = calls.metrics.grpc_call_started(parts.uri.path());
    let deadline = grpc_timeout(&parts.headers);
    let kv = &calls.kv;
    let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers);
    let answer = async {
        let message = read_message(body, calls.request_bytes_max).await?;
        match method {
            KvMethod::Range => unary(message, metadata, |r| kv.range(r)).await,
            KvMethod::Put => unary(message, metadata, |r| kv.put(r)).await,
            KvMethod::DeleteRange => unary(message, metadata, |r| kv.delete_range(r)).await,
            KvMethod::Txn => unary(message, metadata, |r| kv.txn(r)).await,
            KvMethod::Compact => unary(message, metadata, |r| kv.compact(r)).await,
        }
    };
    let answer = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, answer).await.unwrap_or_else(|_| Err(deadline_exceeded())),
        None => answer.await,
    };
    let code = match answer {
        Ok(message) => {
            send_message(&mut respond, message).await;
            0
        }
        Err(status) => {
            let code = status.code() as i32;
            send_status_only(&mut respond, status);
            code
        }
    };
    calls.metrics.grpc_call_handled(&call, code);
}

/// Decodes a request message, calls the service, encodes its answer with gRPC's prefix.
async fn unary<Q, A, F, Fut>(message: Bytes, metadata: tonic::metadata::MetadataMap, call: F) -> Result<Bytes, Status>
where
    Q: Message + Default,
    A: Message + Send + 'static,
    F: FnOnce(tonic::Request<Q>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<A>, Status>>,
{
    let request = Q::decode(message).map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))?;
    let answer = call(tonic::Request::from_parts(metadata, http::Extensions::default(), request)).await?.into_inner();
    if answer.encoded_len() < BLOCKING_ENCODE_BYTES_MIN {
        return encode_message(answer);
    }
    // A large answer (a range of many keys: ~30 MB for 100k keys of 256 B) is encoded,
    // and freed, on a blocking thread: tens of milliseconds in one poll of a worker
    // thread would hold up every task queued behind it there, the raft loop included.
    tokio::task::spawn_blocking(move || encode_message(answer))
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("encoding the answer failed: {e}"))))
}

/// A message with gRPC's prefix.
fn encode_message<A: Message>(answer: A) -> Result<Bytes, Status> {
    let length = answer.encoded_len();
    let mut encoded = BytesMut::with_capacity(GRPC_MESSAGE_PREFIX_BYTES + length);
    encoded.put_u8(0);
    encoded.put_u32(u32::try_from(length).map_err(|_| Status::resource_exhausted("response larger than 4 GiB"))?);
    answer.encode(&mut encoded).expect("a buffer of the message's encoded length");
    Ok(encoded.freeze())
}

/// Reads a unary call's one message (without its prefix), refusing one over `bytes_max`
/// with etcd's (grpc-go's) status.
async fn read_message(mut body: RecvStream, bytes_max: usize) -> Result<Bytes, Status> {
    let mut received = BytesMut::new();
    let mut declared_bytes: Option<usize> = None;
    while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
        let data = data.map_err(|e| Status::internal(format!("h2 protocol error: {e}")))?;
        // Hands the window back at once, as hyper's body does.
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
        if declared_bytes.is_none() && received.len() >= GRPC_MESSAGE_PREFIX_BYTES {
            if received[0] != 0 {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ));
            }
            let length = u32::from_be_bytes([received[1], received[2], received[3], received[4]]) as usize;
            if length > bytes_max {
                return Err(Status::resource_exhausted(format!("grpc: received message larger than max ({length} vs. {bytes_max})")));
            }
            declared_bytes = Some(length);
        }
        if declared_bytes.is_some_and(|length| received.len() > GRPC_MESSAGE_PREFIX_BYTES + length) {
            return Err(Status::unimplemented("Expected one message in a unary call, found more"));
        }
    }
    match declared_bytes {
        Some(length) if received.len() == GRPC_MESSAGE_PREFIX_BYTES + length => {
            Ok(received.freeze().split_off(GRPC_MESSAGE_PREFIX_BYTES))
        }
        Some(_) | None if received.is_empty() => Err(Status::internal("Missing request message.")),
        _ => Err(Status::internal("Unexpected EOF decoding stream.")),
    }
}

/// Writes a successful unary answer: headers, the message, `grpc-status: 0`.
async fn send_message(respond: &mut SendResponse<Bytes>, message: Bytes) {
    let head = Response::builder()
        .status(http::StatusCode::OK)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .body(())
        .expect("a valid response head");
    let Ok(mut stream) = respond.send_response(head, false) else { return };
    if send_data(&mut stream, message).await.is_err() {
        return;
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// Writes a refusal as a trailers-only answer, with tonic's encoding of the status.
fn send_status_only(respond: &mut SendResponse<Bytes>, status: Status) {
    let (parts, ()) = status.into_http::<()>().into_parts();
    let _ = respond.send_response(Response::from_parts(parts, ()), true);
}

/// Queues `data` on the stream once the stream has room for any of it (hyper's rule:
/// a slow reader holds the sender back at the send buffer's limit).
async fn send_data(stream: &mut SendStream<Bytes>, data: Bytes) -> Result<(), h2::Error> {
    stream.reserve_capacity(1);
    while stream.capacity() == 0 {
        match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        }
    }
    stream.send_data(data, false)
}

/// The answer to a call whose `grpc-timeout` passed (etcd's: the context's error).
fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("context deadline exceeded")
}

/// The call's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit); a header
/// that does not parse is ignored, as tonic ignores it.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Serves any other request through the front service, in a task of its own: the
/// request's body and the answer's are piped between h2 and the service.
async fn bridge_call(mut service: BridgeService, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let deadline = grpc_timeout(request.headers());
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, Body::new(RecvBody { stream: body, data_done: false }));
    let answer = service.call(request);
    let response = match deadline {
        Some(deadline) => match tokio::time::timeout(deadline, answer).await {
            Ok(response) => response,
            Err(_) => {
                send_status_only(&mut respond, deadline_exceeded());
                return;
            }
        },
        None => answer.await,
    };
    let response = match response {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    let Ok(mut stream) = respond.send_response(Response::from_parts(parts, ()), end) else { return };
    if end {
        return;
    }
    loop {
        // The client may cancel (a watch closed): drop the service's body then.
        let frame = poll_fn(|cx| {
            if let Poll::Ready(_) = stream.poll_reset(cx) {
                return Poll::Ready(None);
            }
            http_body::Body::poll_frame(Pin::new(&mut body), cx).map(Some)
        })
        .await;
        let Some(frame) = frame else { return };
        match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!("client connection: answer body: {e}");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if send_data(&mut stream, data).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = stream.send_trailers(trailers);
                        return;
                    }
                }
            },
        }
    }
}

/// An h2 request body as an `http_body::Body` (hyper's `Incoming` for HTTP/2, in short).
struct RecvBody {
    stream: RecvStream,
    data_done: bool,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        let timeout = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(timeout("7n"), Some(Duration::from_nanos(7)));
        // More than 8 digits, no unit, an unknown unit: ignored.
        assert_eq!(timeout("123456789S"), None);
        assert_eq!(timeout("5"), None);
        assert_eq!(timeout("5x"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    /// Counts the wakes of the task polling a filter.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_the_connections_own_poll_polls_again_instead_of_waking_the_task() {
        let task = Arc::new(CountingWaker::default());
        let task_waker = std::task::Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let filter = Arc::new(SelfWakeFilter::default());
        let filtered = std::task::Waker::from(filter.clone());
        let wakes = || task.0.load(std::sync::atomic::Ordering::SeqCst);

        // Woken by itself twice, then ready: three rounds in one poll, the task not woken.
        let mut rounds = 0;
        let result = filter.poll(&mut cx, &filtered, |cx| {
            rounds += 1;
            if rounds < 3 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(rounds)
        });
        assert_eq!((result, rounds, wakes()), (Poll::Ready(3), 3, 0));

        // Pending with nothing woken: one round; a wake from elsewhere afterwards wakes
        // the task (a waker kept by what it waits on, as h2 and tokio keep it).
        let mut kept = None;
        let result: Poll<()> = filter.poll(&mut cx, &filtered, |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        assert_eq!((result, wakes()), (Poll::Pending, 0));
        kept.expect("kept").wake();
        assert_eq!(wakes(), 1);

        // Woken in every round: after the rounds' bound the task yields (wakes itself).
        let mut rounds = 0;
        let result: Poll<()> = filter.poll(&mut cx, &filtered, |cx| {
            rounds += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!((result, rounds, wakes()), (Poll::Pending, CONNECTION_REPOLLS_MAX, 2));
    }
}
