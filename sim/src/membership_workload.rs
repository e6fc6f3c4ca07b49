//! The operator who replaces members (`replace_member`): remove a member from the
//! cluster through MemberRemove, stop it, add a new member under the same name and peer
//! URL (as a voter, or as a learner promoted once caught up) and start it on blank disks
//! joining the running cluster — while the chaos goes on. Every step goes through the
//! member API as `etcdctl` would, through whichever member leads, with bounded retries:
//! an answer that never came is settled by reading the member list, as an operator does.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use detcd_node::apply::MemberRequest;
use detcd_node::pb::etcdserverpb::Member;

use crate::cluster::Cluster;

/// Attempts per step (each: one call through the leader, then a look at the list).
pub const MEMBERSHIP_ATTEMPTS_MAX: usize = 40;
/// How long the operator waits for one membership call.
pub const MEMBERSHIP_CALL_TIMEOUT_MS: u64 = 3000;
/// Pause between attempts.
pub const MEMBERSHIP_RETRY_DELAY_MS: u64 = 300;

/// The member list as the current leader applied it, if a leader answers.
async fn member_list(cluster: &Cluster) -> Option<Vec<Member>> {
    let leader = cluster.leader().await?;
    let (handle, _) = cluster.members[leader].handle()?;
    let listed = tokio::time::timeout(Duration::from_millis(500), handle.member_list()).await.ok().flatten()?;
    Some(listed.1)
}

/// Sends `request` through the leader until `done` holds for the leader's member list
/// (or the attempts run out): the list it settled on.
async fn change_until(cluster: &Cluster, request: MemberRequest, what: &str, done: impl Fn(&[Member]) -> bool) -> Option<Vec<Member>> {
    for _ in 0..MEMBERSHIP_ATTEMPTS_MAX {
        if let Some(members) = member_list(cluster).await.filter(|m| done(m)) {
            return Some(members);
        }
        if let Some((handle, _)) = cluster.leader().await.and_then(|leader| cluster.members[leader].handle()) {
            let answer = tokio::time::timeout(Duration::from_millis(MEMBERSHIP_CALL_TIMEOUT_MS), handle.change_membership(request.clone())).await;
            let outcome = match answer {
                Ok(Ok(_)) => "done".to_string(),
                Ok(Err(error)) => error.message().trim_start_matches("etcdserver: ").to_string(),
                Err(_) => "no answer".to_string(),
            };
            cluster.world.count(&format!("membership: {what}: {outcome}"));
        }
        tokio::time::sleep(Duration::from_millis(MEMBERSHIP_RETRY_DELAY_MS)).await;
    }
    None
}

/// Replaces the member in slot `victim` (see the module documentation). Runs as its own
/// task; `cluster.replacing` is set while it runs.
pub async fn replace_member(cluster: Arc<Cluster>, victim: usize, as_learner: bool) {
    let slot = cluster.members[victim].clone();
    let old_id = slot.member_id();
    let world = cluster.world.clone();
    let removed = change_until(&cluster, MemberRequest::Remove { id: old_id }, "remove", |members| members.iter().all(|m| m.id != old_id)).await;
    let Some(members) = removed else {
        world.event("fault", Some(victim), "operator: gave up removing it".into());
        cluster.replacing.store(false, Ordering::SeqCst);
        return;
    };
    // The removed member stops on its own once it applies its removal; a member cut off
    // from the cluster may never learn of it, so the operator stops it too.
    slot.retired.store(true, Ordering::SeqCst);
    if slot.handle().is_some() || !slot.down.load(Ordering::SeqCst) {
        cluster.kill(victim, "removed from the cluster");
    }
    let peer_url = format!("http://m{victim}:2380");
    let with_url = |members: &[Member]| members.iter().find(|m| m.peer_ur_ls.contains(&peer_url)).map(|m| m.id);
    let add = MemberRequest::Add { peer_urls: vec![peer_url.clone()], is_learner: as_learner };
    let added = change_until(&cluster, add, if as_learner { "add learner" } else { "add voter" }, |members| with_url(members).is_some()).await;
    drop(members);
    let Some(members) = added else {
        world.event("fault", Some(victim), "operator: gave up adding its replacement".into());
        cluster.replacing.store(false, Ordering::SeqCst);
        return;
    };
    let new_id = with_url(&members).expect("checked above");
    let peers: BTreeMap<u64, Vec<String>> = members.iter().map(|m| (m.id, m.peer_ur_ls.clone())).collect();
    cluster.replace(victim, new_id, peers);
    world.count("membership: members replaced");
    if as_learner {
        let promoted = change_until(&cluster, MemberRequest::Promote { id: new_id }, "promote", |members| {
            members.iter().any(|m| m.id == new_id && !m.is_learner)
        })
        .await;
        if promoted.is_some() {
            world.count("membership: learners promoted");
        }
    }
    cluster.replacing.store(false, Ordering::SeqCst);
}
