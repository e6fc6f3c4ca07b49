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
/// How long the operator lets a removed member run at most before stopping it: until
/// it stops on its own or another member lists it no more (applied the removal), for as
/// long as the run lasts — the others may need its vote until one of them knows the
/// removal is committed (the product's removed leader waits for that without a bound).
pub const REMOVED_MEMBER_STOP_WAIT_MS_MAX: u64 = 3_600_000;

/// The member list as the member in `slot` applied it, with its applied index.
async fn list_of(cluster: &Cluster, slot: usize) -> Option<(u64, Vec<Member>)> {
    let (handle, _) = cluster.members[slot].handle()?;
    let (status, members) = tokio::time::timeout(Duration::from_millis(500), handle.member_list()).await.ok().flatten()?;
    Some((status.applied_index, members))
}

/// The member list as the current leader applied it, if a leader answers.
async fn member_list(cluster: &Cluster) -> Option<Vec<Member>> {
    list_of(cluster, cluster.leader().await?).await.map(|(_, members)| members)
}

/// A member list for which `done` holds: the leader's, or else one a member applied at
/// or past `floor` — the applied index of a leader's list for which `done` did not hold
/// yet (a member that applied that far applied the same changes, so what its list shows
/// since went through; a member still catching up, or joining without a state, may show
/// anything). etcd 3.4 serves MemberList from the member's own state, and an operator
/// reads it from any member: without a leader there is no other way to see that a
/// change whose answer was lost went through — an added voter never started leaves a
/// cluster of two without a quorum for good (simulator seed 1527 of grow-and-shrink: the
/// operator gave up adding a member that was in). Sets `floor` from the leader's list
/// when that does not satisfy `done`.
async fn settled_list(cluster: &Cluster, done: &impl Fn(&[Member]) -> bool, floor: &mut Option<u64>) -> Option<Vec<Member>> {
    if let Some(leader) = cluster.leader().await {
        if let Some((applied, members)) = list_of(cluster, leader).await {
            if done(&members) {
                return Some(members);
            }
            floor.get_or_insert(applied);
        }
    }
    let floor = (*floor)?;
    for slot in 0..cluster.members.len() {
        if cluster.members[slot].is_retired() {
            continue;
        }
        if let Some((applied, members)) = list_of(cluster, slot).await {
            if applied >= floor && done(&members) {
                return Some(members);
            }
        }
    }
    None
}

/// Sends `request` through the leader until `done` holds for a member list (see
/// [`settled_list`]; or the attempts run out): the list it settled on.
async fn change_until(cluster: &Cluster, request: MemberRequest, what: &str, done: impl Fn(&[Member]) -> bool) -> Option<Vec<Member>> {
    let mut floor = None;
    for _ in 0..MEMBERSHIP_ATTEMPTS_MAX {
        if let Some(members) = settled_list(cluster, &done, &mut floor).await {
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
    settled_list(cluster, &done, &mut floor).await
}

/// Removes the member in slot `victim` from the cluster and stops it; its slot is free
/// afterwards. Whether the removal was seen applied.
async fn remove_member(cluster: &Cluster, victim: usize) -> bool {
    let slot = cluster.members[victim].clone();
    let old_id = slot.member_id();
    let removed = change_until(cluster, MemberRequest::Remove { id: old_id }, "remove", |members| members.iter().all(|m| m.id != old_id)).await;
    if removed.is_none() {
        cluster.world.event("fault", Some(victim), "operator: gave up removing it".into());
        return false;
    }
    cluster.removed_ids.lock().expect("removed ids lock").insert(old_id);
    // The removed member stops on its own once it applied its removal and a voter of the
    // configuration after it has the removal's commit durable; a member cut off from the
    // cluster may never learn of it, so the operator stops it too — once another member
    // lists it no more (applied the removal), and never before: stopped at once (or after a bound,
    // simulator seed 5051 of membership-chaos), a removed leader left the other member
    // of a cluster of two with a removal it never learned was committed, and no quorum.
    // Until then a fault that stops it does not end the wait: it is restarted from its
    // disk (membership-chaos seed 6160: the removed leader of a cluster of two crashed
    // right after the removal committed, before the other member learned so, and stayed
    // down — the other needed its vote for good).
    slot.removal_pending.store(true, Ordering::SeqCst);
    slot.retired.store(true, Ordering::SeqCst);
    let wait_until_ms = cluster.world.now_ms() + REMOVED_MEMBER_STOP_WAIT_MS_MAX;
    // Restarted and not seen running since.
    let mut restarted = false;
    'wait: while cluster.world.now_ms() < wait_until_ms {
        if slot.down.load(Ordering::SeqCst) && !slot.stopped_removed.load(Ordering::SeqCst) {
            cluster.restart(victim);
            restarted = true;
        }
        match slot.handle() {
            Some(_) => restarted = false,
            // It stopped on its own: only once another member knew of its removal.
            None if !restarted => break,
            None => {}
        }
        for other in (0..cluster.members.len()).filter(|i| *i != victim && !cluster.members[*i].is_retired()) {
            // A member joining without a state yet lists nobody, itself included. A
            // learner that applied the removal cannot lead the voters to it: a voter must
            // have (grow-and-shrink seed 6746).
            let own_id = cluster.members[other].member_id();
            let applied =
                |members: &[Member]| members.iter().any(|m| m.id == own_id && !m.is_learner) && members.iter().all(|m| m.id != old_id);
            if list_of(cluster, other).await.is_some_and(|(_, members)| applied(&members)) {
                break 'wait;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slot.removal_pending.store(false, Ordering::SeqCst);
    if slot.handle().is_some() || !slot.down.load(Ordering::SeqCst) {
        cluster.kill(victim, "removed from the cluster");
    }
    cluster.world.count("membership: members removed");
    true
}

/// Adds a new member (a voter, or a learner then promoted) into free slot `index`,
/// under the slot's name and URLs, and starts it on blank disks.
async fn add_member(cluster: &Cluster, index: usize, as_learner: bool) -> bool {
    let peer_url = format!("http://m{index}:2380");
    // The member added here, not one removed from here that a lagging list still shows
    // (a new leader lists what it applied, which may be behind the removal: simulator
    // seed 147 of grow-and-shrink started a blank member under the removed member's id).
    let removed = cluster.removed_ids.lock().expect("removed ids lock").clone();
    let with_url = |members: &[Member]| members.iter().find(|m| m.peer_ur_ls.contains(&peer_url) && !removed.contains(&m.id)).map(|m| m.id);
    let add = MemberRequest::Add { peer_urls: vec![peer_url.clone()], is_learner: as_learner };
    let added = change_until(cluster, add, if as_learner { "add learner" } else { "add voter" }, |members| with_url(members).is_some()).await;
    let Some(members) = added else {
        cluster.world.event("fault", Some(index), "operator: gave up adding a member here".into());
        return false;
    };
    let new_id = with_url(&members).expect("checked above");
    let peers: BTreeMap<u64, Vec<String>> = members.iter().map(|m| (m.id, m.peer_ur_ls.clone())).collect();
    cluster.replace(index, new_id, peers);
    cluster.world.count("membership: members added");
    if as_learner {
        let promoted = change_until(cluster, MemberRequest::Promote { id: new_id }, "promote", |members| {
            members.iter().any(|m| m.id == new_id && !m.is_learner)
        })
        .await;
        if promoted.is_some() {
            cluster.world.count("membership: learners promoted");
        }
    }
    true
}

/// Changes the peer URLs of the member in `slot`: its own URL plus an alias, or its own
/// alone again. Once the leader's list shows them, the final member list must too.
async fn update_member(cluster: &Cluster, slot: usize) {
    let id = cluster.members[slot].member_id();
    let own = format!("http://m{slot}:2380");
    let current = cluster.members[slot].expected_peer_urls.lock().expect("slot lock").clone();
    let wanted = if current.len() == 1 { vec![own, format!("http://m{slot}-alias:2380")] } else { vec![own] };
    let update = MemberRequest::Update { id, peer_urls: wanted.clone() };
    let applied = change_until(cluster, update, "update", |members| members.iter().any(|m| m.id == id && m.peer_ur_ls == wanted)).await;
    if cluster.members[slot].member_id() != id {
        return;
    }
    let unsettled = if applied.is_some() {
        *cluster.members[slot].expected_peer_urls.lock().expect("slot lock") = wanted;
        cluster.world.count("membership: peer URLs updated");
        None
    } else {
        Some(wanted)
    };
    *cluster.members[slot].unsettled_peer_urls.lock().expect("slot lock") = unsettled;
}

/// What an operator does (see the module documentation). Runs as its own task;
/// `cluster.replacing` is set while it runs and cleared at the end.
#[derive(Clone, Copy, Debug)]
pub enum MembershipOperation {
    /// Remove the member in the slot, then add a new one into it.
    Replace { victim: usize, as_learner: bool },
    Add { slot: usize, as_learner: bool },
    Remove { victim: usize },
    /// Toggle an alias peer URL of the member in the slot.
    Update { slot: usize },
}

pub async fn operate(cluster: Arc<Cluster>, operation: MembershipOperation) {
    match operation {
        MembershipOperation::Replace { victim, as_learner } => {
            if remove_member(&cluster, victim).await && add_member(&cluster, victim, as_learner).await {
                cluster.world.count("membership: members replaced");
            }
        }
        MembershipOperation::Add { slot, as_learner } => {
            add_member(&cluster, slot, as_learner).await;
        }
        MembershipOperation::Remove { victim } => {
            remove_member(&cluster, victim).await;
        }
        MembershipOperation::Update { slot } => {
            update_member(&cluster, slot).await;
        }
    }
    cluster.replacing.store(false, Ordering::SeqCst);
}

/// Before the final checks, the operator settles what an unanswered call left behind,
/// from the leader's member list: a member removed after the operator gave up is
/// stopped and its slot freed; a member added after the operator gave up is started in
/// the slot its peer URL names.
pub async fn settle(cluster: &Cluster) {
    let Some(members) = member_list(cluster).await else { return };
    for (index, slot) in cluster.members.iter().enumerate() {
        let listed = members.iter().find(|m| m.peer_ur_ls.contains(&format!("http://m{index}:2380")));
        // An update given up on that applied after all.
        if let Some(wanted) = slot.unsettled_peer_urls.lock().expect("slot lock").take() {
            if listed.is_some_and(|m| m.id == slot.member_id() && m.peer_ur_ls == wanted) {
                *slot.expected_peer_urls.lock().expect("slot lock") = wanted;
                cluster.world.count("membership: updates settled after the run");
            }
        }
        match (slot.is_retired(), listed) {
            (false, Some(member)) if member.id != slot.member_id() => {
                // Cannot happen: a slot's URL names one member at a time.
                cluster.world.event("fault", Some(index), format!("operator: slot holds {:016x} but the list has {:016x}", slot.member_id(), member.id));
            }
            (false, None) => {
                slot.retired.store(true, Ordering::SeqCst);
                if slot.handle().is_some() || !slot.down.load(Ordering::SeqCst) {
                    cluster.kill(index, "removed from the cluster (settled after the run)");
                }
                cluster.world.count("membership: removals settled after the run");
            }
            (true, Some(member)) => {
                let peers: BTreeMap<u64, Vec<String>> = members.iter().map(|m| (m.id, m.peer_ur_ls.clone())).collect();
                cluster.replace(index, member.id, peers);
                cluster.world.count("membership: additions settled after the run");
            }
            _ => {}
        }
    }
}
