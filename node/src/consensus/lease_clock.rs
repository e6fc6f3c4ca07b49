//! The lessor's timed half: when each lease expires, on this member's clock.
//!
//! Every member keeps a deadline per lease from the moment it applies its grant or
//! renewal (so any member can answer TimeToLive), but only the leader acts on them: it
//! proposes a revoke for each expired lease, at most [`LEASE_REVOKES_PER_TICK_MAX`] per
//! tick (etcd revokes at most 1000 a second), re-proposing one whose revoke did not
//! apply within [`LEASE_REVOKE_RETRY_MS`]. No member ever deletes a leased key on its
//! own: the revoke is a write like any other, applied everywhere in log order.
//!
//! When a member becomes leader it *promotes* the lessor as etcd does: every lease gets a
//! fresh deadline of now + election timeout + its TTL (or its last checkpointed remaining
//! TTL), so a change of leader never expires a lease early — at worst late.
//!
//! That is also why the leader may renew a lease in memory, as etcd's does — but only
//! within half an election timeout of a quorum confirming its leadership (a read-index
//! round it asked; `leadership_confirmed_recently` in the consensus loop): no successor
//! is elected before that confirmation, and its promotion to now + election timeout +
//! TTL covers whatever was promised since. Check-quorum alone was not enough: a
//! leadership transfer request restarts the leader's check-quorum timer, and a deposed
//! leader cut off from its followers answered keep-alives for 1.7 s after its successor
//! was elected (found by the simulator).

use std::collections::BTreeMap;

use crate::apply::LeaseChange;
use crate::mvcc::lease::Lessor;

/// Expired leases the leader proposes to revoke per tick.
pub const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// A revoke proposal that has not applied after this long is proposed again.
pub const LEASE_REVOKE_RETRY_MS: u64 = 3000;
/// Leases checkpointed in one proposal.
pub const LEASE_CHECKPOINTS_PER_PROPOSAL_MAX: usize = 1000;
/// etcd's largest TTL (seconds).
pub const LEASE_TTL_SECS_MAX: i64 = 9_000_000_000;

/// See the module documentation.
#[derive(Default)]
pub struct LeaseClock {
    deadlines_ms: BTreeMap<i64, u64>,
    /// Revokes proposed and not yet applied: lease → when proposed.
    expiring: BTreeMap<i64, u64>,
    leader: bool,
    /// Planted bug `lease-renew-ignored` (simulator builds only).
    #[cfg(madsim)]
    pub ignore_renewals: bool,
}

impl LeaseClock {
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// A lease change was applied at `now_ms` on this member's clock.
    pub fn on_change(&mut self, change: &LeaseChange, now_ms: u64) {
        match *change {
            LeaseChange::Granted { id, ttl_secs } => {
                self.deadlines_ms.insert(id, now_ms.saturating_add(ttl_ms(ttl_secs)));
            }
            LeaseChange::Renewed { id, ttl_secs } => {
                #[cfg(madsim)]
                if self.ignore_renewals {
                    return;
                }
                self.deadlines_ms.insert(id, now_ms.saturating_add(ttl_ms(ttl_secs)));
                self.expiring.remove(&id);
            }
            LeaseChange::Ended { id, .. } => {
                self.deadlines_ms.remove(&id);
                self.expiring.remove(&id);
            }
        }
    }

    /// Whether an expiry of lease `id` was proposed and has not applied yet.
    pub fn is_expiring(&self, id: i64) -> bool {
        self.expiring.contains_key(&id)
    }

    /// A keep-alive served by the leader itself (not through raft): the lease runs
    /// `ttl_secs` from `now_ms` on this clock.
    pub fn renew_locally(&mut self, id: i64, ttl_secs: i64, now_ms: u64) {
        #[cfg(madsim)]
        if self.ignore_renewals {
            return;
        }
        self.deadlines_ms.insert(id, now_ms.saturating_add(ttl_ms(ttl_secs)));
    }

    /// This member became leader at `now_ms`: every lease of `lessor` gets now +
    /// `extension_ms` + its TTL (or checkpointed remaining TTL).
    pub fn promote(&mut self, lessor: &Lessor, now_ms: u64, extension_ms: u64) {
        self.leader = true;
        self.expiring.clear();
        self.deadlines_ms.clear();
        for (id, lease) in lessor.ids() {
            let remaining = if lease.checkpoint_remaining_secs > 0 { lease.checkpoint_remaining_secs } else { lease.ttl_secs };
            self.deadlines_ms.insert(id, now_ms.saturating_add(extension_ms).saturating_add(ttl_ms(remaining)));
        }
    }

    /// This member is no longer leader.
    pub fn demote(&mut self) {
        self.leader = false;
        self.expiring.clear();
    }

    /// Forgets leases that no longer exist (after a snapshot replaced the state).
    pub fn retain_existing(&mut self, lessor: &Lessor) {
        self.deadlines_ms.retain(|id, _| lessor.contains(*id));
        self.expiring.retain(|id, _| lessor.contains(*id));
    }

    /// Leases whose deadline passed at `now_ms` and whose revoke is not already under
    /// way; they are marked as under way.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<i64> {
        let due: Vec<i64> = self
            .deadlines_ms
            .iter()
            .filter(|(id, deadline)| {
                **deadline <= now_ms && self.expiring.get(id).is_none_or(|proposed| proposed + LEASE_REVOKE_RETRY_MS <= now_ms)
            })
            .map(|(id, _)| *id)
            .take(LEASE_REVOKES_PER_TICK_MAX)
            .collect();
        for id in &due {
            self.expiring.insert(*id, now_ms);
        }
        due
    }

    /// Remaining seconds of lease `id` on this member's clock (truncated, as etcd), or
    /// `ttl_secs` if this member has no deadline for it (it restarted since).
    pub fn remaining_secs(&self, id: i64, ttl_secs: i64, now_ms: u64) -> i64 {
        match self.deadlines_ms.get(&id) {
            Some(deadline) => (deadline.saturating_sub(now_ms) / 1000) as i64,
            None => ttl_secs,
        }
    }

    /// `(lease, remaining secs)` of every lease, for a checkpoint proposal.
    pub fn checkpoints(&self, now_ms: u64) -> Vec<(i64, i64)> {
        self.deadlines_ms
            .iter()
            .take(LEASE_CHECKPOINTS_PER_PROPOSAL_MAX)
            .map(|(id, deadline)| (*id, (deadline.saturating_sub(now_ms) / 1000) as i64))
            .collect()
    }
}

fn ttl_ms(ttl_secs: i64) -> u64 {
    u64::try_from(ttl_secs).unwrap_or(0).saturating_mul(1000)
}
