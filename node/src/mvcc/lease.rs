//! The lessor's replicated half: which leases exist, their granted TTL, the last
//! checkpointed remaining TTL, and which keys are attached to each. Part of the store,
//! so that a put, a delete or a revoke attaches, detaches and deletes keys in the same
//! step as the write, and leases travel in snapshots with the keys.
//!
//! Time is not here: when a lease expires is decided by the leader on its clock
//! (`consensus::lease_clock`), which then proposes a revoke like any other write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{key_range, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::DeleteRangeRequest;
use crate::pb::mvccpb::Event;

/// One lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl_secs: i64,
    /// The remaining TTL the leader last checkpointed (0: none since the last renewal).
    pub checkpoint_remaining_secs: i64,
    /// Renewals applied so far: an expiry decided before the latest renewal is void.
    pub renewals: u64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// Every lease, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lessor {
    leases: BTreeMap<i64, LeaseRecord>,
}

impl Lessor {
    pub fn get(&self, id: i64) -> Option<&LeaseRecord> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Every lease id with its TTL, in id order.
    pub fn ids(&self) -> impl Iterator<Item = (i64, &LeaseRecord)> + '_ {
        self.leases.iter().map(|(id, lease)| (*id, lease))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        if id != 0 {
            self.leases.get_mut(&id).expect("a put's lease was checked to exist").keys.insert(key.to_vec());
        }
    }

    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// A digest of every lease (id, TTL, checkpoint, keys), for convergence checks.
    pub fn hash(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        for (id, lease) in &self.leases {
            hasher.update(&id.to_le_bytes());
            hasher.update(&lease.ttl_secs.to_le_bytes());
            hasher.update(&lease.checkpoint_remaining_secs.to_le_bytes());
            hasher.update(&lease.renewals.to_le_bytes());
            for key in &lease.keys {
                hasher.update(&(key.len() as u64).to_le_bytes());
                hasher.update(key);
            }
        }
        hasher.finalize()
    }
}

impl Mvcc {
    pub fn leases(&self) -> &Lessor {
        &self.lessor
    }

    /// Grants lease `id` (chosen by the proposer, non-zero) for `ttl_secs`.
    pub fn lease_grant(&mut self, id: i64, ttl_secs: i64) -> Result<(), EtcdError> {
        assert!(id > 0, "lease ids are positive");
        if self.lessor.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExists);
        }
        self.lessor.leases.insert(id, LeaseRecord { ttl_secs, ..LeaseRecord::default() });
        Ok(())
    }

    /// Revokes lease `id`: every attached key is deleted in one new revision (none if no
    /// key is attached), and the lease is gone.
    pub fn lease_revoke(&mut self, id: i64, events: &mut Vec<Event>) -> Result<(), EtcdError> {
        let lease = self.lessor.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
        let write_revision = self.current_revision + 1;
        let mut deleted = 0;
        for key in &lease.keys {
            let request = DeleteRangeRequest { key: key.clone(), ..Default::default() };
            debug_assert!(key_range(&request.key, &request.range_end).single);
            deleted += self.delete_at(&request, write_revision, events).deleted;
        }
        if deleted > 0 {
            self.current_revision = write_revision;
        }
        Ok(())
    }

    /// Renews lease `id` (a keep-alive): its checkpoint is cleared. Its granted TTL.
    pub fn lease_renew(&mut self, id: i64) -> Option<i64> {
        let lease = self.lessor.leases.get_mut(&id)?;
        lease.checkpoint_remaining_secs = 0;
        lease.renewals += 1;
        Some(lease.ttl_secs)
    }

    /// Records the leader's view of a lease's remaining TTL.
    pub fn lease_checkpoint(&mut self, id: i64, remaining_secs: i64) {
        if let Some(lease) = self.lessor.leases.get_mut(&id) {
            lease.checkpoint_remaining_secs = remaining_secs.max(0);
        }
    }
}
