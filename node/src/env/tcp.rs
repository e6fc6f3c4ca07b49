//! The production [`Transport`]: raft messages over TCP on the peer URLs.
//!
//! One long-lived outbound connection per peer, fed by a bounded queue and written in
//! batches (everything queued is encoded into one buffer per write); inbound
//! connections are accepted on the listen-peer-urls and decoded into the member's inbox.
//! Framing: a little-endian `u32` length, then the protobuf-encoded `eraftpb.Message`.
//! Raft tolerates loss, so a full queue or a broken connection drops messages.

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

/// Outbound side: one queue and writer task per peer.
pub struct TcpTransport {
    queues: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl TcpTransport {
    /// Starts a writer task for every peer (`member id -> host:port`).
    pub fn start(peer_addrs: BTreeMap<u64, String>) -> Self {
        let mut queues = BTreeMap::new();
        for (member_id, addr) in peer_addrs {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            tokio::spawn(run_peer_writer(addr, receiver));
            queues.insert(member_id, sender);
        }
        Self { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            if let Some(queue) = self.queues.get(&message.to) {
                // A full queue means the peer is far behind or gone: drop, raft retries.
                let _ = queue.try_send(message);
            }
        }
    }
}

fn encode_frame(message: &Message, buffer: &mut Vec<u8>) {
    let body = message.write_to_bytes().expect("encoding a raft message cannot fail");
    let len = u32::try_from(body.len()).expect("raft message under 4 GiB");
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&body);
}

async fn run_peer_writer(addr: String, mut queue: mpsc::Receiver<Message>) {
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

/// Accepts peer connections on `addr` and forwards every decoded message to `inbox`.
pub async fn listen(addr: &str, inbox: mpsc::Sender<Message>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(run_peer_reader(stream, inbox.clone()));
        }
    });
    Ok(())
}

async fn run_peer_reader(stream: TcpStream, inbox: mpsc::Sender<Message>) {
    let mut reader = tokio::io::BufReader::new(stream);
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
        body.resize(len, 0);
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(message) = Message::parse_from_bytes(&body) else { return };
        if inbox.send(message).await.is_err() {
            return;
        }
    }
}
