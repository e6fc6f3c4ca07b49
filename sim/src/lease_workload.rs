//! Lease clients: each grants a short lease (2–4 s) on a random member, attaches one or
//! two keys, and then keeps it alive for a while (a keep-alive every third of the TTL,
//! to random members), revokes it, or abandons it; now and then it asks TimeToLive.
//! Every operation is recorded with its outcome for the lease checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::errors::EtcdError;
use detcd_node::pb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest};
use detcd_node::NodeHandle;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;
use crate::history::Outcome;
use crate::lease_history::LeaseOpKind;

/// Leases one client grants at most.
pub const LEASES_PER_CLIENT_MAX: u64 = 10_000;
/// Keep-alives sent for one lease at most.
pub const KEEP_ALIVES_PER_LEASE_MAX: u64 = 1000;
/// The longest TTL a lease client asks for (the run's liveness check waits for it).
pub const LEASE_TTL_SECS_MAX: i64 = 4;
/// A late keep-alive (`late_keep_alives`) is sent at most this long before the lease
/// runs out on the client's clock.
pub const LATE_KEEP_ALIVE_MS_MAX: u64 = 100;

fn outcome_of(error: &EtcdError) -> Outcome {
    if error.outcome_unknown() {
        Outcome::Unknown
    } else {
        Outcome::Fail
    }
}

/// Performs one lease operation on a random running member and records it; returns the
/// answered (lease, ttl) when it succeeded.
async fn perform(
    cluster: &Cluster,
    client: u64,
    lease: i64,
    kind: LeaseOpKind,
    rng: &mut ChaCha8Rng,
    timeout_ms: u64,
) -> Option<(i64, i64)> {
    let member = rng.gen_range(0..cluster.members.len());
    let slot = &cluster.members[member];
    let world = &cluster.world;
    let id = world.lease_invoke(client, lease, kind.clone(), slot.member_id());
    let Some((handle, _)) = slot.handle() else {
        world.lease_complete(id, Outcome::Fail, lease, 0, Some("member is down".into()));
        return None;
    };
    let call = execute(&handle, lease, &kind);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Err(_) => {
            world.lease_complete(id, Outcome::Unknown, lease, 0, Some("client timeout".into()));
            None
        }
        Ok(Err(error)) => {
            world.lease_complete(id, outcome_of(&error), lease, 0, Some(error.message().to_string()));
            None
        }
        Ok(Ok((lease, ttl))) => {
            world.lease_complete(id, Outcome::Ok, lease, ttl, None);
            Some((lease, ttl))
        }
    }
}

async fn execute(handle: &NodeHandle, lease: i64, kind: &LeaseOpKind) -> Result<(i64, i64), EtcdError> {
    match kind {
        LeaseOpKind::Grant { requested_ttl } => {
            let answer = handle.lease_grant(LeaseGrantRequest { id: 0, ttl: *requested_ttl }).await?;
            Ok((answer.id, answer.ttl))
        }
        LeaseOpKind::KeepAlive => {
            let answer = handle.lease_keep_alive(LeaseKeepAliveRequest { id: lease }).await?;
            Ok((lease, answer.ttl))
        }
        LeaseOpKind::Revoke => {
            handle.lease_revoke(LeaseRevokeRequest { id: lease }).await?;
            Ok((lease, 0))
        }
        LeaseOpKind::Put { key } => {
            handle.put(PutRequest { key: key.clone().into_bytes(), value: b"leased".to_vec().into(), lease, ..Default::default() }).await?;
            Ok((lease, 0))
        }
        LeaseOpKind::TimeToLive => {
            let answer = handle.lease_time_to_live(LeaseTimeToLiveRequest { id: lease, keys: false }).await?;
            Ok((lease, answer.ttl))
        }
    }
}

/// One lease client (see the module documentation).
pub async fn run_lease_client(client: u64, cluster: Arc<Cluster>, stop: Arc<AtomicBool>, timeout_ms: u64, late_keep_alives: bool, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0xd6e8_feb8_6659_fd93) ^ 0x6c65_6173_6521);
    for n in 0..LEASES_PER_CLIENT_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..=200))).await;
        let requested_ttl = rng.gen_range(2..=LEASE_TTL_SECS_MAX);
        let Some((lease, ttl)) = perform(&cluster, client, 0, LeaseOpKind::Grant { requested_ttl }, &mut rng, timeout_ms).await else {
            continue;
        };
        for key in 0..rng.gen_range(1..=2) {
            let key = format!("lease{client}-{n}-{key}");
            perform(&cluster, client, lease, LeaseOpKind::Put { key }, &mut rng, timeout_ms).await;
        }
        match rng.gen_range(0..10) {
            // Keep it alive for a while, then abandon it.
            0..=4 => {
                let keep_until = cluster.world.now_ms() + rng.gen_range(1000..=6000);
                for _ in 0..KEEP_ALIVES_PER_LEASE_MAX {
                    if stop.load(Ordering::SeqCst) || cluster.world.now_ms() >= keep_until {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis((ttl.max(1) as u64) * 1000 / 3)).await;
                    perform(&cluster, client, lease, LeaseOpKind::KeepAlive, &mut rng, timeout_ms.min(ttl.max(1) as u64 * 1000 / 3)).await;
                    if rng.gen_bool(0.2) {
                        perform(&cluster, client, lease, LeaseOpKind::TimeToLive, &mut rng, timeout_ms).await;
                    }
                }
            }
            // Revoke it.
            5..=6 => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=1500))).await;
                perform(&cluster, client, lease, LeaseOpKind::Revoke, &mut rng, timeout_ms).await;
            }
            // Abandon it (after one late renewal, if the scenario asks); look at it once
            // it should be gone.
            _ => {
                if late_keep_alives {
                    let ttl_ms = ttl.max(1) as u64 * 1000;
                    tokio::time::sleep(Duration::from_millis(ttl_ms.saturating_sub(rng.gen_range(0..=LATE_KEEP_ALIVE_MS_MAX)))).await;
                    perform(&cluster, client, lease, LeaseOpKind::KeepAlive, &mut rng, timeout_ms.min(ttl_ms / 3)).await;
                }
                tokio::time::sleep(Duration::from_millis(ttl.max(1) as u64 * 1000 + rng.gen_range(0..=2000))).await;
                perform(&cluster, client, lease, LeaseOpKind::TimeToLive, &mut rng, timeout_ms).await;
                perform(&cluster, client, lease, LeaseOpKind::Put { key: format!("lease{client}-{n}-late") }, &mut rng, timeout_ms).await;
            }
        }
    }
}
