//! Migration from etcd: data written into a real etcd 3.4 (Debian's `etcd-server`),
//! saved with `etcdctl snapshot save` (a bbolt file), restored with `detcd snapshot
//! restore` into a new detcd cluster, which must serve the same keys, values,
//! revisions, versions, leases, history and compaction point.


use detcd_tests::{detcd, etcdctl, free_port, runtime, start_etcd, wait_writable, Cluster};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("json {e}: {out}"))
}

/// (key, value, create, mod, version, lease) of every key under `prefix`.
fn kvs(endpoint: &str, prefix: &str, extra: &[&str]) -> Vec<(String, String, i64, i64, i64, i64)> {
    let mut args = vec!["get", "--prefix", prefix, "-w", "json"];
    args.extend_from_slice(extra);
    let value = json(&etcdctl(endpoint, &args, None).stdout);
    value["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let field = |name: &str| kv[name].as_i64().unwrap_or(0);
                    let text = |name: &str| kv[name].as_str().unwrap_or("").to_string();
                    (text("key"), text("value"), field("create_revision"), field("mod_revision"), field("version"), field("lease"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_etcd_snapshot_restores_into_detcd_with_the_same_data() {
    let scratch = std::env::temp_dir().join(format!("detcd-migration-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let etcd = start_etcd(&scratch);
    let e = etcd.endpoint.clone();
    for i in 0..20 {
        assert_eq!(etcdctl(&e, &["put", &format!("m/{i:02}"), &format!("first-{i}")], None).code, 0);
    }
    let before_overwrite = json(&etcdctl(&e, &["endpoint", "status", "-w", "json"], None).stdout)[0]["Status"]["header"]["revision"].as_i64().expect("rev");
    for i in 0..5 {
        assert_eq!(etcdctl(&e, &["put", &format!("m/{i:02}"), &format!("second-{i}")], None).code, 0);
    }
    assert_eq!(etcdctl(&e, &["del", "m/07"], None).stdout, "1\n");
    // A lease with two keys, a compaction, a txn after it.
    let granted = etcdctl(&e, &["lease", "grant", "600"], None).stdout;
    let lease_hex = granted.split_whitespace().nth(1).expect("lease id").to_string();
    for key in ["leased/a", "leased/b"] {
        assert_eq!(etcdctl(&e, &["put", key, "v", "--lease", &lease_hex], None).code, 0);
    }
    assert_eq!(etcdctl(&e, &["compact", &before_overwrite.to_string()], None).code, 0);
    let txn = etcdctl(&e, &["txn"], Some("create(\"m/txn-1\") = \"0\"\n\nput m/txn-1 one\nput m/txn-2 two\n\n\n"));
    assert_eq!(txn.code, 0, "{txn:?}");
    let revision = json(&etcdctl(&e, &["endpoint", "status", "-w", "json"], None).stdout)[0]["Status"]["header"]["revision"].as_i64().expect("rev");

    let file = scratch.join("etcd.snapshot");
    let file_arg = file.to_str().expect("utf-8");
    let saved = etcdctl(&e, &["snapshot", "save", file_arg], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    let expected_all = kvs(&e, "", &[]);
    let expected_history = kvs(&e, "m/0", &["--rev", &(before_overwrite + 1).to_string()]);
    assert!(!expected_history.is_empty());

    // detcd reads etcd's file: status, then a restored cluster of three.
    let status = detcd(&["snapshot", "status", file_arg, "-w", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(json(&status.stdout)["revision"].as_i64(), Some(revision), "{}", status.stdout);
    let mut restored = Cluster::prepare(3, &[]);
    let initial_cluster = restored.initial_cluster().to_string();
    for i in 0..3 {
        let member = &restored.members[i];
        let (name, data_dir) = (member.name.clone(), member.data_dir.to_str().expect("utf-8").to_string());
        let advertise = format!("http://127.0.0.1:{}", member.peer_port);
        let args = [
            "snapshot", "restore", file_arg, "--name", &name, "--initial-cluster", &initial_cluster,
            "--initial-cluster-token", detcd_tests::CLUSTER_TOKEN, "--initial-advertise-peer-urls", &advertise, "--data-dir", &data_dir,
        ];
        let out = detcd(&args);
        assert_eq!(out.code, 0, "{out:?}");
    }
    for i in 0..3 {
        restored.start_member(i);
    }
    let rt = runtime();
    wait_writable(&rt, &mut restored, 0);
    let d = restored.endpoints().join(",");
    // (`wait_writable` wrote a probe key: compare the keys etcd had.)
    let mut restored_all = kvs(&d, "", &[]);
    restored_all.retain(|kv| expected_all.iter().any(|e| e.0 == kv.0));
    assert_eq!(restored_all, expected_all, "the same keys, values, revisions, versions and leases");
    assert_eq!(kvs(&d, "m/0", &["--rev", &(before_overwrite + 1).to_string()]), expected_history, "history after the compaction point is kept");
    let compacted = etcdctl(&d, &["get", "m/00", "--rev", &(before_overwrite - 1).to_string()], None);
    assert!(compacted.stderr.contains("etcdserver: mvcc: required revision has been compacted"), "{compacted:?}");
    let leases = etcdctl(&d, &["lease", "list"], None).stdout;
    assert!(leases.contains(&lease_hex), "{leases}");
    let ttl = etcdctl(&d, &["lease", "timetolive", &lease_hex, "--keys"], None).stdout;
    assert!(ttl.contains("leased/a") && ttl.contains("leased/b"), "{ttl}");
    // Revisions continue from etcd's.
    assert_eq!(etcdctl(&d, &["put", "after", "x"], None).code, 0);
    let after = kvs(&d, "after", &[]);
    assert!(after[0].3 > revision, "{after:?} after {revision}");

    // A damaged etcd file is refused before anything is written.
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let damaged = scratch.join("damaged.snapshot");
    std::fs::write(&damaged, &bytes).expect("write");
    let refused = detcd(&["snapshot", "status", damaged.to_str().expect("utf-8")]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("sha256 checksum mismatch"), "{refused:?}");
    drop(etcd);
    let _ = std::fs::remove_dir_all(&scratch);
}
