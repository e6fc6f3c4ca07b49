//! Authentication and RBAC end to end, side by side with a real etcd 3.4: the same
//! `etcdctl user|role|auth` session (root rules, permissions on keys, prefixes and
//! ranges, a revoke taking effect, a password change, errors) against both, and every
//! output and exit code must be the same. Then what a session cannot show: a token
//! issued by one member works on another, a watch needs read permission, the JSON
//! gateway takes the token from the `Authorization` header.

use std::process::Command;
use std::time::Duration;

use detcd_tests::{etcdctl, runtime, start_etcd, wait_for, wait_writable, Cluster};

/// One etcdctl call of the session: arguments and stdin.
type Step = (&'static [&'static str], Option<&'static str>);

const SESSION: &[Step] = &[
    (&["auth", "enable"], None),
    (&["user", "add", "root:rootpw"], None),
    (&["user", "add", "alice:alicepw"], None),
    (&["user", "add", "alice:x"], None),
    (&["role", "add", "reader"], None),
    (&["role", "add", "reader"], None),
    (&["role", "add", ""], None),
    (&["role", "grant-permission", "reader", "read", "foo"], None),
    (&["role", "grant-permission", "reader", "--prefix=true", "readwrite", "app/"], None),
    (&["role", "grant-permission", "reader", "write", "k1", "k5"], None),
    (&["role", "grant-permission", "nosuch", "read", "foo"], None),
    (&["role", "get", "reader"], None),
    (&["user", "grant-role", "alice", "reader"], None),
    (&["user", "grant-role", "alice", "reader"], None),
    (&["user", "grant-role", "alice", "nosuch"], None),
    (&["user", "grant-role", "nobody", "reader"], None),
    (&["user", "revoke-role", "alice", "nosuch"], None),
    (&["user", "get", "alice"], None),
    (&["user", "get", "alice", "--detail"], None),
    (&["user", "list"], None),
    (&["role", "list"], None),
    // etcdctl adds the root role and grants it to root when the server asks for it.
    (&["auth", "enable"], None),
    (&["put", "foo", "bar"], None),
    (&["--user", "root:rootpw", "put", "foo", "bar"], None),
    (&["--user", "alice:alicepw", "get", "foo"], None),
    (&["--user", "alice:alicepw", "put", "foo", "baz"], None),
    (&["--user", "alice:alicepw", "put", "app/x", "1"], None),
    (&["--user", "alice:alicepw", "get", "app/", "--prefix"], None),
    (&["--user", "alice:alicepw", "get", "", "--prefix"], None),
    (&["--user", "alice:alicepw", "txn"], Some("value(\"foo\") = \"bar\"\n\nput k2 v\n\n")),
    (&["--user", "alice:alicepw", "txn"], Some("value(\"foo\") = \"bar\"\n\nput foo v\n\n")),
    (&["--user", "alice:alicepw", "del", "app/x"], None),
    (&["--user", "alice:alicepw", "compaction", "1"], None),
    (&["--user", "alice:alicepw", "defrag"], None),
    (&["--user", "root:rootpw", "role", "revoke-permission", "reader", "foo"], None),
    (&["--user", "root:rootpw", "role", "revoke-permission", "reader", "foo"], None),
    (&["--user", "alice:alicepw", "get", "foo"], None),
    (&["--user", "alice:alicepw", "user", "list"], None),
    (&["--user", "alice:alicepw", "role", "add", "x"], None),
    (&["--user", "root:rootpw", "user", "passwd", "alice", "--interactive=false"], Some("newpw\n")),
    (&["--user", "alice:newpw", "get", "app/x"], None),
    (&["--user", "alice:alicepw", "get", "app/x"], None),
    (&["--user", "root:rootpw", "role", "delete", "reader"], None),
    (&["--user", "alice:newpw", "get", "app/x"], None),
    (&["--user", "root:rootpw", "user", "get", "alice"], None),
    (&["--user", "root:rootpw", "role", "revoke-permission", "nosuch", "foo"], None),
    (&["--user", "root:rootpw", "user", "delete", "root"], None),
    (&["--user", "root:rootpw", "user", "revoke-role", "root", "root"], None),
    (&["--user", "root:rootpw", "user", "get", "root"], None),
    (&["--user", "root:rootpw", "role", "get", "root"], None),
    (&["--user", "root:rootpw", "user", "delete", "alice"], None),
    (&["--user", "root:rootpw", "user", "delete", "alice"], None),
    (&["--user", "alice:x", "member", "list"], None),
    (&["--user", "nobody:x", "get", "foo"], None),
    (&["--user", "root:rootpw", "auth", "disable"], None),
    (&["get", "foo"], None),
    (&["user", "add", "bob", "--no-password"], None),
    (&["user", "get", "bob"], None),
];

/// The session's outputs: (stdout, stderr without the client's retry warnings, code).
fn run_session(endpoint: &str) -> Vec<(String, String, i32)> {
    SESSION
        .iter()
        .map(|(args, stdin)| {
            let out = etcdctl(endpoint, args, *stdin);
            let stderr: Vec<&str> = out.stderr.lines().filter(|l| !l.contains("retry_interceptor")).collect();
            (out.stdout.replace(endpoint, "<endpoint>"), stderr.join("\n").replace(endpoint, "<endpoint>"), out.code)
        })
        .collect()
}

#[test]
fn etcdctl_auth_session_answers_as_etcd_does() {
    let mut cluster = Cluster::start(1, &["--bcrypt-cost", "4"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let etcd = start_etcd(cluster.scratch_dir());
    let ours = run_session(&cluster.members[0].endpoint());
    let theirs = run_session(&etcd.endpoint);
    for (i, ((ours, theirs), step)) in ours.iter().zip(&theirs).zip(SESSION).enumerate() {
        assert_eq!(ours, theirs, "step {i} (etcdctl {:?}): detcd answered {ours:?}, etcd {theirs:?}", step.0);
    }
}

fn curl(url: &str, token: Option<&str>, body: &str) -> (String, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "-X", "POST", url, "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: {token}")]);
    }
    let text = String::from_utf8_lossy(&command.output().expect("curl runs").stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.to_string())
}

/// Tokens are signed with replicated state: one member's token works on the others.
/// A watch on a range the user cannot read is canceled at once; the gateway takes the
/// token from `Authorization`.
#[test]
fn tokens_work_on_every_member_watch_and_gateway_check_permissions() {
    let mut cluster = Cluster::start(3, &["--bcrypt-cost", "4"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let e0 = cluster.members[0].endpoint();
    for step in detcd_tests::AUTH_SETUP_ALICE_WRITES_APP {
        let out = etcdctl(&e0, step, None);
        assert_eq!(out.code, 0, "{step:?}: {out:?}");
    }
    // A token from member 0, used against member 2 (the gateway: no etcdctl re-login).
    let (answer, code) = curl(&format!("http://{e0}/v3/auth/authenticate"), None, r#"{"name":"alice","password":"alicepw"}"#);
    assert_eq!(code, "200", "{answer}");
    let token = serde_json::from_str::<serde_json::Value>(&answer).expect("json")["token"].as_str().expect("a token").to_string();
    let e2 = cluster.members[2].endpoint();
    let (put, code) = curl(&format!("http://{e2}/v3/kv/put"), Some(&token), r#"{"key":"YXBwL3g=","value":"MQ=="}"#);
    assert_eq!(code, "200", "{put}");
    let (denied, code) = curl(&format!("http://{e2}/v3/kv/put"), Some(&token), r#"{"key":"b3RoZXI=","value":"MQ=="}"#);
    assert_eq!((code.as_str(), denied.as_str()), ("403", r#"{"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7}"#));
    let (anonymous, code) = curl(&format!("http://{e2}/v3/kv/range"), None, r#"{"key":"YXBwL3g="}"#);
    assert_eq!((code.as_str(), anonymous.contains("user name is empty")), ("400", true), "{anonymous}");
    let (forged, code) = curl(&format!("http://{e2}/v3/kv/range"), Some("616c696365.1.00"), r#"{"key":"YXBwL3g="}"#);
    assert_eq!((code.as_str(), forged.contains("invalid auth token")), ("401", true), "{forged}");

    // Watch: allowed on app/, canceled on another key.
    let allowed = detcd_tests::etcdctl_for(2, &e2, &["--user", "alice:alicepw", "watch", "app/x"]);
    assert!(!allowed.stderr.contains("permission denied"), "{allowed:?}");
    let refused = detcd_tests::etcdctl_for(5, &e2, &["--user", "alice:alicepw", "watch", "other"]);
    assert!(refused.stderr.contains("permission denied") || refused.stdout.contains("permission denied"), "{refused:?}");

    // A revoke on one member binds every member: alice can no longer write anywhere.
    assert_eq!(etcdctl(&e0, &["--user", "root:rootpw", "role", "revoke-permission", "apps", "app/", "--prefix=true"], None).code, 0);
    let after = wait_for(Duration::from_secs(5), || {
        let out = etcdctl(&e2, &["--user", "alice:alicepw", "put", "app/y", "2"], None);
        out.stderr.contains("permission denied").then_some(())
    });
    assert!(after.is_some(), "{}", cluster.diagnostics());
}
