//! Lease end to end: the real `etcdctl lease` forms (`../shared/etcdctl-reference.txt`),
//! expiry after the TTL on a 3-member cluster, keep-alive keeping a lease across the
//! leader's death, and a lease outliving a full-cluster restart.

use std::time::Duration;

use detcd_tests::{connect, etcdctl, etcdctl_for, leader_index, runtime, wait_writable, Cluster};
use etcd_client::PutOptions;

/// The lease id etcdctl printed in "lease <id> granted with TTL(<n>s)".
fn granted_id(stdout: &str) -> String {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"lease"), "{stdout}");
    assert_eq!(words.get(2..4), Some(&["granted", "with"][..]), "{stdout}");
    assert_eq!(words[1].len(), 16, "ids are 16 hex digits: {stdout}");
    words[1].to_string()
}

#[test]
fn etcdctl_lease_forms_match_etcd() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    let one = cluster.members[1].endpoint();

    let grant = etcdctl(&all, &["lease", "grant", "60"], None);
    let id = granted_id(&grant.stdout);
    assert_eq!(grant.stdout, format!("lease {id} granted with TTL(60s)\n"));
    let json = etcdctl(&all, &["lease", "grant", "60", "-w", "json"], None);
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(value["TTL"], 60);
    assert_eq!(value["Error"], "");
    let second = format!("{:016x}", value["ID"].as_i64().expect("ID"));

    assert_eq!(etcdctl(&all, &["put", &format!("--lease={id}"), "lk1", "v1"], None).stdout, "OK\n");
    assert_eq!(etcdctl(&all, &["put", &format!("--lease={id}"), "lk2", "v2"], None).stdout, "OK\n");
    let ttl = etcdctl(&one, &["lease", "timetolive", &id], None).stdout;
    assert!(
        ttl == format!("lease {id} granted with TTL(60s), remaining(59s)\n") || ttl == format!("lease {id} granted with TTL(60s), remaining(60s)\n"),
        "{ttl}"
    );
    let keys = etcdctl(&one, &["lease", "timetolive", &id, "--keys"], None).stdout;
    assert!(keys.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{keys}");
    assert!(keys.ends_with("attached keys([lk1 lk2])\n") || keys.ends_with("attached keys([lk2 lk1])\n"), "{keys}");
    let ttl_json: serde_json::Value = serde_json::from_str(etcdctl(&one, &["lease", "timetolive", &id, "--keys", "-w", "json"], None).stdout.trim()).expect("json");
    assert_eq!(ttl_json["granted-ttl"], 60);
    assert_eq!(ttl_json["keys"].as_array().map(|k| k.len()), Some(2));

    let mut expected_list = [id.clone(), second.clone()];
    expected_list.sort();
    let list = etcdctl(&one, &["lease", "list"], None).stdout;
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort_unstable();
    assert_eq!(list.lines().next(), Some("found 2 leases"), "{list}");
    assert_eq!(listed, expected_list.iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(etcdctl(&one, &["lease", "keep-alive", "--once", &id], None).stdout, format!("lease {id} keepalived with TTL(60)\n"));
    let streaming = etcdctl_for(3, &one, &["lease", "keep-alive", &id]);
    assert_eq!(streaming.code, 124, "{streaming:?}");
    assert!(streaming.stdout.starts_with(&format!("lease {id} keepalived with TTL(60)\n")), "{streaming:?}");

    let get = etcdctl(&one, &["get", "--prefix", "lk", "-w", "json"], None);
    let kvs: serde_json::Value = serde_json::from_str(get.stdout.trim()).expect("json");
    assert_eq!(format!("{:016x}", kvs["kvs"][0]["lease"].as_i64().expect("lease")), id);

    assert_eq!(etcdctl(&all, &["lease", "revoke", &id], None).stdout, format!("lease {id} revoked\n"));
    assert_eq!(etcdctl(&one, &["get", "--prefix", "lk"], None).stdout, "", "attached keys went with the lease");
    assert_eq!(etcdctl(&one, &["lease", "timetolive", &id], None).stdout, format!("lease {id} already expired\n"));
    let keep_alive = etcdctl(&one, &["lease", "keep-alive", "--once", &id], None);
    assert!(keep_alive.stderr.contains("Error: etcdserver: requested lease not found"), "{keep_alive:?}");
    let revoke_again = etcdctl(&one, &["lease", "revoke", &id], None);
    assert!(revoke_again.stderr.contains("Error: failed to revoke lease (etcdserver: requested lease not found)"), "{revoke_again:?}");
    let put = etcdctl(&one, &["put", &format!("--lease={id}"), "lk3", "v3"], None);
    assert!(put.stderr.contains("Error: etcdserver: requested lease not found"), "{put:?}");
    let bad = etcdctl(&one, &["lease", "timetolive", "zz"], None);
    assert!(bad.stderr.contains("Error: bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"), "{bad:?}");

    // A short lease expires on its own (the minimum TTL here is 2 s).
    let short = granted_id(&etcdctl(&all, &["lease", "grant", "2"], None).stdout);
    assert_eq!(etcdctl(&all, &["put", &format!("--lease={short}"), "short", "v"], None).stdout, "OK\n");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(etcdctl(&one, &["get", "short"], None).stdout, "");
    assert_eq!(etcdctl(&one, &["lease", "timetolive", &short], None).stdout, format!("lease {short} already expired\n"));
}

#[test]
fn keep_alive_keeps_a_lease_across_the_leaders_death() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let leader = rt.block_on(leader_index(&cluster));
    let follower = (0..3).find(|i| *i != leader).expect("follower");
    let endpoint = cluster.members[follower].endpoint();
    let (id, mut keeper, mut responses) = rt.block_on(async {
        let mut client = connect(&endpoint).await;
        let id = client.lease_grant(3, None).await.expect("grant").id();
        client.put("kept", "v", Some(PutOptions::new().with_lease(id))).await.expect("put");
        let (keeper, responses) = client.lease_keep_alive(id).await.expect("keep-alive stream");
        (id, keeper, responses)
    });
    // Keep it alive every second for 8 s, killing the leader after 2 s. A broken
    // stream is reopened, as clientv3 does.
    for second in 0..8 {
        rt.block_on(async {
            if keeper.keep_alive().await.is_err() {
                let (new_keeper, new_responses) = connect(&endpoint).await.lease_keep_alive(id).await.expect("reopen");
                keeper = new_keeper;
                responses = new_responses;
                keeper.keep_alive().await.expect("keep-alive sent");
            }
            let answer = tokio::time::timeout(Duration::from_millis(900), responses.message()).await;
            if let Ok(Ok(Some(answer))) = answer {
                assert_eq!(answer.ttl(), 3, "renewed with its TTL");
            }
        });
        if second == 2 {
            cluster.kill_member(leader);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let value = rt.block_on(async { connect(&endpoint).await.get("kept", None).await.expect("get").kvs().len() });
    assert_eq!(value, 1, "lease {id:x} was kept alive through the change of leader\n{}", cluster.diagnostics());
    // Once nobody renews it, it goes within TTL + the new leader's extension.
    drop(keeper);
    std::thread::sleep(Duration::from_millis(5500));
    let left = rt.block_on(async { connect(&endpoint).await.get("kept", None).await.expect("get").kvs().len() });
    assert_eq!(left, 0, "lease expired once nobody renewed it");
}

#[test]
fn a_lease_outlives_a_full_cluster_restart() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    let id = granted_id(&etcdctl(&all, &["lease", "grant", "30"], None).stdout);
    assert_eq!(etcdctl(&all, &["put", &format!("--lease={id}"), "durable", "v"], None).stdout, "OK\n");
    for i in 0..3 {
        cluster.kill_member(i);
    }
    for i in 0..3 {
        cluster.start_member(i);
    }
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    assert_eq!(etcdctl(&all, &["get", "durable", "--print-value-only"], None).stdout, "v\n");
    let ttl = etcdctl(&all, &["lease", "timetolive", &id, "--keys"], None).stdout;
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")), "{ttl}");
    assert!(ttl.ends_with("attached keys([durable])\n"), "{ttl}");
}
