//! The production [`Transport`]: raft messages over TCP on the peer URLs.
//!
//! One long-lived outbound connection per peer, fed by a bounded queue and written in
//! batches (everything queued is encoded into one buffer per write); inbound
//! connections are accepted on the listen-peer-urls and decoded into the member's inbox.
//! Framing: a little-endian `u32` length, then the protobuf-encoded `eraftpb.Message`.
//! A snapshot goes in a frame of its own kind (length [`PEER_SNAPSHOT_FRAME_MARK`]): the
//! message without its data, then the data, written from the snapshot's own buffer and
//! read into the buffer the received message keeps — a snapshot is never copied to be
//! sent or received (at 1 GiB of state the leader held three copies of it before, the
//! new member two), and it may be larger than a `u32` frame.
//! Raft tolerates loss, so a full queue or a broken connection drops messages.
//!
//! The loop writes to a peer itself while it can (the *direct lane*, see [`DirectLane`]):
//! over plain TCP, while the peer's writer task has nothing queued or being written, the
//! loop encodes its messages and writes them to the socket without blocking, and only
//! what the socket does not take at once (or anything while the writer is busy, a
//! snapshot, a TLS connection, messages past [`PEER_DIRECT_LANE_BYTES_MAX`] of payload
//! — a follower catching up — encoded by the writer off the loop) goes through the
//! queue. Why: every message handed to a
//! writer task woke it, and a leader's append to two followers woke two — the second
//! made the runtime wake its other worker thread (a futex wake, then the task stolen
//! onto the other CPU), on the path of every write. On this machine's virtual CPUs a
//! cross-CPU wake costs tens of microseconds; a trace of three members with one client
//! showed ~3.6 futex calls per put on the leader and on the forwarding follower, and
//! nearly none on the other follower, whose loop wakes no second task.
//!
//! Every connection starts with a handshake: the magic `detcdpr1`, the cluster id and
//! the sender's member id (little-endian `u64`s). The listener closes a connection from
//! another cluster or from a member it does not know (or that was removed) before
//! reading any message, so a stray process cannot inject raft messages. A frame's body
//! is read as it arrives: a peer that claims a huge length makes the reader allocate
//! only what it really sends.
//!
//! The peers follow the applied member table (`Transport::set_peers`): a member added
//! gets a writer, a removed one loses it and is refused from then on — its next message
//! on a connection opened before is answered with the removal notice, as a new
//! connection's handshake is. A connection that
//! opens with the magic `detcdmq1` instead asks who the members are (a member joining
//! with `--initial-cluster-state existing` learns its id and the cluster id this way,
//! as etcd asks its peers' `/members`): it is answered with one frame holding an
//! `etcdserverpb.MemberListResponse` and closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost::Message as _;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::{PeerDirectory, Transport};
use crate::tls::PeerTls;

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Messages encoded into one write.
pub const PEER_BATCH_MESSAGES_MAX: usize = 256;
/// Largest ordinary frame accepted from a peer (the frame length is a `u32`; its
/// largest value marks a snapshot frame).
pub const PEER_FRAME_BYTES_MAX: usize = u32::MAX as usize - 1;
/// The frame length that announces a snapshot frame: then a `u32` length and the
/// `MsgSnapshot` without its data, then a `u64` length and the data.
pub const PEER_SNAPSHOT_FRAME_MARK: u32 = u32::MAX;
/// Largest snapshot message without its data (metadata and the member configuration).
pub const PEER_SNAPSHOT_HEADER_BYTES_MAX: usize = 16 << 20;
/// Largest snapshot accepted from a peer (64 GiB; etcd's largest quota is 8 GiB). The
/// frame is not the limit: a snapshot file (a protobuf message) holds at most 4 GiB.
pub const PEER_SNAPSHOT_DATA_BYTES_MAX: u64 = 64 << 30;
/// A reader's frame buffer larger than this after a frame is given back, not kept for
/// the connection's life.
pub const PEER_READ_BUFFER_KEPT_BYTES_MAX: usize = 4 << 20;
/// Pause between reconnection attempts.
pub const PEER_RECONNECT_DELAY_MS: u64 = 100;
/// Pause after a failed accept (e.g. out of file descriptors) before the next one.
pub const PEER_ACCEPT_RETRY_DELAY_MS: u64 = 100;
/// How often a member probes each peer connection for its round-trip time.
pub const PEER_PROBE_INTERVAL_MS: u64 = 5000;
/// A probe is a frame of length 0 (no raft message is empty); the peer answers it with
/// these 8 bytes on the same connection.
pub const PEER_PROBE_ANSWER: &[u8; 8] = b"detcdpo1";

/// Where measured round trips go: (peer id, round trip).
pub type RoundTripObserver = Arc<dyn Fn(u64, Duration) + Send + Sync>;

/// How long an accepted peer connection may take to complete its TLS handshake.
pub const PEER_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5000;
/// First bytes of every peer connection.
pub const PEER_HANDSHAKE_MAGIC: &[u8; 8] = b"detcdpr1";
/// First bytes of a membership query.
pub const MEMBERS_QUERY_MAGIC: &[u8; 8] = b"detcdmq1";
/// What a member writes back, then closes, to a connection from a member removed from
/// the cluster (etcd answers such a member's messages with "410 Gone"): the removed
/// member stops.
pub const PEER_REMOVED_NOTICE: &[u8; 8] = b"detcdrm1";
/// Largest membership answer a joining member reads.
pub const MEMBERS_ANSWER_BYTES_MAX: usize = 1 << 20;
const PEER_HANDSHAKE_BYTES: usize = 8 + 8 + 8;

/// Who is talking on a peer connection, and to which cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster_id: u64,
    pub member_id: u64,
}

fn encode_handshake(identity: PeerIdentity) -> [u8; PEER_HANDSHAKE_BYTES] {
    let mut bytes = [0u8; PEER_HANDSHAKE_BYTES];
    bytes[0..8].copy_from_slice(PEER_HANDSHAKE_MAGIC);
    bytes[8..16].copy_from_slice(&identity.cluster_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&identity.member_id.to_le_bytes());
    bytes
}

/// The sender's member id, if the handshake is ours and names `cluster_id`.
pub fn check_handshake(bytes: &[u8; PEER_HANDSHAKE_BYTES], cluster_id: u64) -> Result<u64, String> {
    if &bytes[0..8] != PEER_HANDSHAKE_MAGIC {
        return Err("not a detcd peer connection".into());
    }
    let their_cluster = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if their_cluster != cluster_id {
        return Err(format!("peer belongs to cluster {their_cluster:016x}, not {cluster_id:016x}"));
    }
    Ok(u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")))
}

/// `host:port` of a peer URL (`http://host:port`).
pub fn addr_of_peer_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let addr = rest.trim_end_matches('/');
    (!addr.is_empty() && !addr.contains('/')).then(|| addr.to_string())
}

/// Who the listener accepts and what a membership query is told: the applied member
/// table, shared by the transport (which updates it) and the listeners.
pub type SharedDirectory = Arc<RwLock<PeerDirectory>>;

/// A peer connection: plain TCP, or TLS over it (an `https://` peer URL).
pub trait PeerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> PeerStream for S {}

/// Where a peer is dialled: `host:port`, and whether over TLS (its URL is `https://`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PeerAddr {
    addr: String,
    tls: bool,
}

/// An outbound peer connection: plain TCP (shared with the loop's direct lane), or TLS
/// (written by the writer task alone).
enum PeerConnection {
    Plain(TcpStream),
    Tls(Box<dyn PeerStream>),
}

impl PeerConnection {
    fn into_stream(self) -> Box<dyn PeerStream> {
        match self {
            PeerConnection::Plain(stream) => Box::new(stream),
            PeerConnection::Tls(stream) => stream,
        }
    }
}

/// The writing side of a [`PeerConnection`].
enum PeerWriteHalf {
    Plain(Arc<TcpStream>),
    Tls(tokio::io::WriteHalf<Box<dyn PeerStream>>),
}

impl PeerWriteHalf {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            PeerWriteHalf::Plain(stream) => write_all_shared(stream, bytes).await,
            PeerWriteHalf::Tls(stream) => stream.write_all(bytes).await,
        }
    }

    /// TLS holds written records until flushed (plain TCP: nothing to do).
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PeerWriteHalf::Plain(_) => Ok(()),
            PeerWriteHalf::Tls(stream) => stream.flush().await,
        }
    }
}

/// Writes all of `bytes` to a stream others may write to as well (the caller holds the
/// right to write, see [`DirectLane`]).
async fn write_all_shared(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buffer.len()` bytes from a stream shared with its writer.
async fn read_exact_shared(stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        stream.readable().await?;
        match stream.try_read(&mut buffer[filled..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes as much of `bytes` as the socket takes now, without waiting: how many bytes
/// went, or the error that stopped the first write.
fn write_without_waiting(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.try_write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if written == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(written)
}

/// Dials `peer`: TCP with no delay, then TLS when its URL asks for it.
async fn dial(peer: &PeerAddr, tls: Option<&PeerTls>) -> Result<PeerConnection, String> {
    let stream = TcpStream::connect(&peer.addr).await.map_err(|e| format!("connect to {}: {e}", peer.addr))?;
    let _ = stream.set_nodelay(true);
    if !peer.tls {
        return Ok(PeerConnection::Plain(stream));
    }
    let tls = tls.ok_or_else(|| format!("peer {} is https, but this member has no peer TLS configured", peer.addr))?;
    let name = PeerTls::server_name(&peer.addr)?;
    let stream = tls.connector.connect(name, stream).await.map_err(|e| format!("TLS handshake with {}: {e}", peer.addr))?;
    Ok(PeerConnection::Tls(Box::new(stream)))
}

/// Most bytes the loop encodes for one peer in one `send` (see [`DirectLane`]), counted
/// as [`payload_bytes`]: a follower catching up is sent up to `RAFT_INFLIGHT_APPENDS_MAX`
/// appends of `RAFT_APPEND_BYTES_MAX` at once, which the writer task encodes off the loop.
pub const PEER_DIRECT_LANE_BYTES_MAX: usize = 256 << 10;

/// The payload `message` carries (its entries' data and context, a snapshot's data):
/// its frame is this long plus a few bytes per entry and a header. What the direct lane
/// counts before it encodes a message, so a large one is encoded off the loop.
fn payload_bytes(message: &Message) -> usize {
    let entries: usize = message.get_entries().iter().map(|entry| entry.data.len() + entry.context.len()).sum();
    entries + message.get_snapshot().data.len()
}

/// What a peer's writer task is handed, in the order it writes them.
enum Outgoing {
    /// A message to encode and write.
    Message(Message),
    /// Frames the loop encoded itself that the socket did not take whole (or that it
    /// did not write at all): the rest, written before anything queued after it, then
    /// the body of the last frame when it is large (see [`encode_frame`]), uncopied.
    Rest { frames: Vec<u8>, large_body: Option<bytes::Bytes> },
}

/// The loop's right to write to a peer's socket itself. The writer task offers its
/// plain-TCP connection here whenever it has nothing queued and nothing being written,
/// and takes it back before writing anything of its own (a probe); the loop takes it
/// when it must queue (the socket did not take everything, a snapshot). Both sides
/// decide under this lock, and the loop queues only under it, so the connection is
/// offered only while the queue is empty: nothing the loop writes itself overtakes a
/// queued message, and nobody writes while another's frame is half written.
#[derive(Default)]
struct DirectLane {
    idle_connection: Mutex<Option<Arc<TcpStream>>>,
}

/// A peer as the transport knows it: the address its writer dials, the writer's queue,
/// and the direct lane to its connection.
struct PeerLink {
    addr: PeerAddr,
    queue: mpsc::Sender<Outgoing>,
    lane: Arc<DirectLane>,
}

impl PeerLink {
    /// Sends `messages` (all to this peer, in order); false if any was dropped at once.
    fn send(&self, messages: Vec<Message>) -> bool {
        let mut idle = self.lane.idle_connection.lock().expect("direct lane lock");
        let mut all_queued = true;
        let mut messages = messages.into_iter().peekable();
        if let Some(connection) = idle.as_ref() {
            // The loop encodes messages itself up to the lane's bound, stopping at a
            // snapshot or at a message past the bound (encoded by the writer, off the
            // loop); a large frame body (an append of many empty entries) ends the lane
            // too, and is handed over uncopied.
            let mut buffer = Vec::new();
            let mut large_body = None;
            let mut lane_bytes = 0;
            while let Some(message) = messages.next_if(|m| m.get_msg_type() != MessageType::MsgSnapshot && lane_bytes + payload_bytes(m) <= PEER_DIRECT_LANE_BYTES_MAX) {
                lane_bytes += payload_bytes(&message);
                large_body = encode_frame(&message, &mut buffer);
                if large_body.is_some() {
                    break;
                }
            }
            let everything_encoded = messages.peek().is_none() && large_body.is_none();
            let written = if everything_encoded { write_without_waiting(connection, &buffer).unwrap_or(0) } else { 0 };
            if everything_encoded && written == buffer.len() {
                return true;
            }
            // The writer finishes the frames and writes what is left (or finds the
            // connection broken and dials again, as after any failed write): it owns
            // the connection until it offers it again. Its queue is empty while it
            // offers the connection, so the rest of a frame is never dropped as full.
            buffer.drain(..written);
            if !buffer.is_empty() || large_body.is_some() {
                all_queued &= self.queue.try_send(Outgoing::Rest { frames: buffer, large_body }).is_ok();
            }
        }
        *idle = None;
        for message in messages {
            // A full queue means the peer is far behind or gone: drop, raft retries.
            all_queued &= self.queue.try_send(Outgoing::Message(message)).is_ok();
        }
        all_queued
    }
}

/// The peers that told this member it was removed (each writer adds its peer's id).
type RemovalNotices = Arc<Mutex<std::collections::BTreeSet<u64>>>;

/// Outbound side: one queue and writer task per peer, and the loop's direct lane.
pub struct TcpTransport {
    identity: PeerIdentity,
    /// Per peer: the address its writer dials, its queue and direct lane.
    queues: Mutex<BTreeMap<u64, PeerLink>>,
    tls: Option<Arc<PeerTls>>,
    directory: SharedDirectory,
    /// The peers that said this member was removed from the cluster.
    removed: RemovalNotices,
    round_trips: Option<RoundTripObserver>,
}

impl TcpTransport {
    /// A transport that introduces itself as `identity`; its peers come with the first
    /// `set_peers` (the member calls it when it opens).
    pub fn start(identity: PeerIdentity, tls: Option<Arc<PeerTls>>) -> Self {
        Self { identity, queues: Mutex::new(BTreeMap::new()), tls, directory: SharedDirectory::default(), removed: Arc::default(), round_trips: None }
    }

    /// Probes every peer connection and reports its round trips to `observer`.
    pub fn with_round_trip_observer(mut self, observer: RoundTripObserver) -> Self {
        self.round_trips = Some(observer);
        self
    }

    /// The member table the listeners check connections against.
    pub fn directory(&self) -> SharedDirectory {
        self.directory.clone()
    }
}

impl Transport for TcpTransport {
    fn set_peers(&self, peers: &PeerDirectory) {
        let mut queues = self.queues.lock().expect("queues lock");
        let wanted: BTreeMap<u64, PeerAddr> = peers
            .members
            .iter()
            .filter(|(id, _)| **id != self.identity.member_id)
            .filter_map(|(id, (urls, _))| {
                urls.iter().find_map(|u| addr_of_peer_url(u).map(|addr| (*id, PeerAddr { addr, tls: u.starts_with("https://") })))
            })
            .collect();
        // Dropping a queue ends its writer (and its connection, once the lane lets go).
        queues.retain(|id, link| wanted.get(id) == Some(&link.addr));
        for (id, addr) in wanted {
            queues.entry(id).or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
                let probe = self.round_trips.clone().map(|observer| (id, observer));
                let notices = (id, self.removed.clone());
                let lane = Arc::new(DirectLane::default());
                let writer = PeerWriter { identity: self.identity, peer: addr.clone(), tls: self.tls.clone(), lane: lane.clone() };
                tokio::spawn(writer.run(receiver, notices, probe));
                PeerLink { addr, queue: sender, lane }
            });
        }
        *self.directory.write().expect("directory lock") = peers.clone();
    }

    fn removal_notices(&self) -> std::collections::BTreeSet<u64> {
        self.removed.lock().expect("removal notices lock").clone()
    }

    fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        let mut by_peer: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for message in messages {
            by_peer.entry(message.to).or_default().push(message);
        }
        let queues = self.queues.lock().expect("queues lock");
        let mut unreachable = Vec::new();
        for (to, messages) in by_peer {
            let sent = queues.get(&to).is_some_and(|link| link.send(messages));
            if !sent {
                unreachable.push(to);
            }
        }
        unreachable
    }
}

/// A frame body at least this large (a snapshot) is written from its own buffer after
/// the batch before it, not copied into the batch.
pub const PEER_DIRECT_WRITE_BYTES_MIN: usize = 1 << 20;

/// Appends `message`'s frame to `buffer`, or only its length when the body is large:
/// then the body is returned, to be written right after the buffer. A large snapshot
/// gets a snapshot frame (see [`encode_snapshot_frame`]).
fn encode_frame(message: &Message, buffer: &mut Vec<u8>) -> Option<bytes::Bytes> {
    if message.get_msg_type() == MessageType::MsgSnapshot && message.get_snapshot().data.len() >= PEER_DIRECT_WRITE_BYTES_MIN {
        return encode_snapshot_frame(message, buffer);
    }
    let body = message.write_to_bytes().expect("encoding a raft message cannot fail");
    let Ok(len) = u32::try_from(body.len()) else {
        // Larger than a frame can say (a snapshot of a store over 4 GiB): dropped, as
        // the network drops messages; raft hears of the snapshot's failure no sooner
        // than a lost one.
        tracing::warn!("dropped a {}-byte raft message to {:016x}: larger than a peer frame", body.len(), message.to);
        return None;
    };
    buffer.extend_from_slice(&len.to_le_bytes());
    if body.len() >= PEER_DIRECT_WRITE_BYTES_MIN {
        return Some(body.into());
    }
    buffer.extend_from_slice(&body);
    None
}

/// Appends a snapshot frame's mark and header (the message without its data) to
/// `buffer`, and returns the data — a reference to the snapshot's own buffer — to be
/// written right after it.
fn encode_snapshot_frame(message: &Message, buffer: &mut Vec<u8>) -> Option<bytes::Bytes> {
    let data = message.get_snapshot().data.clone();
    let mut header = message.clone();
    header.mut_snapshot().data = bytes::Bytes::new();
    let header_body = header.write_to_bytes().expect("encoding a raft message cannot fail");
    if header_body.len() > PEER_SNAPSHOT_HEADER_BYTES_MAX || data.len() as u64 > PEER_SNAPSHOT_DATA_BYTES_MAX {
        // Dropped, as the network drops messages: raft hears of the snapshot's failure
        // no sooner than a lost one.
        tracing::warn!("dropped a snapshot of {} bytes to {:016x}: larger than a peer accepts", data.len(), message.to);
        return None;
    }
    buffer.extend_from_slice(&PEER_SNAPSHOT_FRAME_MARK.to_le_bytes());
    buffer.extend_from_slice(&(header_body.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&header_body);
    buffer.extend_from_slice(&(data.len() as u64).to_le_bytes());
    Some(data)
}

/// Reads a snapshot frame after its mark: the message, then its data straight into the
/// buffer the message keeps.
async fn read_snapshot_frame<R: AsyncReadExt + Unpin>(reader: &mut R) -> Result<Message, String> {
    let header_len = reader.read_u32_le().await.map_err(|e| e.to_string())? as usize;
    if header_len > PEER_SNAPSHOT_HEADER_BYTES_MAX {
        return Err(format!("a snapshot header of {header_len} bytes"));
    }
    let mut header = Vec::new();
    read_frame_body(reader, header_len, &mut header).await.map_err(|e| e.to_string())?;
    let mut message = Message::parse_from_bytes(&header).map_err(|e| e.to_string())?;
    if message.get_msg_type() != MessageType::MsgSnapshot {
        return Err(format!("a snapshot frame holding a {:?}", message.get_msg_type()));
    }
    let data_len = reader.read_u64_le().await.map_err(|e| e.to_string())?;
    if data_len > PEER_SNAPSHOT_DATA_BYTES_MAX {
        return Err(format!("a snapshot of {data_len} bytes"));
    }
    let mut data = Vec::new();
    read_frame_body(reader, data_len as usize, &mut data).await.map_err(|e| e.to_string())?;
    data.shrink_to_fit();
    message.mut_snapshot().data = data.into();
    Ok(message)
}

/// A peer's writer task: dials the peer, writes what is queued for it (in batches), and
/// offers its idle plain-TCP connection to the loop (see [`DirectLane`]).
struct PeerWriter {
    identity: PeerIdentity,
    peer: PeerAddr,
    tls: Option<Arc<PeerTls>>,
    lane: Arc<DirectLane>,
}

impl PeerWriter {
    /// Takes the connection back from the direct lane: from then on only this task writes.
    fn take_lane(&self) {
        *self.lane.idle_connection.lock().expect("direct lane lock") = None;
    }

    async fn run(
        self,
        mut queue: mpsc::Receiver<Outgoing>,
        (peer_id, removed): (u64, RemovalNotices),
        probe: Option<(u64, RoundTripObserver)>,
    ) {
        let mut buffer = Vec::new();
        let mut probe_timer = tokio::time::interval(Duration::from_millis(PEER_PROBE_INTERVAL_MS));
        probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last dial error logged: a peer that stays down is logged once, not per retry.
        let mut last_error = String::new();
        loop {
            self.take_lane();
            let connection = match dial(&self.peer, self.tls.as_deref()).await {
                Ok(connection) => connection,
                Err(error) => {
                    // A refused connection is a peer that is down; anything else (TLS) is worth a line.
                    if error != last_error && !error.contains("Connection refused") {
                        tracing::warn!("cannot reach peer: {error}");
                    }
                    last_error = error;
                    tokio::time::sleep(Duration::from_millis(PEER_RECONNECT_DELAY_MS)).await;
                    // Drop what queued up while the peer was unreachable: it is stale now.
                    while queue.try_recv().is_ok() {}
                    continue;
                }
            };
            last_error.clear();
            // The peer answers probes on this connection, and tells this member if it was
            // removed. (When the probe was sent: the answer's round trip.)
            let removed = removed.clone();
            let probe_sent: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
            let probe_answer = (probe.clone(), probe_sent.clone());
            let on_notice = move |notice: &[u8; 8]| -> bool {
                if notice == PEER_REMOVED_NOTICE {
                    removed.lock().expect("removal notices lock").insert(peer_id);
                    return false;
                }
                let sent = probe_answer.1.lock().expect("probe lock").take();
                if let (PEER_PROBE_ANSWER, Some(sent), Some((peer, observer))) = (notice, sent, &probe_answer.0) {
                    observer(*peer, sent.elapsed());
                }
                true
            };
            let (mut stream, plain) = match connection {
                PeerConnection::Plain(stream) => {
                    let stream = Arc::new(stream);
                    let reader = stream.clone();
                    tokio::spawn(async move {
                        let mut notice = [0u8; 8];
                        while read_exact_shared(&reader, &mut notice).await.is_ok() && on_notice(&notice) {}
                    });
                    (PeerWriteHalf::Plain(stream.clone()), Some(stream))
                }
                PeerConnection::Tls(stream) => {
                    let (mut from_peer, to_peer) = tokio::io::split(stream);
                    tokio::spawn(async move {
                        let mut notice = [0u8; 8];
                        while from_peer.read_exact(&mut notice).await.is_ok() && on_notice(&notice) {}
                    });
                    (PeerWriteHalf::Tls(to_peer), None)
                }
            };
            if stream.write_all(&encode_handshake(self.identity)).await.is_err() || stream.flush().await.is_err() {
                continue;
            }
            loop {
                // Nothing queued, nothing being written: the loop may write itself.
                if let Some(plain) = &plain {
                    let mut idle = self.lane.idle_connection.lock().expect("direct lane lock");
                    if queue.is_empty() {
                        *idle = Some(plain.clone());
                    }
                }
                let first = tokio::select! {
                    biased;
                    outgoing = queue.recv() => match outgoing {
                        Some(outgoing) => outgoing,
                        None => {
                            self.take_lane();
                            return;
                        }
                    },
                    _ = probe_timer.tick(), if probe.is_some() => {
                        // Taken back under the lane's lock: if the loop half wrote a frame
                        // just before, its rest is queued and goes first (the probe waits
                        // for the next tick).
                        let rest_queued = {
                            let mut idle = self.lane.idle_connection.lock().expect("direct lane lock");
                            *idle = None;
                            !queue.is_empty()
                        };
                        if rest_queued {
                            continue;
                        }
                        // A probe still unanswered is lost; the next one replaces it.
                        *probe_sent.lock().expect("probe lock") = Some(std::time::Instant::now());
                        if stream.write_all(&0u32.to_le_bytes()).await.is_err() || stream.flush().await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                // The loop queues only after taking the lane back: this task owns the connection.
                buffer.clear();
                let mut large_body = encode_outgoing(first, &mut buffer);
                for _ in 1..PEER_BATCH_MESSAGES_MAX {
                    if large_body.is_some() {
                        break;
                    }
                    match queue.try_recv() {
                        Ok(outgoing) => large_body = encode_outgoing(outgoing, &mut buffer),
                        Err(_) => break,
                    }
                }
                if stream.write_all(&buffer).await.is_err() {
                    break;
                }
                if let Some(body) = large_body {
                    if stream.write_all(&body).await.is_err() {
                        break;
                    }
                }
                if stream.flush().await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Appends what `outgoing` writes to `buffer` (see [`encode_frame`]).
fn encode_outgoing(outgoing: Outgoing, buffer: &mut Vec<u8>) -> Option<bytes::Bytes> {
    match outgoing {
        Outgoing::Message(message) => encode_frame(&message, buffer),
        Outgoing::Rest { frames, large_body } => {
            buffer.extend_from_slice(&frames);
            large_body
        }
    }
}

/// Connections a listening socket queues before they are accepted; the kernel caps it
/// at net.core.somaxconn. Go's listeners (etcd's) ask for somaxconn too. std's and mio's
/// 128 made the 129th client of a burst connecting at once wait for a SYN retransmit:
/// 256 clients starting together saw requests of 1 s.
pub const ACCEPT_BACKLOG_CONNECTIONS_MAX: u32 = 4096;

/// Binds and listens on `addr` with [`ACCEPT_BACKLOG_CONNECTIONS_MAX`] (address reuse on,
/// as std's `bind` sets it, so a restarted member gets its port back at once).
pub fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG_CONNECTIONS_MAX)
}

/// [`bind_listener`] on the first of `addr`'s addresses that binds (as tokio's
/// `TcpListener::bind` tries them).
async fn bind_first_address(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(addr).await? {
        match bind_listener(resolved) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr} resolves to nothing"))))
}

/// Accepts peer connections on `addr` from members of `cluster_id` in `directory` (not
/// removed), and forwards every decoded message to `inbox`; answers membership queries.
/// With `tls`, every connection must complete a TLS handshake (and carry a certificate
/// with `--peer-cert-allowed-cn`'s name when that is set) before a byte is read.
pub async fn listen(
    addr: &str,
    tls: Option<Arc<PeerTls>>,
    cluster_id: u64,
    directory: SharedDirectory,
    inbox: mpsc::Sender<Message>,
) -> std::io::Result<()> {
    let listener = bind_first_address(addr).await?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(PEER_ACCEPT_RETRY_DELAY_MS)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tls, directory, inbox) = (tls.clone(), directory.clone(), inbox.clone());
            tokio::spawn(async move {
                let stream: Box<dyn PeerStream> = match tls {
                    None => Box::new(stream),
                    Some(tls) => {
                        let handshake = tokio::time::timeout(Duration::from_millis(PEER_TLS_HANDSHAKE_TIMEOUT_MS), tls.acceptor.accept(stream));
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::warn!("refused a peer connection: TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                        if let Err(reason) = tls.check_peer_certificate(stream.get_ref().1.peer_certificates()) {
                            tracing::warn!("refused a peer connection: {reason}");
                            return;
                        }
                        Box::new(stream)
                    }
                };
                run_peer_reader(stream, cluster_id, directory, inbox).await;
            });
        }
    });
    Ok(())
}

/// Reads one frame body of `len` bytes into `body`, growing it only as bytes arrive.
async fn read_frame_body<R: AsyncReadExt + Unpin>(reader: &mut R, len: usize, body: &mut Vec<u8>) -> std::io::Result<()> {
    body.clear();
    let read = reader.take(len as u64).read_to_end(body).await?;
    if read != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The membership answer: the cluster id and every member with its peer URLs.
fn members_answer(cluster_id: u64, directory: &PeerDirectory) -> Vec<u8> {
    use crate::pb::etcdserverpb::{Member, MemberListResponse, ResponseHeader};
    let members = directory
        .members
        .iter()
        .map(|(id, (peer_urls, is_learner))| Member { id: *id, peer_ur_ls: peer_urls.clone(), is_learner: *is_learner, ..Member::default() })
        .collect();
    let answer = MemberListResponse { header: Some(ResponseHeader { cluster_id, ..ResponseHeader::default() }), members };
    let body = answer.encode_to_vec();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Asks the member at `addr` (`host:port` of its peer URL) who the members are:
/// (cluster id, members with their peer URLs).
pub async fn query_members(url: &str, tls: Option<&PeerTls>) -> Result<(u64, Vec<crate::pb::etcdserverpb::Member>), String> {
    let addr = addr_of_peer_url(url).ok_or_else(|| format!("{url:?} is not a peer URL"))?;
    let mut stream = dial(&PeerAddr { addr: addr.clone(), tls: url.starts_with("https://") }, tls).await?.into_stream();
    let mut query = [0u8; PEER_HANDSHAKE_BYTES];
    query[0..8].copy_from_slice(MEMBERS_QUERY_MAGIC);
    stream.write_all(&query).await.map_err(|e| format!("ask {addr}: {e}"))?;
    stream.flush().await.map_err(|e| format!("ask {addr}: {e}"))?;
    let mut len_bytes = [0u8; 4];
    stream.read_exact(&mut len_bytes).await.map_err(|e| format!("read the answer of {addr}: {e}"))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MEMBERS_ANSWER_BYTES_MAX {
        return Err(format!("{addr} answered with {len} bytes"));
    }
    let mut body = Vec::new();
    read_frame_body(&mut stream, len, &mut body).await.map_err(|e| format!("read the answer of {addr}: {e}"))?;
    let answer = crate::pb::etcdserverpb::MemberListResponse::decode(body.as_slice()).map_err(|e| format!("{addr} answered: {e}"))?;
    Ok((answer.header.map_or(0, |h| h.cluster_id), answer.members))
}

async fn run_peer_reader(stream: Box<dyn PeerStream>, cluster_id: u64, directory: SharedDirectory, inbox: mpsc::Sender<Message>) {
    let mut reader = tokio::io::BufReader::new(stream);
    let mut handshake = [0u8; PEER_HANDSHAKE_BYTES];
    if reader.read_exact(&mut handshake).await.is_err() {
        return;
    }
    if &handshake[0..8] == MEMBERS_QUERY_MAGIC {
        let answer = members_answer(cluster_id, &directory.read().expect("directory lock"));
        let _ = reader.get_mut().write_all(&answer).await;
        let _ = reader.get_mut().flush().await;
        return;
    }
    let known = |from: u64| {
        let directory = directory.read().expect("directory lock");
        directory.members.contains_key(&from) && !directory.removed.contains(&from)
    };
    let removed = |from: u64| directory.read().expect("directory lock").removed.contains(&from);
    let from = match check_handshake(&handshake, cluster_id) {
        Ok(from) if known(from) => from,
        Ok(from) if removed(from) => {
            tracing::warn!("refused a peer connection from removed member {from:016x}");
            let _ = reader.get_mut().write_all(PEER_REMOVED_NOTICE).await;
            let _ = reader.get_mut().flush().await;
            return;
        }
        Ok(from) => {
            tracing::warn!("refused a peer connection from unknown member {from:016x}");
            return;
        }
        Err(reason) => {
            tracing::warn!("refused a peer connection: {reason}");
            return;
        }
    };
    let mut body = Vec::new();
    loop {
        let mut len_bytes = [0u8; 4];
        if reader.read_exact(&mut len_bytes).await.is_err() {
            return;
        }
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 {
            // A probe: answered at once, on this connection.
            let writer = reader.get_mut();
            if writer.write_all(PEER_PROBE_ANSWER).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            continue;
        }
        let message = if len == PEER_SNAPSHOT_FRAME_MARK as usize {
            match read_snapshot_frame(&mut reader).await {
                Ok(message) => message,
                Err(reason) => {
                    tracing::warn!("closed the connection of peer {from:016x}: {reason}");
                    return;
                }
            }
        } else {
            if len > PEER_FRAME_BYTES_MAX {
                return;
            }
            if read_frame_body(&mut reader, len, &mut body).await.is_err() {
                return;
            }
            let Ok(message) = Message::parse_from_bytes(&body) else { return };
            if body.capacity() > PEER_READ_BUFFER_KEPT_BYTES_MAX {
                body = Vec::new();
            }
            message
        };
        // A member speaks only for itself.
        if message.from != from {
            return;
        }
        // Removed since the connection opened: told so (a removed member waiting for a
        // successor sends membership probes to hear it), and refused from then on.
        if removed(from) {
            tracing::warn!("closed the connection of peer {from:016x}: it was removed from the cluster");
            let _ = reader.get_mut().write_all(PEER_REMOVED_NOTICE).await;
            let _ = reader.get_mut().flush().await;
            return;
        }
        if inbox.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of clients larger than std's default backlog (128) connecting before any
    /// is accepted: each connect completes at once (it is queued), none waits for a SYN
    /// retransmit (1 s).
    #[tokio::test]
    async fn a_burst_of_connections_beyond_128_is_queued_without_retransmits() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let burst = 300;
        let connects: Vec<_> = (0..burst).map(|_| tokio::spawn(TcpStream::connect(addr))).collect();
        // The first SYN retransmit comes after 1 s: all must be connected before it.
        let streams = tokio::time::timeout(Duration::from_millis(950), async {
            let mut streams = Vec::new();
            for connect in connects {
                streams.push(connect.await.unwrap().unwrap());
            }
            streams
        })
        .await
        .expect("a connect waited for a SYN retransmit");
        for _ in 0..burst {
            let (_stream, _) = listener.accept().await.unwrap();
        }
        assert_eq!(streams.len(), burst);
    }

    /// A member removed while its connection is open hears it at its next message (a
    /// removed member waiting for a successor sends membership probes for that), and
    /// that message reaches nobody.
    #[tokio::test]
    async fn a_member_removed_while_connected_is_told_at_its_next_message() {
        let (cluster_id, (a, b)) = (7, (1, 2));
        let port = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let directory_of = |removed: &[u64]| PeerDirectory {
            members: [(a, (vec!["http://127.0.0.1:1".to_string()], false)), (b, (vec![format!("http://{addr}")], false))]
                .into_iter()
                .filter(|(id, _)| !removed.contains(id))
                .collect(),
            removed: removed.iter().copied().collect(),
        };
        let b_directory: SharedDirectory = Arc::new(RwLock::new(directory_of(&[])));
        let (inbox, mut b_inbox) = mpsc::channel(16);
        listen(&addr, None, cluster_id, b_directory.clone(), inbox).await.unwrap();
        let a_transport = TcpTransport::start(PeerIdentity { cluster_id, member_id: a }, None);
        a_transport.set_peers(&directory_of(&[]));
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        (heartbeat.from, heartbeat.to, heartbeat.term) = (a, b, 3);
        let delivered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                a_transport.send(vec![heartbeat.clone()]);
                if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), b_inbox.recv()).await {
                    return message;
                }
            }
        });
        assert_eq!(delivered.await.expect("connected"), heartbeat);
        assert!(a_transport.removal_notices().is_empty());

        *b_directory.write().unwrap() = directory_of(&[a]);
        a_transport.send(vec![crate::consensus::membership::membership_probe(a, b)]);
        let told = tokio::time::timeout(Duration::from_secs(5), async {
            while !a_transport.removal_notices().contains(&b) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        told.await.expect("the removed member was told");
        assert!(b_inbox.try_recv().is_err(), "a removed member's message reached the member");
    }

    /// Messages the loop writes itself and messages the writer task writes (a frame the
    /// socket took only in part, then everything queued behind it, a snapshot, a large
    /// append) reach the peer whole and in the order sent, with a receiver too slow for
    /// the socket's buffers.
    #[tokio::test]
    async fn messages_written_by_the_loop_and_by_the_writer_arrive_whole_and_in_order() {
        let (cluster_id, (a, b)) = (7, (1, 2));
        let port = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let directory = PeerDirectory {
            members: [(a, (vec!["http://127.0.0.1:1".to_string()], false)), (b, (vec![format!("http://{addr}")], false))].into_iter().collect(),
            removed: Default::default(),
        };
        let (inbox, mut b_inbox) = mpsc::channel(1);
        listen(&addr, None, cluster_id, Arc::new(RwLock::new(directory.clone())), inbox).await.unwrap();
        let a_transport = TcpTransport::start(PeerIdentity { cluster_id, member_id: a }, None);
        a_transport.set_peers(&directory);
        let append = |sequence: u64, data_bytes: usize| {
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgAppend);
            (message.from, message.to, message.commit) = (a, b, sequence);
            let mut entry = raft::eraftpb::Entry::default();
            entry.index = sequence;
            entry.data = (0..data_bytes).map(|i| (i as u64 ^ sequence) as u8).collect::<Vec<u8>>().into();
            message.entries.push(entry);
            message
        };
        // Connected once a message gets through (the first wait in the queue for the dial).
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                assert!(a_transport.send(vec![append(0, 1)]).is_empty());
                if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), b_inbox.recv()).await {
                    return message;
                }
            }
        });
        assert_eq!(connected.await.expect("connected").commit, 0);
        while tokio::time::timeout(Duration::from_millis(200), b_inbox.recv()).await.is_ok() {}

        // ~21 MiB while the receiver takes nothing: the socket fills, the loop's writes
        // stop part way, and the writer finishes them and what queues behind.
        let mut sent = Vec::new();
        let mut sequence = 0;
        for batch in 0..600u64 {
            let mut messages = Vec::new();
            // One batch larger than the loop encodes itself.
            for _ in 0..=(if batch == 300 { 39 } else { batch % 3 }) {
                sequence += 1;
                let mut message = append(sequence, if sequence == 700 { PEER_DIRECT_WRITE_BYTES_MIN + 3 } else { 16 << 10 });
                if sequence == 400 {
                    message.set_msg_type(MessageType::MsgSnapshot);
                    message.mut_snapshot().data = vec![9; 100].into();
                }
                messages.push(message);
            }
            sent.extend(messages.clone());
            assert!(a_transport.send(messages).is_empty(), "nothing dropped at once (batch {batch})");
        }
        for expected in &sent {
            let received = tokio::time::timeout(Duration::from_secs(10), b_inbox.recv()).await.expect("in time").expect("open");
            assert_eq!(&received, expected, "message {}", expected.commit);
        }
        assert!(tokio::time::timeout(Duration::from_millis(200), b_inbox.recv()).await.is_err(), "nothing more");
    }

    /// The direct lane encodes on the loop only small messages up to its bound: a message
    /// past it and a snapshot go to the writer unencoded, after the frames encoded before
    /// them; a large frame body ends the lane and is handed over whole.
    #[tokio::test]
    async fn the_loop_encodes_only_small_messages_and_hands_the_rest_to_the_writer() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let connection = Arc::new(TcpStream::connect(listener.local_addr().unwrap()).await.unwrap());
        let (mut peer, _) = listener.accept().await.unwrap();
        let (queue, mut writer_queue) = mpsc::channel(16);
        let link = PeerLink { addr: PeerAddr { addr: String::new(), tls: false }, queue, lane: Arc::default() };
        let offer = || *link.lane.idle_connection.lock().unwrap() = Some(connection.clone());
        let append = |index: u64, data_bytes: usize| {
            let mut message = Message::default();
            message.set_msg_type(MessageType::MsgAppend);
            let mut entry = raft::eraftpb::Entry::default();
            (entry.index, entry.data) = (index, vec![7; data_bytes].into());
            message.entries.push(entry);
            message
        };
        let frame_of = |message: &Message| {
            let mut frame = Vec::new();
            assert!(encode_frame(message, &mut frame).is_none());
            frame
        };

        // Small messages: written by the loop, nothing queued.
        offer();
        let small = vec![append(1, 100), append(2, 100)];
        assert!(link.send(small.clone()));
        let mut received = vec![0; frame_of(&small[0]).len() + frame_of(&small[1]).len()];
        peer.read_exact(&mut received).await.unwrap();
        assert_eq!(received, [frame_of(&small[0]), frame_of(&small[1])].concat());
        assert!(writer_queue.try_recv().is_err());
        assert!(link.lane.idle_connection.lock().unwrap().is_some(), "the lane stays offered");

        // A message past the bound: the frames before it as the rest, it and everything
        // after it as messages; the lane is taken.
        let large = append(4, PEER_DIRECT_LANE_BYTES_MAX);
        assert!(link.send(vec![append(3, 100), large.clone(), append(5, 100)]));
        match writer_queue.try_recv().unwrap() {
            Outgoing::Rest { frames, large_body: None } => assert_eq!(frames, frame_of(&append(3, 100))),
            _ => panic!("the small frame's rest first"),
        }
        assert!(matches!(writer_queue.try_recv().unwrap(), Outgoing::Message(m) if m == large));
        assert!(matches!(writer_queue.try_recv().unwrap(), Outgoing::Message(m) if m.get_entries()[0].index == 5));
        assert!(writer_queue.try_recv().is_err());
        assert!(link.lane.idle_connection.lock().unwrap().is_none());

        // A snapshot first: nothing encoded on the loop.
        offer();
        let mut snapshot = Message::default();
        snapshot.set_msg_type(MessageType::MsgSnapshot);
        snapshot.mut_snapshot().data = vec![1; 10].into();
        assert!(link.send(vec![snapshot.clone(), append(6, 100)]));
        assert!(matches!(writer_queue.try_recv().unwrap(), Outgoing::Message(m) if m == snapshot));
        assert!(matches!(writer_queue.try_recv().unwrap(), Outgoing::Message(_)));

        // Many empty entries: a small payload in a body over `PEER_DIRECT_WRITE_BYTES_MIN`,
        // handed to the writer behind its length, not copied into the frames.
        offer();
        let mut many = Message::default();
        many.set_msg_type(MessageType::MsgAppend);
        many.entries = (0..150_000u64).map(|i| raft::eraftpb::Entry { index: (1 << 28) + i, ..Default::default() }).collect::<Vec<_>>().into();
        assert!(link.send(vec![append(7, 100), many.clone()]));
        match writer_queue.try_recv().unwrap() {
            Outgoing::Rest { frames, large_body: Some(body) } => {
                let small_frame = frame_of(&append(7, 100));
                assert_eq!(frames.len(), small_frame.len() + 4);
                assert_eq!(&frames[..small_frame.len()], &small_frame[..]);
                assert_eq!(u32::from_le_bytes(frames[small_frame.len()..].try_into().unwrap()) as usize, body.len());
                assert!(body.len() >= PEER_DIRECT_WRITE_BYTES_MIN);
                assert_eq!(Message::parse_from_bytes(&body).unwrap(), many);
            }
            _ => panic!("the frames and the large body, as one rest"),
        }
        assert!(writer_queue.try_recv().is_err());
    }

    #[test]
    fn handshake_names_the_cluster_and_the_member() {
        let bytes = encode_handshake(PeerIdentity { cluster_id: 7, member_id: 9 });
        assert_eq!(check_handshake(&bytes, 7), Ok(9));
        assert!(check_handshake(&bytes, 8).expect_err("other cluster").contains("cluster"));
        let mut garbage = bytes;
        garbage[0] = b'x';
        assert!(check_handshake(&garbage, 7).is_err());
    }

    #[tokio::test]
    async fn a_snapshot_travels_in_a_frame_of_its_own_without_a_copy() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        (message.from, message.to, message.term) = (1, 2, 3);
        message.mut_snapshot().mut_metadata().index = 77;
        message.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![1, 2];
        let data: Vec<u8> = (0..PEER_DIRECT_WRITE_BYTES_MIN + 5).map(|i| (i % 251) as u8).collect();
        message.mut_snapshot().data = data.clone().into();
        let mut buffer = Vec::new();
        let written = encode_frame(&message, &mut buffer).expect("the data is written from its own buffer");
        assert_eq!(written.as_ptr(), message.get_snapshot().data.as_ptr(), "the snapshot's buffer itself, not a copy");
        assert!(buffer.len() < 1024, "only the header is encoded: {} bytes", buffer.len());
        let mut stream = buffer.clone();
        stream.extend_from_slice(&written);
        let mut reader: &[u8] = &stream;
        assert_eq!(reader.read_u32_le().await.expect("mark"), PEER_SNAPSHOT_FRAME_MARK);
        let received = read_snapshot_frame(&mut reader).await.expect("a whole snapshot frame");
        assert_eq!(received, message);
        assert!(reader.is_empty());
        // Truncated anywhere: an error, never a message.
        for cut in [5, buffer.len() - 3, buffer.len() + 10, stream.len() - 1] {
            let mut reader: &[u8] = &stream[4..cut];
            assert!(read_snapshot_frame(&mut reader).await.is_err(), "cut at {cut}");
        }
        // A small snapshot still goes in an ordinary frame.
        message.mut_snapshot().data = vec![1, 2, 3].into();
        let mut small = Vec::new();
        assert!(encode_frame(&message, &mut small).is_none());
        assert_eq!(u32::from_le_bytes(small[..4].try_into().expect("4 bytes")) as usize, small.len() - 4);
    }

    #[tokio::test]
    async fn a_snapshot_frame_must_hold_a_snapshot_of_a_bounded_size() {
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        let header = append.write_to_bytes().expect("encodes");
        let mut stream = (header.len() as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&header);
        stream.extend_from_slice(&8u64.to_le_bytes());
        stream.extend_from_slice(&[0; 8]);
        let mut reader: &[u8] = &stream;
        assert!(read_snapshot_frame(&mut reader).await.expect_err("not a snapshot").contains("MsgAppend"));
        let mut snapshot = Message::default();
        snapshot.set_msg_type(MessageType::MsgSnapshot);
        let header = snapshot.write_to_bytes().expect("encodes");
        let mut stream = (header.len() as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&header);
        stream.extend_from_slice(&(PEER_SNAPSHOT_DATA_BYTES_MAX + 1).to_le_bytes());
        let mut reader: &[u8] = &stream;
        assert!(read_snapshot_frame(&mut reader).await.expect_err("too large").contains("bytes"));
        let mut reader: &[u8] = &((PEER_SNAPSHOT_HEADER_BYTES_MAX + 1) as u32).to_le_bytes();
        assert!(read_snapshot_frame(&mut reader).await.is_err());
    }

    #[tokio::test]
    async fn a_claimed_length_allocates_only_what_arrives() {
        let sent = vec![1u8; 10];
        let mut reader: &[u8] = &sent;
        let mut body = Vec::new();
        let result = read_frame_body(&mut reader, PEER_FRAME_BYTES_MAX, &mut body).await;
        assert!(result.is_err(), "a short frame is an error");
        assert!(body.capacity() < 1024 * 1024, "capacity {} grew with the claim", body.capacity());
    }
}
