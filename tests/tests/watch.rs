//! Watch end to end: the real `etcdctl watch` forms (`../shared/etcdctl-reference.txt`),
//! a watcher on a follower across the leader's death, a watcher resumed on another
//! member after its own died, and a watch from a compacted revision.

use std::time::Duration;

use detcd_tests::{connect, etcdctl, etcdctl_for, etcdctl_in_background, finish, leader_index, runtime, start_etcd, wait_writable, Cluster};
use etcd_client::{Client, EventType, WatchOptions};

#[test]
fn etcdctl_watch_forms_match_etcd() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let all = cluster.endpoints().join(",");
    let follower = cluster.members[2].endpoint();
    // Revision 2 is the readiness probe; w/ changes start at 3.
    for args in [&["put", "w/a", "1"][..], &["put", "w/b", "2"], &["put", "w/a", "3"]] {
        assert_eq!(etcdctl(&all, args, None).stdout, "OK\n");
    }
    assert_eq!(etcdctl(&all, &["del", "w/b"], None).stdout, "1\n");

    let history = etcdctl_for(2, &follower, &["watch", "--prefix", "w/", "--rev=1"]);
    assert_eq!(history.code, 124, "{history:?}");
    assert_eq!(history.stdout, "PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n3\nDELETE\nw/b\n\n");

    let prev = etcdctl_for(2, &follower, &["watch", "w/a", "--rev=1", "--prev-kv"]);
    assert_eq!(prev.stdout, "PUT\nw/a\n1\nPUT\nw/a\n1\nw/a\n3\n");

    let json = etcdctl_for(2, &follower, &["watch", "--prefix", "w/", "--rev=1", "-w", "json"]);
    let first_line = json.stdout.lines().next().expect("a response");
    let response: serde_json::Value = serde_json::from_str(first_line).expect("json");
    let events = response["Events"].as_array().expect("Events");
    assert_eq!(events.len(), 4, "{first_line}");
    assert_eq!(events[0]["kv"]["key"], "dy9h", "keys are base64 as etcd's");
    assert_eq!(events[3]["type"], 1, "a delete");
    assert_eq!(events[3]["kv"]["mod_revision"], 6);
    assert_eq!(response["Header"]["revision"], 6);
    assert_eq!(response["Canceled"], false);

    // Live: a watcher started now sees what happens next.
    let live = etcdctl_in_background(3, &follower, &["watch", "--prefix", "live/"]);
    std::thread::sleep(Duration::from_millis(800));
    etcdctl(&all, &["put", "live/x", "1"], None);
    etcdctl(&all, &["put", "live/y", "2"], None);
    etcdctl(&all, &["del", "live/x"], None);
    let live = finish(live);
    assert_eq!(live.stdout, "PUT\nlive/x\n1\nPUT\nlive/y\n2\nDELETE\nlive/x\n\n", "{live:?}");

    // From a compacted revision: cancelled, etcdctl exits 5 with etcd's words.
    assert_eq!(etcdctl(&all, &["compact", "5", "--physical"], None).stdout, "compacted revision 5\n");
    let compacted = etcdctl_for(2, &follower, &["watch", "w/", "--prefix", "--rev=2"]);
    assert_eq!(compacted.code, 5, "{compacted:?}");
    // etcdctl writes both lines to stderr (the reference shows the streams merged).
    assert_eq!(
        compacted.stderr,
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\nError: watch is canceled by the server\n"
    );

    let bad = etcdctl(&all, &["watch"], None);
    assert_eq!((bad.code, bad.stderr.trim()), (128, "Error: bad number of arguments"));
}

/// Puts `count` values under `prefix` through any live member, returning the revision
/// of each acknowledged put.
async fn write_through(cluster: &Cluster, skip: usize, prefix: &str, from: usize, count: usize) -> Vec<i64> {
    let mut revisions = Vec::new();
    for n in from..from + count {
        let mut done = None;
        for _ in 0..50 {
            for (i, member) in cluster.members.iter().enumerate() {
                if i == skip || !member.is_running() {
                    continue;
                }
                let Ok(mut client) = Client::connect([member.endpoint()], None).await else { continue };
                if let Ok(response) = client.put(format!("{prefix}{n}"), n.to_string(), None).await {
                    done = response.header().map(|h| h.revision());
                    break;
                }
            }
            if done.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        revisions.push(done.expect("a put was acknowledged"));
    }
    revisions
}

#[test]
fn a_watcher_on_a_follower_keeps_receiving_while_the_leader_is_killed() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let leader = rt.block_on(leader_index(&cluster));
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let endpoint = cluster.members[follower].endpoint();
    let mut watch = rt.block_on(async { connect(&endpoint).await.watch("f/", Some(WatchOptions::new().with_prefix())).await.expect("watch") });
    let mut acknowledged = rt.block_on(write_through(&cluster, follower, "f/", 0, 20));
    cluster.kill_member(leader);
    acknowledged.extend(rt.block_on(write_through(&cluster, leader, "f/", 20, 20)));
    let received: Vec<i64> = rt.block_on(async {
        let mut seen = Vec::new();
        while seen.len() < acknowledged.len() {
            let message = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
            let Ok(Ok(Some(response))) = message else { break };
            seen.extend(response.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
        }
        seen
    });
    assert_eq!(received, acknowledged, "every acknowledged put, in order, once");
}

#[test]
fn a_watcher_resumed_on_another_member_sees_no_gap_and_no_duplicate() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let first = 1;
    let endpoint = cluster.members[first].endpoint();
    let acknowledged = rt.block_on(write_through(&cluster, usize::MAX, "r/", 0, 10));
    let start = acknowledged[0];
    // Read part of the history on member 1, then lose member 1.
    let mut seen: Vec<i64> = rt.block_on(async {
        let mut watch = connect(&endpoint).await.watch("r/", Some(WatchOptions::new().with_prefix().with_start_revision(start))).await.expect("watch");
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let response = watch.message().await.expect("message").expect("response");
            seen.extend(response.events().iter().filter(|e| e.event_type() == EventType::Put).filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
        }
        seen
    });
    cluster.kill_member(first);
    let mut more = rt.block_on(write_through(&cluster, first, "r/", 10, 10));
    let mut acknowledged = acknowledged;
    acknowledged.append(&mut more);
    // Resume on member 2 from the last revision seen + 1, as clients do.
    let resume_from = seen.last().expect("seen") + 1;
    let other = cluster.members[2].endpoint();
    let rest: Vec<i64> = rt.block_on(async {
        let mut watch = connect(&other).await.watch("r/", Some(WatchOptions::new().with_prefix().with_start_revision(resume_from))).await.expect("watch");
        let mut rest = Vec::new();
        while seen.len() + rest.len() < acknowledged.len() {
            let message = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
            let Ok(Ok(Some(response))) = message else { break };
            rest.extend(response.events().iter().filter_map(|e| e.kv().map(|kv| kv.mod_revision())));
        }
        rest
    });
    seen.extend(rest);
    assert_eq!(seen, acknowledged, "the resumed watch continues exactly");
}

#[test]
fn a_watch_that_requires_a_leader_ends_when_its_member_loses_the_cluster() {
    let mut cluster = Cluster::start(3, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let survivor = 2;
    let endpoint = cluster.members[survivor].endpoint();
    let options = etcd_client::ConnectOptions::new().with_require_leader(true).with_connect_timeout(Duration::from_secs(2));
    let mut watch = rt.block_on(async {
        let mut client = Client::connect([endpoint.as_str()], Some(options.clone())).await.expect("connect");
        client.watch("q", None).await.expect("a watch while there is a leader")
    });
    cluster.kill_member(0);
    cluster.kill_member(1);
    // Alone, the survivor loses its leader (check-quorum) and ends the stream.
    let ended = rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), watch.message()).await {
                Err(_) => return "still open after 15 s".to_string(),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return "ended without an error".to_string(),
                Ok(Err(error)) => return error.to_string(),
            }
        }
    });
    assert!(ended.contains("etcdserver: no leader"), "{ended}");
    // A new one is refused at once.
    let refused = rt.block_on(async {
        let mut client = Client::connect([endpoint.as_str()], Some(options)).await.expect("connect");
        match client.watch("q", None).await {
            Ok(mut stream) => stream.message().await.err().map(|e| e.to_string()).unwrap_or_default(),
            Err(error) => error.to_string(),
        }
    });
    assert!(refused.contains("etcdserver: no leader"), "{refused}");
}

#[test]
fn a_watch_stream_sent_an_oversized_request_ends_with_etcds_error() {
    // etcd ends the stream with the receive error; detcd left the client waiting before.
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let etcd = start_etcd(cluster.scratch_dir());
    for (server, endpoint) in [("detcd", cluster.members[0].endpoint()), ("etcd", etcd.endpoint.clone())] {
        rt.block_on(async {
            let mut client = connect(&endpoint).await;
            let mut stream = client.watch("w", None).await.expect("watch");
            stream.watch("k".repeat(3_000_000), None).await.expect("the request is sent");
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        other => return other,
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{server}: the stream stays open after an oversized request"));
            match ended {
                Err(etcd_client::Error::GRpcStatus(status)) => {
                    assert_eq!(i32::from(status.code()), 8, "{server}: ResourceExhausted: {status:?}");
                    assert!(status.message().starts_with("grpc: received message larger than max ("), "{server}: {status:?}");
                }
                other => panic!("{server}: expected a gRPC status, got {other:?}"),
            }
        });
    }
}
