//! The client port's own HTTP/2 server (node/src/grpc/direct.rs) at the wire: KV calls
//! answered in the connection's task as etcd answers them (side by side with a real etcd
//! 3.4 for the refusals), everything else handed on (the JSON gateway over HTTP/2 with
//! prior knowledge, HTTP/1.1 on the same port), and `--grpc-keepalive-*` closing a
//! connection that does not answer pings.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use detcd_tests::{runtime, start_etcd, wait_writable, Cluster};

/// A gRPC call's answer as seen on the wire.
#[derive(Debug)]
struct WireAnswer {
    grpc_status: String,
    grpc_message: String,
    /// The answer's messages (with their 5-byte prefixes), when it had any.
    body: Vec<u8>,
}

/// An HTTP/2 connection to `endpoint`, driven (and its pings answered) by a task.
async fn h2_connect(endpoint: &str) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(endpoint).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    client
}

/// Sends `body` (raw, prefixes included) to `path` with `headers` over a fresh HTTP/2
/// connection and reads the whole answer.
async fn raw_call(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> WireAnswer {
    raw_call_on(h2_connect(endpoint).await, endpoint, path, headers, body).await
}

/// [`raw_call`] on a given connection.
async fn raw_call_on(client: h2::client::SendRequest<Bytes>, endpoint: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> WireAnswer {
    let mut client = client.ready().await.expect("ready");
    let mut request = http::Request::post(format!("http://{endpoint}{path}")).header("content-type", "application/grpc").header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (answer, mut send) = client.send_request(request.body(()).expect("request"), false).expect("send");
    // A server may answer from the headers alone (an unknown method: Unimplemented, as
    // etcd does) and close the stream before the body is handed to h2; the answer counts.
    let sent = send.send_data(Bytes::copy_from_slice(body), true);
    let answer = match answer.await {
        Ok(answer) => answer,
        Err(error) => panic!("answer: {error} (the body: {sent:?})"),
    };
    let head_status = answer.headers().get("grpc-status").map(|s| s.to_str().expect("ascii").to_string());
    let head_message = answer.headers().get("grpc-message").map(|s| s.to_str().expect("ascii").to_string());
    let mut received = answer.into_body();
    let mut bytes = Vec::new();
    while let Some(data) = received.data().await {
        let data = data.expect("data");
        let _ = received.flow_control().release_capacity(data.len());
        bytes.extend_from_slice(&data);
    }
    let trailers = received.trailers().await.expect("trailers").unwrap_or_default();
    let field = |name: &str| trailers.get(name).map(|s| s.to_str().expect("ascii").to_string());
    WireAnswer {
        grpc_status: field("grpc-status").or(head_status).expect("a grpc-status"),
        grpc_message: field("grpc-message").or(head_message).unwrap_or_default(),
        body: bytes,
    }
}

/// A gRPC message: uncompressed flag, length, bytes.
fn grpc_message(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// PutRequest{key: "k", value: "v"} in protobuf.
const PUT_K_V: &[u8] = &[0x0a, 0x01, b'k', 0x12, 0x01, b'v'];

#[test]
fn kv_calls_are_answered_and_refused_as_etcd_answers_them() {
    let mut cluster = Cluster::start(1, &[]);
    let etcd = start_etcd(cluster.scratch_dir());
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let put = "/etcdserverpb.KV/Put";
    for endpoint in [cluster.members[0].endpoint(), etcd.endpoint.clone()] {
        rt.block_on(async {
            // A put: one message (a PutResponse with its header) and status 0.
            let ok = raw_call(&endpoint, put, &[("grpc-timeout", "5S")], &grpc_message(PUT_K_V)).await;
            assert_eq!(ok.grpc_status, "0", "{endpoint}: {ok:?}");
            assert!(ok.body.len() > 5 && ok.body[0] == 0, "{endpoint}: {ok:?}");
            let length = u32::from_be_bytes([ok.body[1], ok.body[2], ok.body[3], ok.body[4]]) as usize;
            assert_eq!(ok.body.len(), 5 + length, "{endpoint}: one whole message");
            // A message that is not a PutRequest: Internal.
            let garbage = raw_call(&endpoint, put, &[], &grpc_message(&[0xff, 0xff, 0xff])).await;
            assert_eq!(garbage.grpc_status, "13", "{endpoint}: {garbage:?}");
            assert!(garbage.body.is_empty(), "{endpoint}: {garbage:?}");
            // The compressed flag without a grpc-encoding: Internal.
            let mut flagged = grpc_message(PUT_K_V);
            flagged[0] = 1;
            let flagged = raw_call(&endpoint, put, &[], &flagged).await;
            assert_eq!(flagged.grpc_status, "13", "{endpoint}: {flagged:?}");
            // A message over the limit (1.5 MiB + 512 KiB by default): etcd's words.
            let mut huge_put = vec![0x0a, 0x01, b'k', 0x12];
            let value_bytes = 3 * 1024 * 1024;
            let mut length = value_bytes;
            while length >= 0x80 {
                huge_put.push((length as u8 & 0x7f) | 0x80);
                length >>= 7;
            }
            huge_put.push(length as u8);
            huge_put.resize(huge_put.len() + value_bytes, b'x');
            let huge = raw_call(&endpoint, put, &[], &grpc_message(&huge_put)).await;
            assert_eq!(huge.grpc_status, "8", "{endpoint}: {huge:?}");
            let words = format!("grpc: received message larger than max ({} vs. {})", huge_put.len(), 2 * 1024 * 1024);
            assert_eq!(huge.grpc_message.replace("%20", " "), words, "{endpoint}");
            // An unknown method of the KV service: Unimplemented.
            let unknown = raw_call(&endpoint, "/etcdserverpb.KV/Nope", &[], &grpc_message(&[])).await;
            assert_eq!(unknown.grpc_status, "12", "{endpoint}: {unknown:?}");
        });
    }
}

#[test]
fn the_json_gateway_answers_over_http2_with_prior_knowledge_and_over_http1() {
    let mut cluster = Cluster::start(1, &[]);
    wait_writable(&runtime(), &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    let curl = |version: &str, path: &str, body: &str| {
        let out = Command::new("curl")
            .args(["-sS", version, "-X", "POST", &format!("http://{endpoint}{path}"), "-d", body])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // key "gw", value "v" in base64.
    let put = curl("--http2-prior-knowledge", "/v3/kv/put", r#"{"key":"Z3c=","value":"dg=="}"#);
    assert!(put.contains("\"header\""), "{put}");
    for version in ["--http2-prior-knowledge", "--http1.1"] {
        let range = curl(version, "/v3/kv/range", r#"{"key":"Z3c="}"#);
        assert!(range.contains(r#""key":"Z3c=""#) && range.contains(r#""value":"dg==""#), "{version}: {range}");
    }
}

#[test]
fn a_connection_that_does_not_answer_keepalive_pings_is_closed() {
    let mut cluster = Cluster::prepare(1, &[]);
    cluster.start_member_with(0, &["--grpc-keepalive-interval", "300ms", "--grpc-keepalive-timeout", "300ms"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    // An HTTP/2 client that sends its preface and settings, then never writes again.
    let mut socket = std::net::TcpStream::connect(cluster.members[0].endpoint()).expect("connect");
    socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("preface");
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).expect("settings");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the member did not close the connection: {e} after {:?}", started.elapsed()),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "closed after {:?}, before a ping could go unanswered", started.elapsed());
    // Frames: 3-byte length, 1-byte type; a PING is type 6.
    let mut at = 0;
    let mut pinged = false;
    while at + 9 <= received.len() {
        let length = (usize::from(received[at]) << 16) | (usize::from(received[at + 1]) << 8) | usize::from(received[at + 2]);
        pinged |= received[at + 3] == 6;
        at += 9 + length;
    }
    assert!(pinged, "no PING before the close: {received:?}");
    // A client that answers keeps its connection while idle.
    rt.block_on(async {
        let endpoint = cluster.members[0].endpoint();
        let connection = h2_connect(&endpoint).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let put = raw_call_on(connection, &endpoint, "/etcdserverpb.KV/Put", &[], &grpc_message(PUT_K_V)).await;
        assert_eq!(put.grpc_status, "0", "{put:?}");
    });
}
