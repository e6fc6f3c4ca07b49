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
