//! The HTTP/JSON gateway with `curl`, side by side with a real etcd 3.4: the same
//! sequence of calls (the examples of etcd's documentation, errors included, a watch
//! stream, a lease keep-alive stream) against both, and the answers must be the same
//! JSON — except the ids each cluster draws, its member names and its URLs.

use std::process::Command;
use std::time::Duration;

use detcd_tests::{etcdctl, runtime, start_etcd, wait_writable, Cluster};

/// `curl -X POST <endpoint><path> -d <body>`: (body, HTTP status).
fn post(endpoint: &str, path: &str, body: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "-X", "POST", &format!("http://{endpoint}{path}"), "-d", body])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.to_string())
}

/// A stream call held open for `seconds` while `during` runs: the lines it answered.
fn post_stream(endpoint: &str, path: &str, body: &str, seconds: u32, during: impl FnOnce()) -> Vec<String> {
    let child = Command::new("curl")
        .args(["-s", "-N", "--max-time", &seconds.to_string(), "-X", "POST", &format!("http://{endpoint}{path}"), "-d", body])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    std::thread::sleep(Duration::from_millis(500));
    during();
    let out = child.wait_with_output().expect("curl ends");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Ids, URLs and a lease's remaining TTL differ between two clusters by nature.
fn normalized(text: &str) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let mut stack = vec![&mut value];
    while let Some(node) = stack.pop() {
        match node {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match key.as_str() {
                        "cluster_id" | "member_id" | "ID" | "leader" | "name" | "peerURLs" | "clientURLs" => *child = serde_json::Value::from("<varies>"),
                        _ => stack.push(child),
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
    value
}

/// What one server answered to the whole sequence, normalized.
fn transcript(endpoint: &str) -> Vec<(serde_json::Value, String)> {
    let mut answers = Vec::new();
    let mut call = |path: &str, body: &str| {
        let (text, code) = post(endpoint, path, body);
        answers.push((normalized(&text), code));
    };
    // foo = bar, as etcd's documentation does it.
    call("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    call("/v3/kv/range", r#"{"key":"Zm9v"}"#);
    call("/v3/kv/range", r#"{"key":"AA==","range_end":"AA==","sortOrder":"DESCEND","keys_only":true}"#);
    call("/v3beta/kv/range", r#"{"key":"Zm9v","count_only":true}"#);
    call("/v3/kv/txn", r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"4"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmF6"}}],"failure":[{"requestRange":{"key":"Zm9v"}}]}"#);
    call("/v3/kv/txn", r#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"bm9wZQ=="}],"success":[],"failure":[{"requestRange":{"key":"Zm9v"}}]}"#);
    call("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#);
    // Errors: etcd's messages, gRPC codes and grpc-gateway's HTTP statuses.
    call("/v3/kv/put", r#"{"value":"YmFy"}"#);
    call("/v3/kv/put", "");
    call("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy","lease":"123"}"#);
    call("/v3/kv/compaction", r#"{"revision":"100"}"#);
    call("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#);
    call("/v3/lease/revoke", r#"{"ID":"123"}"#);
    // Leases: grant with a chosen id, attach, time to live with keys, list, revoke.
    call("/v3/lease/grant", r#"{"TTL":"60","ID":"7587"}"#);
    call("/v3/kv/put", r#"{"key":"bGVhc2Vk","value":"dg==","lease":"7587"}"#);
    call("/v3/kv/lease/leases", "{}");
    call("/v3/lease/revoke", r#"{"ID":"7587"}"#);
    call("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#);
    call("/v3/cluster/member/list", "{}");
    call("/v3/kv/compaction", r#"{"revision":"3"}"#);
    call("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#);
    answers
}

/// The same calls against etcd 3.4 and detcd give the same answers.
#[test]
fn json_gateway_answers_as_etcd_does() {
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let detcd_endpoint = cluster.members[0].endpoint();
    // Same starting revision as the real etcd (one put and one delete of `__ready`).
    assert_eq!(etcdctl(&detcd_endpoint, &["del", "__ready"], None).code, 0);
    let etcd = start_etcd(cluster.scratch_dir());

    let ours = transcript(&detcd_endpoint);
    let theirs = transcript(&etcd.endpoint);
    for (i, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(ours, theirs, "call {i}: detcd answered {ours:?}, etcd {theirs:?}");
    }
    assert_eq!(ours.len(), theirs.len());
}

/// `/v3/watch` streams `{"result": ...}` lines: created, the history asked for, then
/// live events; `/v3/lease/keepalive` answers each keep-alive in the body.
#[test]
fn json_gateway_streams_watch_and_keep_alive() {
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    assert_eq!(post(&endpoint, "/v3/kv/put", r#"{"key":"d2s=","value":"MQ=="}"#).1, "200");
    let lines = post_stream(&endpoint, "/v3/watch", r#"{"create_request":{"key":"d2s=","start_revision":"1"}}"#, 3, || {
        assert_eq!(post(&endpoint, "/v3/kv/put", r#"{"key":"d2s=","value":"Mg=="}"#).1, "200");
    });
    let results: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["result"].clone()).collect();
    assert_eq!(results.len(), 3, "{lines:?}");
    assert_eq!(results[0]["created"], true, "{lines:?}");
    let values: Vec<&str> = results[1..].iter().map(|r| r["events"][0]["kv"]["value"].as_str().unwrap_or("")).collect();
    assert_eq!(values, ["MQ==", "Mg=="], "{lines:?}");

    let (granted, code) = post(&endpoint, "/v3/lease/grant", r#"{"TTL":"30"}"#);
    assert_eq!(code, "200");
    let id = serde_json::from_str::<serde_json::Value>(&granted).expect("json")["ID"].as_str().expect("an id").to_string();
    let body = format!("{{\"ID\":\"{id}\"}}\n{{\"ID\":\"{id}\"}}");
    let renewed = post_stream(&endpoint, "/v3/lease/keepalive", &body, 2, || {});
    assert_eq!(renewed.len(), 2, "{renewed:?}");
    for line in &renewed {
        let result = &serde_json::from_str::<serde_json::Value>(line).expect("json")["result"];
        assert_eq!((result["ID"].as_str(), result["TTL"].as_str()), (Some(id.as_str()), Some("30")), "{line}");
    }
    let unknown = post_stream(&endpoint, "/v3/lease/keepalive", r#"{"ID":"99"}"#, 2, || {});
    assert!(unknown.len() == 1 && unknown[0].contains(r#""ID":"99""#) && !unknown[0].contains("TTL"), "{unknown:?}");
}

#[test]
fn a_streaming_body_that_cannot_be_read_is_answered_as_etcd_answers() {
    // grpc-gateway v1 (etcd 3.4): a first request that does not decode is the call's
    // error (code Unknown, HTTP 500, the decoder's words); a later one only ends the
    // requests and the stream goes on.
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let etcd = start_etcd(cluster.scratch_dir());
    for (server, endpoint) in [("detcd", cluster.members[0].endpoint()), ("etcd", etcd.endpoint.clone())] {
        for path in ["/v3/watch", "/v3/lease/keepalive"] {
            let (text, code) = post(&endpoint, path, "garbage");
            assert_eq!(code, "500", "{server} {path}: {text}");
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{server} {path}: not JSON ({e}): {text}"));
            assert_eq!(answer["code"], 2, "{server} {path}: {text}");
            assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()) && answer["error"] == answer["message"], "{server} {path}: {text}");
        }
        let lines = post_stream(&endpoint, "/v3/watch", r#"{"create_request":{"key":"Zm9v"}} garbage"#, 2, || {});
        assert_eq!(lines.len(), 1, "{server}: {lines:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&lines[0]).expect("a JSON line")["result"]["created"], true, "{server}: {lines:?}");
    }
}
