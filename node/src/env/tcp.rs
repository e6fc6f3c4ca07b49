//! The production [`Transport`]: raft messages over TCP on the peer URLs.
//!
//! One long-lived outbound connection per peer, fed by a bounded queue and written in
//! batches (everything queued is encoded into one buffer per write); inbound
//! connections are accepted on the listen-peer-urls and decoded into the member's inbox.
//! Framing: a little-endian `u32` length, then the protobuf-encoded `eraftpb.Message`.
//! Raft tolerates loss, so a full queue or a broken connection drops messages.
//!
//! Every connection starts with a handshake: the magic `detcdpr1`, the cluster id and
//! the sender's member id (little-endian `u64`s). The listener closes a connection from
//! another cluster or from a member it does not know before reading any message, so a
//! stray process cannot inject raft messages. A frame's body is read as it arrives: a
//! peer that claims a huge length makes the reader allocate only what it really sends.

use std::collections::BTreeMap;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Transport;

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Messages encoded into one write.
pub const PEER_BATCH_MESSAGES_MAX: usize = 256;
/// Largest frame accepted from a peer (a snapshot travels in one message).
pub const PEER_FRAME_BYTES_MAX: usize = 1 << 30;
/// Pause between reconnection attempts.
pub const PEER_RECONNECT_DELAY_MS: u64 = 100;
/// Pause after a failed accept (e.g. out of file descriptors) before the next one.
pub const PEER_ACCEPT_RETRY_DELAY_MS: u64 = 100;
/// First bytes of every peer connection.
pub const PEER_HANDSHAKE_MAGIC: &[u8; 8] = b"detcdpr1";
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

/// Outbound side: one queue and writer task per peer.
pub struct TcpTransport {
    queues: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl TcpTransport {
    /// Starts a writer task for every peer (`member id -> host:port`); each connection
    /// introduces itself as `identity`.
    pub fn start(identity: PeerIdentity, peer_addrs: BTreeMap<u64, String>) -> Self {
        let mut queues = BTreeMap::new();
        for (member_id, addr) in peer_addrs {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            tokio::spawn(run_peer_writer(identity, addr, receiver));
            queues.insert(member_id, sender);
        }
        Self { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        let mut unreachable = Vec::new();
        for message in messages {
            let to = message.to;
            // A full queue means the peer is far behind or gone: drop, raft retries.
            let queued = self.queues.get(&to).is_some_and(|queue| queue.try_send(message).is_ok());
            if !queued && !unreachable.contains(&to) {
                unreachable.push(to);
            }
        }
        unreachable.sort_unstable();
        unreachable
    }
}

fn encode_frame(message: &Message, buffer: &mut Vec<u8>) {
    let body = message.write_to_bytes().expect("encoding a raft message cannot fail");
    let len = u32::try_from(body.len()).expect("raft message under 4 GiB");
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&body);
}

async fn run_peer_writer(identity: PeerIdentity, addr: String, mut queue: mpsc::Receiver<Message>) {
    let mut buffer = Vec::new();
    loop {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(PEER_RECONNECT_DELAY_MS)).await;
                // Drop what queued up while the peer was unreachable: it is stale now.
                while queue.try_recv().is_ok() {}
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream.write_all(&encode_handshake(identity)).await.is_err() {
            continue;
        }
        loop {
            let Some(first) = queue.recv().await else { return };
            buffer.clear();
            encode_frame(&first, &mut buffer);
            for _ in 1..PEER_BATCH_MESSAGES_MAX {
                match queue.try_recv() {
                    Ok(message) => encode_frame(&message, &mut buffer),
                    Err(_) => break,
                }
            }
            if stream.write_all(&buffer).await.is_err() {
                break;
            }
        }
    }
}

/// Accepts peer connections on `addr` from members of `cluster_id` listed in
/// `known_members`, and forwards every decoded message to `inbox`.
pub async fn listen(
    addr: &str,
    cluster_id: u64,
    known_members: Vec<u64>,
    inbox: mpsc::Sender<Message>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
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
            tokio::spawn(run_peer_reader(stream, cluster_id, known_members.clone(), inbox.clone()));
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

async fn run_peer_reader(stream: TcpStream, cluster_id: u64, known_members: Vec<u64>, inbox: mpsc::Sender<Message>) {
    let mut reader = tokio::io::BufReader::new(stream);
    let mut handshake = [0u8; PEER_HANDSHAKE_BYTES];
    if reader.read_exact(&mut handshake).await.is_err() {
        return;
    }
    let from = match check_handshake(&handshake, cluster_id) {
        Ok(from) if known_members.contains(&from) => from,
        Ok(from) => {
            eprintln!("detcd: refused a peer connection from unknown member {from:016x}");
            return;
        }
        Err(reason) => {
            eprintln!("detcd: refused a peer connection: {reason}");
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
        if len > PEER_FRAME_BYTES_MAX {
            return;
        }
        if read_frame_body(&mut reader, len, &mut body).await.is_err() {
            return;
        }
        let Ok(message) = Message::parse_from_bytes(&body) else { return };
        // A member speaks only for itself.
        if message.from != from {
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
    async fn a_claimed_length_allocates_only_what_arrives() {
        let sent = vec![1u8; 10];
        let mut reader: &[u8] = &sent;
        let mut body = Vec::new();
        let result = read_frame_body(&mut reader, PEER_FRAME_BYTES_MAX, &mut body).await;
        assert!(result.is_err(), "a short frame is an error");
        assert!(body.capacity() < 1024 * 1024, "capacity {} grew with the claim", body.capacity());
    }
}
