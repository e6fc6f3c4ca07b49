//! A 3-member production cluster on loopback, driven by the `etcd-client` crate and by
//! the real `etcdctl`: outputs match etcd's (`../shared/etcdctl-reference.txt`) in form,
//! acknowledged writes survive killing the leader, and a killed member catches up.

use std::time::Duration;

use detcd_tests::{connect, etcdctl, runtime, wait_for, wait_writable, Cluster};
use etcd_client::GetOptions;

/// The member id of the leader as member `endpoint` sees it.
async fn leader_seen_by(endpoint: &str) -> Option<u64> {
    let mut client = connect(endpoint).await;
    let status = client.status().await.ok()?;
    (status.leader() != 0).then_some(status.leader())
}

async fn member_id_of(endpoint: &str) -> u64 {
    let mut client = connect(endpoint).await;
    client.status().await.expect("status").header().expect("header").member_id()
}

#[test]
fn etcdctl_against_a_three_member_cluster() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    let follower_or_any = cluster.members[2].endpoint();

    for (key, value) in [("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("foo3", "bar3"), ("zoo", "zebra")] {
        let out = etcdctl(&all, &["put", key, value], None);
        assert_eq!((out.code, out.stdout.as_str()), (0, "OK\n"), "{out:?}");
    }
    // Any member answers, and sees the writes (linearizable by default).
    let get = etcdctl(&follower_or_any, &["get", "foo"], None);
    assert_eq!((get.code, get.stdout.as_str()), (0, "foo\nbar\n"), "{get:?}");
    let prefix = etcdctl(&all, &["get", "--prefix", "foo"], None);
    assert_eq!(prefix.stdout, "foo\nbar\nfoo1\nbar1\nfoo2\nbar2\nfoo3\nbar3\n");
    let keys_only = etcdctl(&all, &["get", "--prefix", "--keys-only", "foo"], None);
    assert_eq!(keys_only.stdout, "foo\n\nfoo1\n\nfoo2\n\nfoo3\n\n");
    let sorted = etcdctl(&all, &["get", "--prefix", "foo", "--sort-by=MODIFY", "--order=DESCEND", "--keys-only"], None);
    assert_eq!(sorted.stdout, "foo3\n\nfoo2\n\nfoo1\n\nfoo\n\n");
    let range = etcdctl(&all, &["get", "foo", "foo3"], None);
    assert_eq!(range.stdout, "foo\nbar\nfoo1\nbar1\nfoo2\nbar2\n");
    let from_key = etcdctl(&all, &["get", "--from-key", "foo2"], None);
    assert_eq!(from_key.stdout, "foo2\nbar2\nfoo3\nbar3\nzoo\nzebra\n");
    let serializable = etcdctl(&follower_or_any, &["get", "zoo", "--consistency=s"], None);
    assert_eq!(serializable.stdout, "zoo\nzebra\n");

    // -w json: the same fields as etcd, base64 keys and values, header filled.
    let json = etcdctl(&all, &["get", "foo", "-w", "json"], None);
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("json output");
    let header = &parsed["header"];
    assert!(header["cluster_id"].as_u64().expect("cluster_id") != 0);
    assert!(header["member_id"].as_u64().expect("member_id") != 0);
    assert!(header["raft_term"].as_u64().expect("raft_term") >= 1);
    let revision = header["revision"].as_i64().expect("revision");
    assert_eq!(revision, 7, "a new cluster is at revision 1; six puts later it is at 7 (one __ready put)");
    let kv = &parsed["kvs"][0];
    assert_eq!(kv["key"], "Zm9v");
    assert_eq!(kv["value"], "YmFy");
    assert_eq!(kv["version"], 1);
    assert_eq!(kv["create_revision"], kv["mod_revision"]);
    assert_eq!(parsed["count"], 1);

    let limited = etcdctl(&all, &["get", "--prefix", "foo", "--limit", "2", "-w", "json"], None);
    let parsed: serde_json::Value = serde_json::from_str(&limited.stdout).expect("json output");
    assert_eq!(parsed["kvs"].as_array().expect("kvs").len(), 2);
    assert_eq!(parsed["more"], true);
    assert_eq!(parsed["count"], 4);

    // Historical reads and revision errors.
    let put_v2 = etcdctl(&all, &["put", "foo", "bar-v2", "--prev-kv"], None);
    assert_eq!(put_v2.stdout, "OK\nfoo\nbar\n");
    let old = etcdctl(&all, &["get", "foo", &format!("--rev={}", kv["mod_revision"])], None);
    assert_eq!(old.stdout, "foo\nbar\n");
    let future = etcdctl(&all, &["get", "foo", "--rev=999"], None);
    assert_eq!(future.code, 1);
    assert!(future.stderr.contains("Error: etcdserver: mvcc: required revision is a future revision"), "{future:?}");

    // txn from stdin, both branches.
    let txn = etcdctl(&all, &["txn"], Some("value(\"foo\") = \"bar-v2\"\n\nput foo v3\nget foo\n\nput foo failed\n\n"));
    assert_eq!(txn.stdout, "SUCCESS\n\nOK\n\nfoo\nv3\n", "{txn:?}");
    let txn = etcdctl(&all, &["txn"], Some("value(\"foo\") = \"nope\"\n\nput foo v4\n\nput foo failed\nget foo\n\n"));
    assert_eq!(txn.stdout, "FAILURE\n\nOK\n\nfoo\nfailed\n", "{txn:?}");
    let create = etcdctl(&all, &["txn", "-w", "json"], Some("create(\"nokey\") = \"0\"\n\nput nokey created\n\n\n"));
    let parsed: serde_json::Value = serde_json::from_str(&create.stdout).expect("txn json");
    assert_eq!(parsed["succeeded"], true);

    // del.
    assert_eq!(etcdctl(&all, &["del", "foo3"], None).stdout, "1\n");
    assert_eq!(etcdctl(&all, &["del", "nosuchkey"], None).stdout, "0\n");
    assert_eq!(etcdctl(&all, &["del", "foo2", "--prev-kv"], None).stdout, "1\nfoo2\nbar2\n");
    assert_eq!(etcdctl(&all, &["del", "--prefix", "foo"], None).stdout, "2\n");
    assert_eq!(etcdctl(&all, &["get", "--prefix", "foo"], None).stdout, "");

    // compact, then the compacted errors.
    let compact = etcdctl(&all, &["compact", "5"], None);
    assert_eq!((compact.code, compact.stdout.as_str()), (0, "compacted revision 5\n"), "{compact:?}");
    let again = etcdctl(&all, &["compact", "5"], None);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("Error: etcdserver: mvcc: required revision has been compacted"));
    let physical = etcdctl(&all, &["compact", "6", "--physical"], None);
    assert_eq!(physical.stdout, "compacted revision 6\n");
    let compacted_read = etcdctl(&all, &["get", "foo", "--rev=2"], None);
    assert!(compacted_read.stderr.contains("required revision has been compacted"), "{compacted_read:?}");

    // Bad input: etcd's errors, nothing written.
    let before = etcdctl(&all, &["get", "zoo", "-w", "json"], None);
    let too_large = "x".repeat(1_600_000);
    let large = etcdctl(&all, &["put", "big"], Some(&too_large));
    assert_ne!(large.code, 0);
    assert!(large.stderr.contains("etcdserver: request is too large"), "{}", &large.stderr[..large.stderr.len().min(400)]);
    let after = etcdctl(&all, &["get", "zoo", "-w", "json"], None);
    let revision_of = |out: &str| serde_json::from_str::<serde_json::Value>(out).expect("json")["header"]["revision"].as_i64();
    assert_eq!(revision_of(&before.stdout), revision_of(&after.stdout), "a refused request writes nothing");

    // endpoint status shows one leader.
    let status = etcdctl(&all, &["endpoint", "status", "-w", "json"], None);
    let parsed: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    let leaders: Vec<u64> = parsed.as_array().expect("array").iter().map(|s| s["Status"]["leader"].as_u64().expect("leader")).collect();
    assert_eq!(leaders.len(), 3);
    assert!(leaders.iter().all(|l| *l == leaders[0] && *l != 0), "all members agree on the leader: {leaders:?}");
}

#[test]
fn etcd_client_crate_round_trip() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 1);
    rt.block_on(async {
        let mut client = connect(&cluster.members[1].endpoint()).await;
        let put = client.put("k1", "v1", None).await.expect("put");
        let revision = put.header().expect("header").revision();
        let mut other = connect(&cluster.members[2].endpoint()).await;
        let got = other.get("k1", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"v1");
        assert!(got.header().expect("header").revision() >= revision, "a linearizable read sees the acknowledged write");
        let empty_key = client.put("", "v", None).await.expect_err("empty key");
        assert!(empty_key.to_string().contains("etcdserver: key is not provided"), "{empty_key}");
        let prefix = other.get("k", Some(GetOptions::new().with_prefix())).await.expect("prefix");
        assert_eq!(prefix.count(), 1);
        // Over the gRPC message limit (--max-request-bytes + 512 KiB): etcd's code and words.
        // (etcdctl refuses such a request itself; this client sends it.)
        let oversized = client.put("big", vec![b'x'; 3_000_000], None).await.expect_err("an oversized message");
        match oversized {
            etcd_client::Error::GRpcStatus(status) => {
                assert_eq!(i32::from(status.code()), 8, "ResourceExhausted: {status:?}");
                assert_eq!(status.message(), "grpc: received message larger than max (3000010 vs. 2097152)");
            }
            other => panic!("expected a gRPC status, got {other}"),
        }
        assert_eq!(other.get("big", None).await.expect("get").count(), 0, "a refused request writes nothing");
        // The same limit for every service (etcd's is server-wide), here the auth service's.
        let oversized_user = client.user_add("u".repeat(3_000_000), "pw", None).await.expect_err("an oversized message");
        assert!(oversized_user.to_string().contains("grpc: received message larger than max ("), "{oversized_user}");
        assert!(oversized_user.to_string().contains(" vs. 2097152)"), "{oversized_user}");
    });
}

#[test]
fn killing_the_leader_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, &["--heartbeat-interval", "50", "--election-timeout", "500"]);
    let rt = runtime();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    wait_writable(&rt, &mut cluster, 0);
    let acknowledged = rt.block_on(async {
        let mut client = connect(&endpoints[0]).await;
        let mut acknowledged = Vec::new();
        for i in 0..200 {
            let key = format!("acked/{i:04}");
            if client.put(key.clone(), format!("v{i}"), None).await.is_ok() {
                acknowledged.push(key);
            }
        }
        acknowledged
    });
    assert_eq!(acknowledged.len(), 200, "a healthy cluster acknowledges every write");

    let leader_id = rt.block_on(leader_seen_by(&endpoints[0])).expect("a leader");
    let mut leader_index = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        if rt.block_on(member_id_of(endpoint)) == leader_id {
            leader_index = Some(i);
        }
    }
    let leader_index = leader_index.expect("the leader is a member");
    cluster.kill_member(leader_index);

    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader_index).collect();
    let new_leader = wait_for(Duration::from_secs(15), || {
        rt.block_on(leader_seen_by(&endpoints[survivors[0]])).filter(|l| *l != leader_id)
    });
    assert!(new_leader.is_some(), "a new leader is elected; log: {}", cluster.log(survivors[0]));

    rt.block_on(async {
        let mut client = connect(&endpoints[survivors[1]]).await;
        let all = client.get("acked/", Some(GetOptions::new().with_prefix())).await.expect("read after failover");
        let keys: Vec<String> = all.kvs().iter().map(|kv| kv.key_str().expect("utf8").to_string()).collect();
        assert_eq!(keys, acknowledged, "every acknowledged write survives the leader's death");
        let mut writer = connect(&endpoints[survivors[0]]).await;
        writer.put("after-failover", "ok", None).await.expect("the new leader serves writes");
    });
}

#[test]
fn a_killed_member_restarts_from_its_data_dir_and_catches_up() {
    let mut cluster = Cluster::start(3, &["--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-count", "50"]);
    let rt = runtime();
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    wait_writable(&rt, &mut cluster, 0);
    cluster.kill_member(2);
    // Values of 16 KiB: the snapshot files (2.4 MB) are over the size the data disk maps
    // instead of reading (`fs_disk::MAPPED_READ_BYTES_MIN`), so member 2's second start
    // loads its own snapshot through a mapping.
    let value = "v".repeat(16 * 1024);
    rt.block_on(async {
        let mut client = connect(&endpoints[0]).await;
        for i in 0..150 {
            // Member 2 may have been the leader: retry like a real client until a new
            // leader commits (a retried put of the same value is idempotent here).
            let mut attempts = 0;
            while let Err(error) = client.put(format!("later/{i:04}"), value.as_str(), None).await {
                attempts += 1;
                assert!(attempts < 20, "a majority still commits: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    cluster.start_member(2);
    // Serializable reads from member 2 alone show when it has caught up (it may need a
    // snapshot: snapshot-count is 50).
    let caught_up_within = |rt: &tokio::runtime::Runtime| {
        wait_for(Duration::from_secs(20), || {
            rt.block_on(async {
                let mut client = connect(&endpoints[2]).await;
                let options = GetOptions::new().with_prefix().with_serializable().with_count_only();
                let response = client.get("later/", Some(options)).await.ok()?;
                (response.count() == 150).then_some(())
            })
        })
    };
    let caught_up = caught_up_within(&rt);
    assert!(caught_up.is_some(), "member 2 caught up; log: {}", cluster.log(2));
    let snapshot_bytes = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir.join("member/snap")).map_or(0, |files| files.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).max().unwrap_or(0))
    };
    let own_snapshot = wait_for(Duration::from_secs(10), || (snapshot_bytes(&cluster.members[2].data_dir) > 1 << 20).then_some(()));
    assert!(own_snapshot.is_some(), "member 2 wrote a snapshot file over 1 MiB (largest: {} bytes)", snapshot_bytes(&cluster.members[2].data_dir));
    cluster.kill_member(2);
    cluster.start_member(2);
    let restarted = caught_up_within(&rt);
    assert!(restarted.is_some(), "member 2 recovers its state from its own data dir; log: {}", cluster.log(2));
}

/// `etcdctl member list` in etcd's three forms (every member started, with the name
/// and URLs it published through raft, in id order), `--endpoints` given as URLs, the
/// `--cluster` commands that dial the members' published client URLs, and a clear
/// error for membership changes, which detcd does not do yet.
#[test]
fn member_list_and_cluster_wide_commands() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let mut expected: Vec<String> = (0..3)
        .map(|i| {
            let member = &cluster.members[i];
            let id = rt.block_on(member_id_of(&member.endpoint()));
            format!("{id:016x}, started, {}, http://127.0.0.1:{}, http://127.0.0.1:{}, false", member.name, member.peer_port, member.client_port)
        })
        .collect();
    expected.sort();
    // Every member publishes itself shortly after it starts.
    let url = format!("http://{}", cluster.members[1].endpoint());
    let listed = wait_for(Duration::from_secs(10), || {
        let out = etcdctl(&url, &["member", "list"], None);
        (out.stdout.lines().map(str::to_string).collect::<Vec<_>>() == expected).then_some(out)
    });
    assert!(listed.is_some(), "member list never showed {expected:?}: {:?}", etcdctl(&url, &["member", "list"], None));

    let table = etcdctl(&url, &["member", "list", "-w", "table"], None).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 7, "{table}");
    assert!(lines[1].contains("|        ID        | STATUS  | NAME |"), "{table}");
    assert!(lines[1].ends_with("| IS LEARNER |"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&etcdctl(&url, &["member", "list", "-w", "json"], None).stdout).expect("json");
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["clientURLs"].as_array().is_some_and(|urls| urls.len() == 1)), "{json}");
    assert!(json["header"]["revision"].is_null(), "no revision in a member list header, as etcd: {json}");

    // --cluster dials every member's published client URL.
    let status = etcdctl(&url, &["endpoint", "status", "--cluster"], None);
    assert_eq!((status.code, status.stdout.lines().count()), (0, 3), "{status:?}");
    let health = etcdctl(&url, &["endpoint", "health", "--cluster"], None);
    // (etcdctl 3.4 prints health to stderr.)
    assert_eq!(health.stderr.lines().filter(|l| l.contains("is healthy")).count(), 3, "{health:?}");

    // A membership change sent to a follower goes through the leader; a second learner
    // is refused (etcd allows one); removing the learner again.
    let add = etcdctl(&url, &["member", "add", "m9", "--learner", "--peer-urls", "http://127.0.0.1:1"], None);
    assert_eq!(add.code, 0, "{add:?}");
    let second = etcdctl(&url, &["member", "add", "m10", "--learner", "--peer-urls", "http://127.0.0.1:2"], None);
    assert!(second.stderr.contains("etcdserver: too many learner members in cluster"), "{second:?}");
    let learner_id = add.stdout.split_whitespace().nth(1).expect("id").to_string();
    let removed = etcdctl(&url, &["member", "remove", &learner_id], None);
    assert_eq!(removed.code, 0, "{removed:?}");
    let listed = etcdctl(&url, &["member", "list"], None);
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");
}

/// etcd's Lock service through the `etcd-client` crate: the second locker waits until
/// the first unlocks, each holds a key `name/<lease>`, and a lock whose lease is revoked
/// is released.
#[test]
fn the_lock_service_serialises_lockers() {
    use etcd_client::LockOptions;
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let (first_endpoint, second_endpoint) = (cluster.members[0].endpoint(), cluster.members[1].endpoint());
    rt.block_on(async {
        let mut first = connect(&first_endpoint).await;
        let mut second = connect(&second_endpoint).await;
        let first_lease = first.lease_grant(30, None).await.expect("grant").id();
        let held = first.lock("mylock", Some(LockOptions::new().with_lease(first_lease))).await.expect("lock");
        assert_eq!(held.key(), format!("mylock/{first_lease:x}").as_bytes());
        let second_lease = second.lease_grant(30, None).await.expect("grant").id();
        let mut waiter = second.clone();
        let waiting = tokio::spawn(async move { waiter.lock("mylock", Some(LockOptions::new().with_lease(second_lease))).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting.is_finished(), "the second locker must wait while the first holds the lock");
        first.unlock(held.key()).await.expect("unlock");
        let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the waiter gets the lock").expect("task").expect("lock");
        assert_eq!(got.key(), format!("mylock/{second_lease:x}").as_bytes());
        // A third locker waits on the second, whose lease is then revoked.
        let third_lease = first.lease_grant(30, None).await.expect("grant").id();
        let mut third = first.clone();
        let waiting = tokio::spawn(async move { third.lock("mylock", Some(LockOptions::new().with_lease(third_lease))).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished());
        second.lease_revoke(second_lease).await.expect("revoke");
        let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("released by the revoke").expect("task").expect("lock");
        assert_eq!(got.key(), format!("mylock/{third_lease:x}").as_bytes());
    });
}

/// etcd's Election service through the `etcd-client` crate: the first campaigner leads,
/// a second waits; Leader and Observe follow proclaimed values; resigning hands over.
#[test]
fn the_election_service_elects_proclaims_and_hands_over() {
    use etcd_client::{ProclaimOptions, ResignOptions};
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let (first_endpoint, second_endpoint) = (cluster.members[0].endpoint(), cluster.members[2].endpoint());
    rt.block_on(async {
        let mut first = connect(&first_endpoint).await;
        let mut second = connect(&second_endpoint).await;
        let first_lease = first.lease_grant(30, None).await.expect("grant").id();
        let elected = first.campaign("myelection", "candidate-a", first_lease).await.expect("campaign");
        let leader_key = elected.leader().expect("leader key").clone();
        assert_eq!(leader_key.key(), format!("myelection/{first_lease:x}").as_bytes());
        let leader_value = |response: etcd_client::LeaderResponse| response.kv().map(|kv| kv.value().to_vec());
        assert_eq!(leader_value(second.leader("myelection").await.expect("leader")), Some(b"candidate-a".to_vec()));
        let mut observer = second.observe("myelection").await.expect("observe");
        let seen = observer.message().await.expect("observe").expect("a leader");
        assert_eq!(seen.kv().map(|kv| kv.value().to_vec()), Some(b"candidate-a".to_vec()));

        let second_lease = second.lease_grant(30, None).await.expect("grant").id();
        let mut waiter = second.clone();
        let waiting = tokio::spawn(async move { waiter.campaign("myelection", "candidate-b", second_lease).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting.is_finished(), "the second campaigner waits while the first leads");

        first.proclaim("candidate-a2", Some(ProclaimOptions::new().with_leader(leader_key.clone()))).await.expect("proclaim");
        let seen = tokio::time::timeout(Duration::from_secs(5), observer.message()).await.expect("observed").expect("stream").expect("a leader");
        assert_eq!(seen.kv().map(|kv| kv.value().to_vec()), Some(b"candidate-a2".to_vec()));

        first.resign(Some(ResignOptions::new().with_leader(leader_key.clone()))).await.expect("resign");
        let handed = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the waiter is elected").expect("task").expect("campaign");
        assert_eq!(handed.leader().expect("leader key").key(), format!("myelection/{second_lease:x}").as_bytes());
        let seen = tokio::time::timeout(Duration::from_secs(5), observer.message()).await.expect("observed").expect("stream").expect("a leader");
        assert_eq!(seen.kv().map(|kv| kv.value().to_vec()), Some(b"candidate-b".to_vec()));
        // The old leader can no longer proclaim.
        let refused = first.proclaim("late", Some(ProclaimOptions::new().with_leader(leader_key))).await.expect_err("not leader any more");
        assert!(refused.to_string().contains("election: not leader"), "{refused}");
    });
}

/// `etcdctl move-leader`: leadership moves to the named voter (etcd's line), writes go on
/// under the new leader, and a member that is not in the cluster is refused with etcd's
/// error.
#[test]
fn move_leader_hands_leadership_to_a_voter() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    let statuses = || -> Vec<(u64, u64)> {
        let status = etcdctl(&cluster.endpoints().join(","), &["endpoint", "status", "-w", "json"], None);
        let parsed: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        parsed
            .as_array()
            .expect("array")
            .iter()
            .map(|s| (s["Status"]["header"]["member_id"].as_u64().expect("id"), s["Status"]["leader"].as_u64().expect("leader")))
            .collect()
    };
    let before = statuses();
    let leader = before[0].1;
    let target = before.iter().map(|(id, _)| *id).find(|id| *id != leader).expect("a follower");
    let moved = etcdctl(&all, &["move-leader", &format!("{target:x}")], None);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    assert_eq!(moved.stdout.trim(), format!("Leadership transferred from {leader:x} to {target:x}"));
    let now_led = wait_for(Duration::from_secs(5), || statuses().iter().all(|(_, l)| *l == target).then_some(()));
    assert!(now_led.is_some(), "every member follows {target:x}: {:?}", statuses());
    let put = etcdctl(&all, &["put", "after-move", "v"], None);
    assert_eq!(put.code, 0, "{}", put.stderr);
    let refused = etcdctl(&all, &["move-leader", "123456"], None);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("etcdserver: bad leader transferee"), "{}", refused.stderr);
}
