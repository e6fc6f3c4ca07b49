//! The load tool's light client (`--client raw`): etcd's unary KV calls over one HTTP/2
//! connection per client, written with `h2` alone and polled by the same task that
//! issues the client's requests, with the four request messages encoded by hand.
//!
//! Why it exists: through `etcd-client` a request passes three tasks of this process
//! (the caller, tonic's buffer worker, hyper's connection task) and costs the tool
//! ~21-27 µs of CPU — as much as the server under test spends per put — so at 64
//! clients the tool took a third of the two cores it shares with the servers, and every
//! request carried the same fixed client cost to both servers, pulling their ratio
//! toward 1. The server sees the same thing either way: HTTP/2 with one request in
//! flight per connection, the gRPC framing, the same protobuf messages.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

/// gRPC paths of etcd's KV service.
pub const PATH_PUT: &str = "/etcdserverpb.KV/Put";
pub const PATH_RANGE: &str = "/etcdserverpb.KV/Range";
pub const PATH_DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
pub const PATH_TXN: &str = "/etcdserverpb.KV/Txn";

/// Largest response message the tool accepts (a point read answers with one key).
const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One client's connection: the handle that sends requests and the endpoint it names.
pub struct Client {
    sender: h2::client::SendRequest<Bytes>,
    endpoint: String,
}

/// Opens the connection (plain TCP, HTTP/2 with prior knowledge, as gRPC does without
/// TLS). The returned `h2::client::Connection` must be polled for the client to make
/// progress: the caller polls it in the task that sends the requests.
pub async fn connect(endpoint: &str) -> Result<(Client, h2::client::Connection<TcpStream, Bytes>), String> {
    let stream = TcpStream::connect(endpoint).await.map_err(|e| format!("connect {endpoint}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay {endpoint}: {e}"))?;
    let (sender, connection) = h2::client::handshake(stream).await.map_err(|e| format!("HTTP/2 handshake with {endpoint}: {e}"))?;
    Ok((Client { sender, endpoint: endpoint.to_string() }, connection))
}

impl Client {
    /// One unary call: `message` (an encoded request) to `path`; Ok once the server
    /// answered with grpc-status 0 and a response message.
    pub async fn unary(&mut self, path: &str, message: &[u8]) -> Result<(), String> {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.endpoint))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| format!("request: {e}"))?;
        std::future::poll_fn(|cx| self.sender.poll_ready(cx)).await.map_err(|e| format!("connection: {e}"))?;
        let (response, mut request_body) = self.sender.send_request(request, false).map_err(|e| format!("send: {e}"))?;
        let length = u32::try_from(message.len()).map_err(|_| "request message over 4 GiB".to_string())?;
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0); // not compressed
        frame.put_u32(length);
        frame.put_slice(message);
        request_body.send_data(frame.freeze(), true).map_err(|e| format!("send body: {e}"))?;
        let response = response.await.map_err(|e| format!("response: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        // A trailers-only answer (an error) carries grpc-status in its headers.
        if let Some(status) = response.headers().get("grpc-status") {
            return grpc_status_ok(status, response.headers().get("grpc-message"));
        }
        let mut body = response.into_body();
        let mut received_bytes = 0usize;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
            received_bytes += chunk.len();
            if received_bytes > RESPONSE_BYTES_MAX {
                return Err(format!("response over {RESPONSE_BYTES_MAX} bytes"));
            }
            body.flow_control().release_capacity(chunk.len()).map_err(|e| format!("flow control: {e}"))?;
        }
        let trailers = body.trailers().await.map_err(|e| format!("trailers: {e}"))?.ok_or("no trailers")?;
        let status = trailers.get("grpc-status").ok_or("no grpc-status")?;
        grpc_status_ok(status, trailers.get("grpc-message"))?;
        if received_bytes < 5 {
            return Err(format!("a response of {received_bytes} bytes holds no message"));
        }
        Ok(())
    }
}

fn grpc_status_ok(status: &http::HeaderValue, message: Option<&http::HeaderValue>) -> Result<(), String> {
    if status.as_bytes() == b"0" {
        return Ok(());
    }
    let message = message.map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned()).unwrap_or_default();
    Err(format!("grpc-status {}: {message}", String::from_utf8_lossy(status.as_bytes())))
}

// Protobuf encoding of the few messages sent (etcd's rpc.proto field numbers).

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(buf, u64::from(field) << 3 | 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    put_varint(buf, u64::from(field) << 3);
    put_varint(buf, value);
}

/// PutRequest { key = 1, value = 2 }.
pub fn put_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(key.len() + value.len() + 8);
    put_bytes_field(&mut buf, 1, key);
    put_bytes_field(&mut buf, 2, value);
    buf
}

/// RangeRequest { key = 1, serializable = 7 }: a point read.
pub fn range_request(key: &[u8], serializable: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(key.len() + 4);
    put_bytes_field(&mut buf, 1, key);
    if serializable {
        put_varint_field(&mut buf, 7, 1);
    }
    buf
}

/// DeleteRangeRequest { key = 1 }.
pub fn delete_range_request(key: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(key.len() + 2);
    put_bytes_field(&mut buf, 1, key);
    buf
}

/// TxnRequest: if mod_revision(key) < `mod_revision_bound` then put(key, value) — the
/// load tool's compare-and-put, as `etcd-client`'s `Compare::mod_revision(.., Less, ..)`.
pub fn txn_mod_revision_less_put(key: &[u8], mod_revision_bound: i64, value: &[u8]) -> Vec<u8> {
    // Compare { result = 1 (LESS = 2), target = 2 (MOD = 2), key = 3, mod_revision = 6 }.
    let mut compare = Vec::with_capacity(key.len() + 16);
    put_varint_field(&mut compare, 1, 2);
    put_varint_field(&mut compare, 2, 2);
    put_bytes_field(&mut compare, 3, key);
    put_varint_field(&mut compare, 6, mod_revision_bound as u64);
    // RequestOp { request_put = 2 }.
    let mut operation = Vec::with_capacity(key.len() + value.len() + 12);
    put_bytes_field(&mut operation, 2, &put_request(key, value));
    // TxnRequest { compare = 1, success = 2 }.
    let mut buf = Vec::with_capacity(compare.len() + operation.len() + 8);
    put_bytes_field(&mut buf, 1, &compare);
    put_bytes_field(&mut buf, 2, &operation);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_encode_as_protobuf_does() {
        // Bytes worked out by hand from the protobuf encoding rules.
        assert_eq!(put_request(b"k", b"vv"), [0x0a, 1, b'k', 0x12, 2, b'v', b'v']);
        assert_eq!(range_request(b"k", false), [0x0a, 1, b'k']);
        assert_eq!(range_request(b"k", true), [0x0a, 1, b'k', 0x38, 1]);
        assert_eq!(delete_range_request(b"k"), [0x0a, 1, b'k']);
        let txn = txn_mod_revision_less_put(b"k", 300, b"v");
        let compare = [0x08, 2, 0x10, 2, 0x1a, 1, b'k', 0x30, 0xac, 0x02];
        let operation = [0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v'];
        let mut expected = vec![0x0a, compare.len() as u8];
        expected.extend_from_slice(&compare);
        expected.extend_from_slice(&[0x12, operation.len() as u8]);
        expected.extend_from_slice(&operation);
        assert_eq!(txn, expected);
        let mut big = Vec::new();
        put_varint(&mut big, i64::MAX as u64);
        assert_eq!(big, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    }
}
