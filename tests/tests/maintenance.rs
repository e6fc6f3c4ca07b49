//! Maintenance end to end with the real etcdctl: `endpoint hashkv` equal on every member
//! of a healthy cluster, in etcd's forms, and etcd's error for a compacted revision.

use std::time::Duration;

use detcd_tests::{etcdctl, runtime, wait_for, wait_writable, Cluster};

#[test]
fn endpoint_hashkv_is_equal_on_every_member() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    for i in 0..20 {
        assert_eq!(etcdctl(&all, &["put", &format!("h{i}"), &format!("v{i}")], None).stdout, "OK\n");
    }
    assert_eq!(etcdctl(&all, &["del", "h3"], None).stdout, "1\n");
    // Every member has applied everything once it serves the last write locally.
    let endpoints = cluster.endpoints();
    for endpoint in &endpoints {
        let applied = wait_for(Duration::from_secs(10), || {
            let out = etcdctl(endpoint, &["get", "h19", "--consistency=s", "--print-value-only"], None);
            (out.stdout == "v19\n").then_some(())
        });
        assert!(applied.is_some(), "{endpoint} never applied the last write");
    }
    let hashes: Vec<String> = endpoints
        .iter()
        .map(|endpoint| {
            let out = etcdctl(endpoint, &["endpoint", "hashkv"], None);
            let (shown, hash) = out.stdout.trim_end().split_once(", ").unwrap_or_else(|| panic!("{out:?}"));
            assert_eq!(shown, endpoint.as_str());
            assert!(hash.parse::<u32>().is_ok(), "{out:?}");
            hash.to_string()
        })
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "members disagree: {hashes:?}");

    // The table form: a header row with ENDPOINT and HASH, then the row.
    let table = etcdctl(&endpoints[0], &["endpoint", "hashkv", "-w", "table"], None).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[1].contains("ENDPOINT") && lines[1].contains("HASH"), "{table}");
    assert!(lines[3].contains(endpoints[0].as_str()) && lines[3].contains(hashes[0].as_str()), "{table}");

    // A compacted revision is refused with etcd's error.
    assert_eq!(etcdctl(&all, &["compact", "10"], None).stdout, "compacted revision 10\n");
    let old = etcdctl(&endpoints[0], &["endpoint", "hashkv", "--rev", "5"], None);
    assert!(old.stderr.contains("etcdserver: mvcc: required revision has been compacted"), "{old:?}");
}

/// (dbSize, dbSizeInUse) from `etcdctl endpoint status -w json`.
fn db_sizes(endpoint: &str) -> (i64, i64) {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "json"], None);
    let value: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let status = &value[0]["Status"];
    (status["dbSize"].as_i64().expect("dbSize"), status["dbSizeInUse"].as_i64().expect("dbSizeInUse"))
}

#[test]
fn compaction_frees_in_use_space_and_defrag_gives_it_back() {
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    let value = "x".repeat(2000);
    for round in 0..5 {
        for key in 0..20 {
            assert_eq!(etcdctl(&endpoint, &["put", &format!("d{key}"), &format!("{round}{value}")], None).stdout, "OK\n");
        }
    }
    let (before, in_use_before) = db_sizes(&endpoint);
    assert_eq!(before, in_use_before);
    let revision = etcdctl(&endpoint, &["get", "d0", "-w", "json"], None);
    let revision: serde_json::Value = serde_json::from_str(revision.stdout.trim()).expect("json");
    let revision = revision["header"]["revision"].as_i64().expect("revision").to_string();
    assert_eq!(etcdctl(&endpoint, &["compact", &revision], None).stdout, format!("compacted revision {revision}\n"));
    let (after_compact, in_use_after_compact) = db_sizes(&endpoint);
    assert_eq!(after_compact, before, "as etcd's file, DB SIZE stays until defrag");
    assert!(in_use_after_compact < before / 3, "in use dropped: {in_use_after_compact} of {before}");
    let defrag = etcdctl(&endpoint, &["defrag"], None);
    assert_eq!(defrag.stdout, format!("Finished defragmenting etcd member[{endpoint}]\n"), "{defrag:?}");
    let (after_defrag, _) = db_sizes(&endpoint);
    assert_eq!(after_defrag, in_use_after_compact, "defrag gives the space back");
}

/// The NOSPACE walkthrough of `../shared/nospace-reference.txt`: fill a 16 MiB quota,
/// see the alarm on every path, recover with compact + defrag + disarm.
#[test]
fn nospace_alarm_walkthrough_matches_etcd() {
    let mut cluster = Cluster::start(1, &["--quota-backend-bytes=16777216"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    let megabyte = "x".repeat(1_048_576);
    let mut first_failure = None;
    for attempt in 1..=40 {
        let out = etcdctl(&endpoint, &["put", "key"], Some(&megabyte));
        if out.code != 0 {
            assert!(out.stderr.contains("Error: etcdserver: mvcc: database space exceeded"), "{out:?}");
            first_failure = Some(attempt);
            break;
        }
        assert_eq!(out.stdout, "OK\n");
    }
    let first_failure = first_failure.expect("the quota was reached");
    assert!((12..=17).contains(&first_failure), "etcd fails at put #14 here; detcd at #{first_failure}");
    let refused = etcdctl(&endpoint, &["put", "small", "v"], None);
    assert!(refused.stderr.contains("Error: etcdserver: mvcc: database space exceeded"), "{refused:?}");
    let alarm = etcdctl(&endpoint, &["alarm", "list"], None).stdout;
    assert!(alarm.starts_with("memberID:") && alarm.ends_with(" alarm:NOSPACE \n"), "{alarm:?}");
    let status = etcdctl(&endpoint, &["endpoint", "status", "-w", "json"], None).stdout;
    let status: serde_json::Value = serde_json::from_str(status.trim()).expect("json");
    assert_eq!(status[0]["Status"]["errors"][0].as_str(), Some(alarm.trim_end_matches('\n')));
    let table = etcdctl(&endpoint, &["endpoint", "status", "-w", "table"], None).stdout;
    assert!(table.contains("alarm:NOSPACE"), "{table}");
    // Reads and deletes still work; lease grants and txns with puts do not.
    assert_eq!(etcdctl(&endpoint, &["get", "key", "--keys-only"], None).stdout, "key\n\n");
    assert_eq!(etcdctl(&endpoint, &["del", "small"], None).stdout, "0\n");
    let grant = etcdctl(&endpoint, &["lease", "grant", "10"], None);
    assert!(grant.stderr.contains("Error: failed to grant lease (etcdserver: mvcc: database space exceeded)"), "{grant:?}");
    let txn = etcdctl(&endpoint, &["txn"], Some("\nput t v\n\n\n"));
    assert!(txn.stderr.contains("Error: etcdserver: mvcc: database space exceeded"), "{txn:?}");
    // Recovery: compact to the current revision, defrag, disarm.
    let revision: serde_json::Value = serde_json::from_str(etcdctl(&endpoint, &["get", "key", "-w", "json"], None).stdout.trim()).expect("json");
    let revision = revision["header"]["revision"].as_i64().expect("revision").to_string();
    assert_eq!(etcdctl(&endpoint, &["compact", &revision], None).stdout, format!("compacted revision {revision}\n"));
    assert_eq!(etcdctl(&endpoint, &["defrag"], None).stdout, format!("Finished defragmenting etcd member[{endpoint}]\n"));
    assert_eq!(etcdctl(&endpoint, &["alarm", "list"], None).stdout, alarm, "the alarm stays until disarmed");
    assert!(etcdctl(&endpoint, &["put", "small", "v"], None).stderr.contains("database space exceeded"));
    assert_eq!(etcdctl(&endpoint, &["alarm", "disarm"], None).stdout, alarm);
    assert_eq!(etcdctl(&endpoint, &["alarm", "list"], None).stdout, "");
    assert_eq!(etcdctl(&endpoint, &["put", "small", "v"], None).stdout, "OK\n");
    assert_eq!(etcdctl(&endpoint, &["get", "small"], None).stdout, "small\nv\n");
    let after: serde_json::Value = serde_json::from_str(etcdctl(&endpoint, &["endpoint", "status", "-w", "json"], None).stdout.trim()).expect("json");
    assert!(after[0]["Status"]["dbSize"].as_i64().expect("dbSize") < 2_000_000, "DB SIZE dropped: {after}");
    assert_eq!(after[0]["Status"]["errors"], serde_json::Value::Null);
}

fn curl(url: &str) -> (String, String) {
    let out = std::process::Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn health_and_version_over_http_and_endpoint_health() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[1].endpoint();
    assert_eq!(curl(&format!("http://{endpoint}/health")), (r#"{"health":"true"}"#.to_string(), "200".to_string()));
    let (version, code) = curl(&format!("http://{endpoint}/version"));
    assert_eq!(code, "200");
    let version: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert!(version["etcdserver"].as_str().is_some_and(|v| v.starts_with("3.4")), "{version}");
    assert_eq!(version["etcdcluster"], "3.4.0");
    // etcdctl 3.4 prints the health line on stderr.
    let health = etcdctl(&endpoint, &["endpoint", "health"], None).stderr;
    assert!(health.starts_with(&format!("{endpoint} is healthy: successfully committed proposal: took = ")), "{health}");
    // Without a quorum the member has no leader: unhealthy, 503.
    cluster.kill_member(0);
    cluster.kill_member(2);
    let unhealthy = wait_for(Duration::from_secs(15), || {
        let answer = curl(&format!("http://{endpoint}/health"));
        (answer.1 == "503").then_some(answer.0)
    });
    assert_eq!(unhealthy.as_deref(), Some(r#"{"health":"false"}"#));
}
