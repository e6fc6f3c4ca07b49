//! Maintenance end to end with the real etcdctl: `endpoint hashkv` equal on every member
//! of a healthy cluster, in etcd's forms, and etcd's error for a compacted revision.

use std::time::Duration;

use detcd_tests::{detcd, etcdctl, runtime, wait_for, wait_writable, Cluster};

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
    // etcd 3.5's probes.
    assert_eq!(curl(&format!("http://{endpoint}/livez")), ("ok\n".to_string(), "200".to_string()));
    assert_eq!(curl(&format!("http://{endpoint}/readyz")), ("ok\n".to_string(), "200".to_string()));
    assert_eq!(
        curl(&format!("http://{endpoint}/readyz?verbose")),
        ("[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n".to_string(), "200".to_string())
    );
    // Without a quorum the member has no leader: unhealthy, 503; not ready (no
    // linearizable read), still live (it serves its own state).
    cluster.kill_member(0);
    cluster.kill_member(2);
    let unhealthy = wait_for(Duration::from_secs(15), || {
        let answer = curl(&format!("http://{endpoint}/health"));
        (answer.1 == "503").then_some(answer.0)
    });
    assert_eq!(unhealthy.as_deref(), Some(r#"{"health":"false"}"#));
    let (ready, code) = curl(&format!("http://{endpoint}/readyz"));
    assert_eq!(code, "503");
    assert!(ready.contains("[-]linearizable_read failed: ") && ready.ends_with("readyz check failed\n"), "{ready:?}");
    assert_eq!(curl(&format!("http://{endpoint}/livez")), ("ok\n".to_string(), "200".to_string()));
}

/// `/metrics` serves Prometheus text with etcd's metric names: leader, proposals, the
/// database size and keys from the member's status, WAL fsync latencies, and gRPC calls
/// counted by method and code (a refused call with its code).
#[test]
fn metrics_use_etcds_names_and_follow_the_member() {
    // Every member also serves /metrics and /health on its own metrics port.
    let metrics_ports: Vec<u16> = (0..3).map(|_| detcd_tests::free_port()).collect();
    let mut cluster = Cluster::prepare(3, &[]);
    for (i, port) in metrics_ports.iter().enumerate() {
        cluster.start_member_with(i, &["--listen-metrics-urls", &format!("http://127.0.0.1:{port}")]);
    }
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    for i in 0..5 {
        let put = etcdctl(&endpoint, &["put", &format!("metric-key-{i}"), "v"], None);
        assert_eq!(put.code, 0, "{}", put.stderr);
    }
    // A put with an empty key is refused with InvalidArgument.
    let refused = etcdctl(&endpoint, &["put", "", "v"], None);
    assert_ne!(refused.code, 0);
    // A call of another service than KV (which the client port's front service hands to
    // the router, not straight to the KV server).
    let status = etcdctl(&endpoint, &["endpoint", "status"], None);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let (text, code) = curl(&format!("http://{endpoint}/metrics"));
    assert_eq!(code, "200");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert!(value("etcd_server_leader_changes_seen_total") >= 1.0);
    assert!(value("etcd_server_proposals_committed_total") >= 5.0);
    assert!(value("etcd_server_proposals_applied_total") >= 5.0);
    assert_eq!(value("etcd_server_proposals_pending"), 0.0);
    assert!(value("etcd_debugging_mvcc_keys_total") >= 5.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 5.0, "every put was synced");
    assert!(text.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram"));
    // Each peer connection is probed when it opens, then every few seconds: a round trip
    // per peer, labelled with its id as etcd labels it.
    let peers_timed = wait_for(Duration::from_secs(10), || {
        let (text, _) = curl(&format!("http://{endpoint}/metrics"));
        let timed = text.lines().filter(|l| l.starts_with("etcd_network_peer_round_trip_time_seconds_count{To=")).count();
        (timed == 2).then_some(())
    });
    assert!(peers_timed.is_some(), "no round trip measured to both peers");
    // gRPC calls by method (and code): the sum over the lines of `name` whose labels
    // hold every one of `labels`.
    let counted = |name: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    let put = r#"grpc_method="Put""#;
    assert!(counted("grpc_server_started_total", &[put, r#"grpc_service="etcdserverpb.KV""#, r#"grpc_type="unary""#]) >= 6.0, "{text}");
    assert!(counted("grpc_server_handled_total", &[put, r#"grpc_code="OK""#]) >= 5.0, "{text}");
    assert_eq!(counted("grpc_server_handled_total", &[put, r#"grpc_code="InvalidArgument""#]), 1.0, "{text}");
    let (maintenance, status_method) = (r#"grpc_service="etcdserverpb.Maintenance""#, r#"grpc_method="Status""#);
    assert!(counted("grpc_server_started_total", &[maintenance, status_method]) >= 1.0, "{text}");
    assert!(counted("grpc_server_handled_total", &[maintenance, status_method, r#"grpc_code="OK""#]) >= 1.0, "{text}");
    // Without a quorum: no leader.
    let follower_endpoint = cluster.members[1].endpoint();
    cluster.kill_member(0);
    cluster.kill_member(2);
    let leaderless = wait_for(Duration::from_secs(15), || {
        let (text, _) = curl(&format!("http://{follower_endpoint}/metrics"));
        text.lines().any(|l| l == "etcd_server_has_leader 0").then_some(())
    });
    assert!(leaderless.is_some(), "etcd_server_has_leader fell to 0");
    let metrics_endpoint = format!("127.0.0.1:{}", metrics_ports[1]);
    let (text, code) = curl(&format!("http://{metrics_endpoint}/metrics"));
    assert_eq!(code, "200");
    assert!(text.lines().any(|l| l == "etcd_server_has_leader 0"), "{text}");
    assert_eq!(curl(&format!("http://{metrics_endpoint}/health")), (r#"{"health":"false"}"#.to_string(), "503".to_string()));
}

/// SIGTERM stops a member at once with etcd's line and exit status 0; it starts again
/// from its data dir with every acknowledged write.
#[test]
fn sigterm_stops_a_member_cleanly_and_it_restarts_with_its_data() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    for i in 0..20 {
        let put = etcdctl(&endpoint, &["put", &format!("term-key-{i:02}"), &format!("v{i}")], None);
        assert_eq!(put.code, 0, "{}", put.stderr);
    }
    let status = cluster.terminate_member(0, Duration::from_secs(5)).expect("stopped within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(cluster.log(0).contains("detcd: received terminated signal, shutting down..."), "{}", cluster.log(0));
    cluster.start_member(0);
    let all = wait_for(Duration::from_secs(15), || {
        let got = etcdctl(&endpoint, &["get", "--prefix", "term-key-", "--keys-only", "--consistency=s"], None);
        (got.code == 0 && got.stdout.lines().filter(|l| !l.is_empty()).count() == 20).then_some(())
    });
    assert!(all.is_some(), "the restarted member serves every acknowledged write:\n{}", cluster.diagnostics());
}

/// `etcdctl snapshot save` against detcd, `detcd snapshot status` in etcd's three forms,
/// `detcd snapshot restore` into a new three-member cluster holding the same data (and
/// revisions), and a damaged file refused without writing anything.
#[test]
fn snapshot_save_status_and_restore_into_a_new_cluster() {
    let mut source = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut source, 0);
    let endpoint = source.endpoints()[0].clone();
    for i in 0..30 {
        assert_eq!(etcdctl(&endpoint, &["put", &format!("s{i:02}"), &format!("value-{i}")], None).stdout, "OK\n");
    }
    assert_eq!(etcdctl(&endpoint, &["del", "s07"], None).stdout, "1\n");
    let file = source.scratch_dir().join("snap.db");
    let file_arg = file.to_str().expect("utf-8 path");
    let saved = etcdctl(&endpoint, &["snapshot", "save", file_arg], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    assert_eq!(saved.stdout, format!("Snapshot saved at {file_arg}\n"));
    let before = etcdctl(&endpoint, &["get", "--prefix", "", "-w", "json"], None).stdout;
    let revision = |json: &str| -> i64 {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        value["header"]["revision"].as_i64().expect("revision")
    };
    let kvs = |json: &str| -> Vec<(String, String, i64, i64, i64)> {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        value["kvs"]
            .as_array()
            .expect("kvs")
            .iter()
            .map(|kv| {
                let field = |name: &str| kv[name].as_i64().unwrap_or(0);
                (kv["key"].as_str().unwrap_or("").to_string(), kv["value"].as_str().unwrap_or("").to_string(), field("create_revision"), field("mod_revision"), field("version"))
            })
            .collect()
    };

    // Status: "hash, revision, total keys, size", the table and the JSON, as etcdctl's.
    let status = detcd(&["snapshot", "status", file_arg, "-w", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let json: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("status json");
    assert_eq!(json["revision"].as_i64(), Some(revision(&before)));
    // Every live key's record, plus the deleted key's put and tombstone.
    let total_keys = kvs(&before).len() as u64 + 2;
    assert_eq!(json["totalKey"].as_u64(), Some(total_keys), "{json}");
    assert_eq!(json["totalSize"].as_u64(), Some(std::fs::metadata(&file).expect("file").len()));
    let hash = json["hash"].as_u64().expect("hash");
    let simple = detcd(&["snapshot", "status", file_arg]).stdout;
    assert!(simple.starts_with(&format!("{hash:x}, {}, {total_keys}, ", revision(&before))), "{simple:?}");
    let table = detcd(&["snapshot", "status", file_arg, "-w", "table"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[1].contains("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |"), "{table}");
    assert!(lines[3].starts_with(&format!("| {hash:x} |")), "{table}");

    // Restore into three fresh data dirs of a new cluster, then start it.
    let mut restored = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let member = &restored.members[i];
        let data_dir = member.data_dir.to_str().expect("utf-8").to_string();
        let advertise = format!("http://127.0.0.1:{}", member.peer_port);
        let name = member.name.clone();
        let initial_cluster = restored.initial_cluster().to_string();
        let args = [
            "snapshot", "restore", file_arg, "--name", &name, "--initial-cluster", &initial_cluster,
            "--initial-cluster-token", detcd_tests::CLUSTER_TOKEN, "--initial-advertise-peer-urls", &advertise, "--data-dir", &data_dir,
        ];
        let out = detcd(&args);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with(&format!("restored snapshot {file_arg} (revision {}", revision(&before))), "{out:?}");
        let again = detcd(&args);
        assert_eq!((again.code, again.stderr.trim()), (5, format!("Error: data-dir {data_dir:?} exists").as_str()));
    }
    for i in 0..3 {
        restored.start_member(i);
    }
    wait_writable(&rt, &mut restored, 0);
    let all = restored.endpoints().join(",");
    // (`wait_writable` wrote its probe key again: compare the test's keys.)
    let written_keys = etcdctl(&endpoint, &["get", "--prefix", "s", "-w", "json"], None).stdout;
    let after = etcdctl(&all, &["get", "--prefix", "s", "-w", "json"], None).stdout;
    assert_eq!(kvs(&after).len(), 29);
    assert_eq!(kvs(&after), kvs(&written_keys), "the restored cluster holds the same keys, values, revisions and versions");
    assert_eq!(etcdctl(&all, &["put", "after", "restore"], None).stdout, "OK\n");
    let written = etcdctl(&all, &["get", "after", "-w", "json"], None).stdout;
    assert!(revision(&written) > revision(&before), "revisions continue from the snapshot's");
    // A different cluster: new ids.
    let new_id = etcdctl(&all, &["endpoint", "status", "-w", "json"], None).stdout;
    let old_id = etcdctl(&endpoint, &["endpoint", "status", "-w", "json"], None).stdout;
    let cluster_id = |json: &str| serde_json::from_str::<serde_json::Value>(json).expect("json")[0]["Status"]["header"]["cluster_id"].as_u64();
    assert_ne!(cluster_id(&new_id), cluster_id(&old_id));

    // A damaged or cut file is refused, and nothing is written.
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[100] ^= 0x01;
    let damaged = source.scratch_dir().join("damaged.db");
    std::fs::write(&damaged, &bytes).expect("write");
    let damaged_arg = damaged.to_str().expect("utf-8");
    let refused = detcd(&["snapshot", "status", damaged_arg]);
    assert_eq!((refused.code, refused.stderr.trim()), (5, "Error: snapshot file is damaged: sha256 checksum mismatch"));
    let target = source.scratch_dir().join("never.etcd");
    let target_arg = target.to_str().expect("utf-8");
    let refused = detcd(&["snapshot", "restore", damaged_arg, "--data-dir", target_arg]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(!target.exists(), "a refused restore writes nothing");
    std::fs::write(&damaged, &std::fs::read(&file).expect("read")[..600]).expect("write");
    let cut = detcd(&["snapshot", "status", damaged_arg]);
    assert!(cut.code == 5 && cut.stderr.contains("truncated or damaged"), "{cut:?}");
}

/// `--experimental-corrupt-check-time`: healthy members agree, so the periodic check
/// raises no alarm while writes go on.
#[test]
fn the_periodic_corruption_check_stays_quiet_on_a_healthy_cluster() {
    let mut cluster = Cluster::start(3, &["--experimental-corrupt-check-time", "200ms"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    for i in 0..30 {
        assert_eq!(etcdctl(&all, &["put", &format!("c{i}"), "v"], None).stdout, "OK\n");
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let alarms = etcdctl(&all, &["alarm", "list"], None);
    assert_eq!((alarms.code, alarms.stdout.as_str()), (0, ""), "{alarms:?}\n{}", cluster.diagnostics());
    assert_eq!(etcdctl(&all, &["put", "after", "checks"], None).stdout, "OK\n");
}

/// `--experimental-initial-corrupt-check`: a member whose data differ from its peers'
/// refuses to start; a healthy one passes. The damage is made the way an operator could:
/// member 2's data dir is replaced by a backup of *another* cluster restored under member
/// 2's identity, so the whole log is applied on top of foreign keys and its key space
/// diverges from its peers' at the same revisions.
#[test]
fn the_initial_corruption_check_refuses_a_member_whose_data_differ() {
    let mut cluster = Cluster::start(3, &["--experimental-initial-corrupt-check"]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    for i in 0..10 {
        assert_eq!(etcdctl(&all, &["put", &format!("k{i:02}"), "ours"], None).code, 0);
    }
    let mut foreign = Cluster::start(1, &[]);
    wait_writable(&rt, &mut foreign, 0);
    for i in 0..10 {
        assert_eq!(etcdctl(&foreign.endpoints()[0], &["put", &format!("k{i:02}"), "foreign"], None).code, 0);
    }
    let backup = cluster.scratch_dir().join("foreign.db");
    let backup_arg = backup.to_str().expect("utf-8").to_string();
    assert_eq!(etcdctl(&foreign.endpoints()[0], &["snapshot", "save", &backup_arg], None).code, 0);
    drop(foreign);
    cluster.kill_member(2);
    let data_dir = cluster.members[2].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).expect("remove data dir");
    let initial_cluster = cluster.initial_cluster().to_string();
    let advertise = format!("http://127.0.0.1:{}", cluster.members[2].peer_port);
    let restored = detcd(&[
        "snapshot", "restore", &backup_arg, "--name", "m2", "--initial-cluster", &initial_cluster,
        "--initial-cluster-token", detcd_tests::CLUSTER_TOKEN, "--initial-advertise-peer-urls", &advertise, "--data-dir", data_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(restored.code, 0, "{restored:?}");
    // A leader that remembers how far member 2 got would tell it to commit entries its
    // restored log does not have, and raft stops (etcd's "tocommit is out of range"):
    // restart the others first, so the new leader probes member 2 from scratch.
    cluster.kill_member(0);
    cluster.kill_member(1);
    cluster.start_member(0);
    cluster.start_member(1);
    wait_writable(&rt, &mut cluster, 0);
    // Started on the foreign backup, member 2 applies the whole log on top of it.
    cluster.start_member(2);
    let endpoint = cluster.members[2].endpoint();
    let caught_up = wait_for(Duration::from_secs(20), || {
        let got = etcdctl(&endpoint, &["get", "k09", "--consistency=s", "--print-value-only"], None).stdout;
        (got.trim() == "ours").then_some(())
    });
    assert!(caught_up.is_some(), "member 2 never caught up\n{}", cluster.diagnostics());
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_member(2);
    // The others move past member 2's revision, so they can hash at it.
    let endpoints = format!("{},{}", cluster.members[0].endpoint(), cluster.members[1].endpoint());
    for i in 0..40 {
        assert_eq!(etcdctl(&endpoints, &["put", &format!("later{i:02}"), "x"], None).code, 0);
    }
    cluster.start_member(2);
    let exited = cluster.wait_member_exit(2, Duration::from_secs(20));
    assert!(exited.is_some_and(|status| !status.success()), "member 2 started although its data differ\n{}", cluster.diagnostics());
    assert!(cluster.log(2).contains("found data inconsistency with peers"), "{}", cluster.log(2));
    // A healthy member passes the same check against the other healthy one.
    cluster.kill_member(0);
    cluster.start_member(0);
    let passed = wait_for(Duration::from_secs(20), || cluster.log(0).contains("initial corruption checking passed").then_some(()));
    assert!(passed.is_some(), "{}", cluster.log(0));
    assert!(cluster.log(0).contains("1 peer(s) compared"), "{}", cluster.log(0));
}

/// `--logger zap --log-outputs stderr,<file>`: every line in the file is one JSON object
/// with etcd's keys, the start and the leader's election are there; a second process on
/// the same data dir is refused while the first runs, and the first keeps serving.
#[test]
fn zap_logs_to_a_file_and_a_data_dir_serves_one_process() {
    let mut cluster = Cluster::prepare(1, &["--logger", "zap"]);
    let log_path = cluster.scratch_dir().join("zap.log");
    let outputs = format!("stderr,{}", log_path.display());
    cluster.start_member_with(0, &["--log-outputs", &outputs]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let endpoint = cluster.members[0].endpoint();
    let text = std::fs::read_to_string(&log_path).expect("the log file was written");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for line in &lines {
        for key in ["level", "ts", "caller", "msg"] {
            assert!(line.get(key).is_some_and(|v| v.is_string()), "no {key} in {line}");
        }
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["msg"].as_str()).collect();
    assert!(messages.contains(&"starting an etcd server"), "{messages:?}");
    assert!(messages.contains(&"ready to serve client requests"), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("elected leader ")), "{messages:?}");
    let ready = lines.iter().find(|l| l["msg"] == "ready to serve client requests").expect("ready line");
    assert_eq!(ready["level"], "info");
    assert!(ready["local-member-id"].as_str().is_some_and(|id| id.len() == 16), "{ready}");

    // The same data dir, other ports: refused at once, nothing of the first touched.
    let data_dir = cluster.members[0].data_dir.display().to_string();
    let (client, peer) = (detcd_tests::free_port(), detcd_tests::free_port());
    let second = detcd(&[
        "--name",
        &cluster.members[0].name,
        "--data-dir",
        &data_dir,
        "--listen-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "--advertise-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "--initial-cluster",
        &format!("{}=http://127.0.0.1:{peer}", cluster.members[0].name),
    ]);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains("is in use by another process"), "{second:?}");
    let put = etcdctl(&endpoint, &["put", "still", "serving"], None);
    assert_eq!(put.code, 0, "{}", put.stderr);

    // Bad flags: etcd's words, exit status 2.
    let bad = detcd(&["--logger", "glog"]);
    assert_eq!((bad.code, bad.stderr.trim()), (2, "detcd: unknown logger option \"glog\""));
}

/// etcd's remaining flags: those detcd implements change what they say, those with no
/// meaning here start the member with a warning naming them, the few not supported yet
/// stop it with a clear error — so an etcd command line or environment starts detcd.
#[test]
fn etcds_other_flags_start_the_member_or_say_why_not() {
    let mut cluster = Cluster::prepare(1, &[]);
    cluster.start_member_with(
        0,
        &[
            "--pre-vote=false",
            "--max-concurrent-streams",
            "1000",
            "--grpc-keepalive-interval",
            "30s",
            "--grpc-keepalive-timeout",
            "5s",
            "--metrics",
            "extensive",
            "--enable-pprof",
            "--cors",
            "*",
            "--experimental-compaction-batch-limit",
            "500",
            "--debug",
        ],
    );
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let log = cluster.log(0);
    for flag in ["--enable-pprof", "--cors", "--experimental-compaction-batch-limit"] {
        assert!(log.contains(&format!("{flag} is accepted for etcd compatibility and has no effect in detcd")), "{flag}: {log}");
    }
    assert!(!log.contains("--metrics is accepted"), "{log}");
    for (flags, error) in [
        (&["--enable-v2"][..], "detcd: --enable-v2: detcd serves the v3 API only"),
        (&["--client-crl-file", "/etc/crl.pem"], "detcd: --client-crl-file is not supported by detcd yet"),
        (&["--metrics", "everything"], "detcd: unknown metrics option \"everything\": must be 'basic' or 'extensive'"),
    ] {
        let refused = detcd(flags);
        assert_eq!((refused.code, refused.stderr.trim()), (2, error), "{flags:?}");
    }
}
