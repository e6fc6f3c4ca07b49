//! Lock clients: each takes the lock `lock` with a short lease (2–4 s) through the same
//! recipe etcd's Lock service runs (`detcd_node::recipes`), holds it for a while, and
//! then unlocks, revokes its lease, or abandons it to expire. Every acquisition is
//! recorded with its key, the key's create revision and the revision at which the
//! member confirmed no older key was left; the whole-state model checks mutual
//! exclusion at that revision (`kv_model::check_locks`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::pb::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest};
use detcd_node::recipes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;
use crate::kv_model::LockHold;

/// The lock every lock client contends for.
pub const LOCK_NAME: &str = "lock";
/// Acquisitions one client attempts at most.
pub const LOCKS_PER_CLIENT_MAX: u64 = 10_000;

fn running_handle(cluster: &Cluster, rng: &mut ChaCha8Rng) -> Option<(usize, detcd_node::NodeHandle)> {
    let member = rng.gen_range(0..cluster.members.len());
    cluster.members[member].handle().map(|(handle, _)| (member, handle))
}

/// One lock client (see the module documentation). `skip_wait` plants the bug
/// `lock-skips-the-wait`.
pub async fn run_lock_client(client: u64, cluster: Arc<Cluster>, stop: Arc<AtomicBool>, timeout_ms: u64, seed: u64, skip_wait: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x6c6f_636b_2121);
    let timeout = Duration::from_millis(timeout_ms);
    for _ in 0..LOCKS_PER_CLIENT_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..=500))).await;
        let Some((member, handle)) = running_handle(&cluster, &mut rng) else { continue };
        let ttl = rng.gen_range(2..=4);
        let Ok(Ok(granted)) = tokio::time::timeout(timeout, handle.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await else { continue };
        let lease = granted.id;
        // A waiter may wait long (the holder may abandon its lease): several timeouts.
        let acquired = tokio::time::timeout(timeout * 4, recipes::lock_with(&handle, LOCK_NAME.as_bytes(), lease, skip_wait)).await;
        let Ok(Ok(held)) = acquired else {
            let _ = tokio::time::timeout(timeout, handle.lease_revoke(LeaseRevokeRequest { id: lease })).await;
            continue;
        };
        cluster.world.record_lock_hold(LockHold {
            client,
            member,
            key: String::from_utf8_lossy(&held.key).into_owned(),
            create_revision: held.create_revision,
            acquired_revision: held.acquired_revision,
            acquired_ms: cluster.world.now_ms(),
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..=400))).await;
        let Some((_, handle)) = running_handle(&cluster, &mut rng) else { continue };
        match rng.gen_range(0..10) {
            0..=4 => {
                let _ = tokio::time::timeout(timeout, handle.delete_range(DeleteRangeRequest { key: held.key, ..Default::default() })).await;
            }
            5..=7 => {
                let _ = tokio::time::timeout(timeout, handle.lease_revoke(LeaseRevokeRequest { id: lease })).await;
            }
            // Abandoned: the lease expires and takes the key with it.
            _ => {}
        }
    }
}
