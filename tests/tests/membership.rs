//! Membership changes with the real `etcdctl`: grow a one-member cluster to three with
//! `member add` + members started with `--initial-cluster-state existing`, add a learner
//! and promote it, replace a member (remove, then add a fresh one on an empty data dir)
//! while writes go on, and check every acknowledged write on every member afterwards.

use std::time::Duration;

use detcd_tests::{etcdctl, wait_for, Cluster};

/// `etcdctl member add` and the `ETCD_INITIAL_CLUSTER` it printed for the new member.
fn member_add(endpoints: &str, name: &str, peer_url: &str, learner: bool) -> (u64, String) {
    let mut args = vec!["member", "add", name, "--peer-urls", peer_url];
    if learner {
        args.push("--learner");
    }
    let added = etcdctl(endpoints, &args, None);
    assert_eq!(added.code, 0, "member add {name}: {}", added.stderr);
    let first = added.stdout.lines().next().expect("a first line");
    // "Member 8e9e05c52164694d added to cluster cdf818194e3a8c32"
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!((words[0], words[2], words[3], words[4]), ("Member", "added", "to", "cluster"), "{first}");
    let id = u64::from_str_radix(words[1], 16).expect("hex id");
    let initial_cluster = added
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER line")
        .to_string();
    assert!(added.stdout.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{}", added.stdout);
    assert!(initial_cluster.contains(&format!("{name}={peer_url}")), "{initial_cluster}");
    (id, initial_cluster)
}

fn put(endpoints: &str, key: &str) {
    let done = wait_for(Duration::from_secs(10), || (etcdctl(endpoints, &["put", key, "v"], None).code == 0).then_some(()));
    assert!(done.is_some(), "put {key} never succeeded");
}

/// The keys under `k/` member `endpoint` has (a serializable read of its own state).
fn keys_on(endpoint: &str) -> Vec<String> {
    let got = etcdctl(endpoint, &["get", "k/", "--prefix", "--keys-only", "--consistency=s"], None);
    got.stdout.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn member_list_json(endpoints: &str) -> serde_json::Value {
    let listed = etcdctl(endpoints, &["member", "list", "-w", "json"], None);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    serde_json::from_str(&listed.stdout).expect("member list json")
}

/// Writes `count` more keys through any running member.
fn write(cluster: &Cluster, written: &mut Vec<String>, count: usize) {
    for _ in 0..count {
        let key = format!("k/{:04}", written.len());
        put(&cluster.endpoints().join(","), &key);
        written.push(key);
    }
}

#[test]
fn grow_promote_and_replace_members_while_writing() {
    let mut cluster = Cluster::start(1, &[]);
    let first = cluster.members[0].endpoint();
    let mut written = Vec::new();
    write(&cluster, &mut written, 5);
    // Three values of 600 KiB: every joining member is caught up from a snapshot of
    // over 1 MiB, which the peer transport sends in its snapshot frame.
    let large = "x".repeat(600 * 1024);
    for i in 0..3 {
        let key = format!("k/large-{i}");
        let out = etcdctl(&first, &["put", &key], Some(&large));
        assert_eq!(out.code, 0, "put {key}: {}", out.stderr);
        written.push(key);
    }

    // Grow 1 -> 3: add, then start each new member against the running cluster.
    for _ in 0..2 {
        let i = cluster.add_member_slot();
        let peer_url = format!("http://127.0.0.1:{}", cluster.members[i].peer_port);
        let (_, initial_cluster) = member_add(&first, &cluster.members[i].name.clone(), &peer_url, false);
        cluster.start_joining_member(i, &initial_cluster);
        let endpoint = cluster.members[i].endpoint();
        let caught_up = wait_for(Duration::from_secs(20), || (keys_on(&endpoint).len() >= written.len()).then_some(()));
        assert!(caught_up.is_some(), "member {i} never caught up\n{}", cluster.diagnostics());
        assert!(cluster.log(i).contains("applied snapshot"), "member {i} was caught up from a snapshot\n{}", cluster.log(i));
        write(&cluster, &mut written, 5);
    }
    let listed = member_list_json(&first);
    assert_eq!(listed["members"].as_array().expect("members").len(), 3, "{listed}");

    // Errors as etcd's.
    let taken = format!("http://127.0.0.1:{}", cluster.members[1].peer_port);
    let duplicate = etcdctl(&first, &["member", "add", "again", "--peer-urls", &taken], None);
    assert!(duplicate.stderr.contains("etcdserver: Peer URLs already exists"), "{}", duplicate.stderr);
    let unknown = etcdctl(&first, &["member", "remove", "1234"], None);
    assert!(unknown.stderr.contains("etcdserver: member not found"), "{}", unknown.stderr);
    let bad_url = etcdctl(&first, &["member", "add", "bad", "--peer-urls", "ftp://x"], None);
    assert_ne!(bad_url.code, 0);

    // A learner: it receives the log, then is promoted once caught up.
    let learner = cluster.add_member_slot();
    let learner_url = format!("http://127.0.0.1:{}", cluster.members[learner].peer_port);
    let (learner_id, initial_cluster) = member_add(&first, &cluster.members[learner].name.clone(), &learner_url, true);
    cluster.start_joining_member(learner, &initial_cluster);
    let listed = member_list_json(&first);
    let as_learner = listed["members"].as_array().expect("members").iter().find(|m| m["ID"].as_u64() == Some(learner_id)).cloned();
    assert_eq!(as_learner.as_ref().and_then(|m| m["isLearner"].as_bool()), Some(true), "{listed}");
    // A learner serves serializable reads only, as etcd's.
    let learner_endpoint = cluster.members[learner].endpoint();
    let refused = wait_for(Duration::from_secs(20), || {
        let put = etcdctl(&learner_endpoint, &["put", "on-learner", "v"], None);
        put.stderr.contains("etcdserver: rpc not supported for learner").then_some(put)
    });
    assert!(refused.is_some(), "a learner accepted a write\n{}", cluster.diagnostics());
    let status = etcdctl(&learner_endpoint, &["endpoint", "status", "-w", "json"], None);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status[0]["Status"]["isLearner"].as_bool(), Some(true), "{status}");
    let voter = etcdctl(&first, &["member", "promote", &format!("{:x}", listed["header"]["member_id"].as_u64().expect("id"))], None);
    assert!(voter.stderr.contains("etcdserver: can only promote a learner member"), "{}", voter.stderr);
    let all = cluster.endpoints().join(",");
    // Sent to a follower: it asks the leader, which alone knows whether the learner
    // caught up (etcd's forwarding).
    let follower = (0..cluster.members.len())
        .filter(|i| *i != learner)
        .map(|i| cluster.members[i].endpoint())
        .find(|e| {
            let status = etcdctl(e, &["endpoint", "status", "-w", "json"], None);
            let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
            status[0]["Status"]["leader"].as_u64().is_some_and(|l| l != status[0]["Status"]["header"]["member_id"].as_u64().unwrap_or(l))
        })
        .expect("a follower");
    let promoted = wait_for(Duration::from_secs(20), || (etcdctl(&follower, &["member", "promote", &format!("{learner_id:x}")], None).code == 0).then_some(()));
    assert!(promoted.is_some(), "the learner was never promoted\n{}", cluster.diagnostics());
    let listed = member_list_json(&all);
    assert!(listed["members"].as_array().expect("members").iter().all(|m| m["isLearner"].as_bool() != Some(true)), "{listed}");
    write(&cluster, &mut written, 5);

    // Replace member 1: remove it (it stops), add a fresh member on an empty data dir —
    // while a client writes without pause through members 0 and 2.
    let stop_writer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_endpoints = format!("{},{}", cluster.members[0].endpoint(), cluster.members[2].endpoint());
    let writer = {
        let stop = stop_writer.clone();
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let key = format!("k/bg-{n:05}");
                if etcdctl(&writer_endpoints, &["put", &key, "v"], None).code == 0 {
                    acknowledged.push(key);
                }
            }
            acknowledged
        })
    };
    let removed_id = listed["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["name"].as_str() == Some("m1"))
        .and_then(|m| m["ID"].as_u64())
        .expect("m1 listed");
    let removed = etcdctl(&first, &["member", "remove", &format!("{removed_id:x}")], None);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert_eq!(removed.stdout.trim().lines().next(), Some(format!("Member {removed_id:16x} removed from cluster {:16x}", listed["header"]["cluster_id"].as_u64().expect("cluster")).as_str()));
    let exited = cluster.wait_member_exit(1, Duration::from_secs(10));
    assert!(exited.is_some(), "the removed member still runs\n{}", cluster.diagnostics());
    assert!(cluster.log(1).contains("permanently removed"), "{}", cluster.log(1));
    write(&cluster, &mut written, 5);
    // Started again on its old data dir, the removed member stops again.
    cluster.start_member(1);
    let exited = cluster.wait_member_exit(1, Duration::from_secs(10));
    assert!(exited.is_some_and(|status| !status.success()), "the removed member rejoined\n{}", cluster.diagnostics());
    let removed_again = etcdctl(&first, &["member", "remove", &format!("{removed_id:x}")], None);
    assert!(removed_again.stderr.contains("etcdserver: ID removed"), "{}", removed_again.stderr);
    // MemberUpdate: new peer URLs for a member (here: its own again, plus a second).
    let m0_id = listed["members"].as_array().expect("members").iter().find(|m| m["name"].as_str() == Some("m0")).and_then(|m| m["ID"].as_u64()).expect("m0 listed");
    let m0_url = format!("http://127.0.0.1:{}", cluster.members[0].peer_port);
    let both = format!("{m0_url},http://localhost:{}", cluster.members[0].peer_port);
    let updated = etcdctl(&first, &["member", "update", &format!("{m0_id:x}"), "--peer-urls", &both], None);
    assert_eq!(updated.code, 0, "{}", updated.stderr);
    assert!(updated.stdout.starts_with(&format!("Member {m0_id:16x} updated in cluster")), "{}", updated.stdout);
    let peer_urls = member_list_json(&first)["members"].as_array().expect("members").iter().find(|m| m["ID"].as_u64() == Some(m0_id)).map(|m| m["peerURLs"].clone());
    assert_eq!(peer_urls, Some(serde_json::json!([m0_url, format!("http://localhost:{}", cluster.members[0].peer_port)])));
    let fresh = cluster.add_member_slot();
    let fresh_url = format!("http://127.0.0.1:{}", cluster.members[fresh].peer_port);
    let (_, initial_cluster) = member_add(&first, &cluster.members[fresh].name.clone(), &fresh_url, false);
    cluster.start_joining_member(fresh, &initial_cluster);
    write(&cluster, &mut written, 5);
    stop_writer.store(true, std::sync::atomic::Ordering::SeqCst);
    let acknowledged = writer.join().expect("writer");
    assert!(acknowledged.len() >= 5, "the writer got {} writes through", acknowledged.len());
    written.extend(acknowledged);
    written.sort();

    // Every acknowledged write on every member; the member list agrees everywhere.
    for endpoint in cluster.endpoints() {
        // Every acknowledged write; beyond them only writes of the background client
        // whose answer was lost (their outcome is unknown).
        let has_all = |keys: &[String]| written.iter().all(|k| keys.contains(k)) && keys.iter().all(|k| written.contains(k) || k.starts_with("k/bg-"));
        let converged = wait_for(Duration::from_secs(20), || has_all(&keys_on(&endpoint)).then_some(()));
        assert!(converged.is_some(), "{endpoint} has {:?}, not {written:?}\n{}", keys_on(&endpoint), cluster.diagnostics());
        let listed = wait_for(Duration::from_secs(10), || {
            let listed = member_list_json(&endpoint);
            let names: Vec<String> = listed["members"].as_array()?.iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect();
            (names.len() == 4 && !names.contains(&"m1".to_string()) && names.iter().all(|n| !n.is_empty())).then_some(names)
        });
        assert!(listed.is_some(), "{endpoint} lists {}", member_list_json(&endpoint));
    }

    // Remove the leader itself: it steps down, the others elect a successor, and it
    // stops once one of them knows the removal is committed — the successor, having
    // applied the removal, talks to it no more; the removed member asks (a membership
    // probe on its open connection, answered with the removal notice).
    let (leader, leader_id) = (0..cluster.members.len())
        .filter(|i| cluster.members[*i].is_running())
        .find_map(|i| {
            let status = etcdctl(&cluster.members[i].endpoint(), &["endpoint", "status", "-w", "json"], None);
            let status: serde_json::Value = serde_json::from_str(&status.stdout).ok()?;
            let id = status[0]["Status"]["header"]["member_id"].as_u64()?;
            (status[0]["Status"]["leader"].as_u64() == Some(id)).then_some((i, id))
        })
        .expect("a leader");
    let removed = etcdctl(&cluster.members[leader].endpoint(), &["member", "remove", &format!("{leader_id:x}")], None);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let exited = cluster.wait_member_exit(leader, Duration::from_secs(20));
    assert!(exited.is_some(), "the removed leader still runs\n{}", cluster.diagnostics());
    assert!(cluster.log(leader).contains("permanently removed"), "{}", cluster.log(leader));
    write(&cluster, &mut written, 5);
    let remaining = cluster.endpoints().join(",");
    let listed = member_list_json(&remaining);
    assert_eq!(listed["members"].as_array().expect("members").len(), 3, "{listed}");
}
