//! The auth workload's record and its check: **no write succeeds without permission
//! after a revoke** — a user's write that succeeded was applied while its permission was
//! granted.
//!
//! The record holds the operator's permission changes (a strict alternation of revoke
//! and grant of the user's write permission on the workload's prefix, each retried until
//! its outcome is definite) and the user's writes, with history sequence numbers
//! (`invoked_seq`, `completed_seq`) of the one global order of events. Auth changes are
//! linearizable (they go through raft), and a write is applied between its invocation
//! and its answer, so a successful write W is a violation when some revoke R completed
//! before W was invoked and the grant after R was invoked only after W completed (or
//! never): W was then applied, whole, inside the revoked interval. The last change may
//! have an unknown outcome (the run stopped while it was retried; `completed_seq` is
//! [`UNKNOWN_OUTCOME_SEQ`]): a grant of unknown outcome may have taken effect from its
//! invocation on, and a revoke of unknown outcome begins no revoked interval.
//!
//! Not modelled: an attempt of an earlier change whose answer was lost landing after a
//! later change (a forwarded proposal delayed past the next step's answer); the sweeps
//! have not shown one.
//!
//! Pure: built and unit-tested in the normal build.

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;

/// `completed_seq` of a change whose outcome never became definite.
pub const UNKNOWN_OUTCOME_SEQ: u64 = u64::MAX;

/// One change of the user's permission, from its first attempt's invocation to the
/// answer that made its outcome definite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionChange {
    pub granted: bool,
    pub invoked_seq: u64,
    pub completed_seq: u64,
}

/// One write by the user that succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermittedWrite {
    pub client: u64,
    pub member: u64,
    pub key: String,
    pub revision: i64,
    pub invoked_seq: u64,
    pub completed_seq: u64,
}

/// What the auth workload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRecord {
    /// In the order the operator made them: revoke, grant, revoke, ...
    pub changes: Vec<PermissionChange>,
    pub writes: Vec<PermittedWrite>,
    /// Writes refused for lack of permission (or an auth change in between), for coverage.
    pub refused: u64,
}

pub fn check_revokes_respected(record: &AuthRecord) -> Verdict {
    for (index, revoke) in record.changes.iter().enumerate().filter(|(_, change)| !change.granted) {
        // The operator alternates: the next change after a revoke is the grant.
        let regranted_seq = record.changes.get(index + 1).map_or(u64::MAX, |grant| grant.invoked_seq);
        let inside = record.writes.iter().find(|write| write.invoked_seq > revoke.completed_seq && write.completed_seq < regranted_seq);
        if let Some(write) = inside {
            return Verdict::Violation {
                check: "auth-revoke-respected".into(),
                detail: format!(
                    "client {} wrote {:?} at revision {} through {:016x} (invoked at seq {}, answered at seq {}) although its write permission was revoked at seq {} and granted again only at seq {}",
                    write.client,
                    write.key,
                    write.revision,
                    write.member,
                    write.invoked_seq,
                    write.completed_seq,
                    revoke.completed_seq,
                    if regranted_seq == u64::MAX { "never".to_string() } else { regranted_seq.to_string() }
                ),
                ops: vec![],
            };
        }
    }
    Verdict::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(granted: bool, invoked_seq: u64, completed_seq: u64) -> PermissionChange {
        PermissionChange { granted, invoked_seq, completed_seq }
    }

    fn write(invoked_seq: u64, completed_seq: u64) -> PermittedWrite {
        PermittedWrite { client: 0, member: 1, key: "auth/0/1".into(), revision: 9, invoked_seq, completed_seq }
    }

    #[test]
    fn a_write_inside_a_revoked_interval_is_a_violation() {
        let changes = vec![change(false, 10, 20), change(true, 30, 40), change(false, 50, 60)];
        let record = |writes| AuthRecord { changes: changes.clone(), writes, refused: 0 };
        // Overlapping the revoke or the grant: it may have been applied while granted.
        assert_eq!(check_revokes_respected(&record(vec![write(5, 25), write(19, 22), write(25, 35), write(41, 55)])), Verdict::Ok);
        // Wholly between the revoke's answer and the grant's invocation.
        assert!(check_revokes_respected(&record(vec![write(21, 29)])).is_violation());
        // After the last revoke, never granted again.
        assert!(check_revokes_respected(&record(vec![write(61, 70)])).is_violation());
    }

    /// A grant the run stopped retrying may have taken effect from its invocation on; a
    /// revoke of unknown outcome begins no revoked interval.
    #[test]
    fn changes_of_unknown_outcome_bound_what_is_known() {
        let grant_in_doubt = vec![change(false, 10, 20), change(true, 30, UNKNOWN_OUTCOME_SEQ)];
        let record = AuthRecord { changes: grant_in_doubt, writes: vec![write(25, 28), write(31, 40)], refused: 0 };
        // Before the grant's invocation: revoked for sure; after it: perhaps granted.
        let verdict = check_revokes_respected(&record);
        let Verdict::Violation { detail, .. } = verdict else { panic!("{verdict:?}") };
        assert!(detail.contains("invoked at seq 25"), "{detail}");
        let after_only = AuthRecord { writes: vec![write(31, 40)], ..record };
        assert_eq!(check_revokes_respected(&after_only), Verdict::Ok);
        let revoke_in_doubt = vec![change(true, 0, 0), change(false, 10, UNKNOWN_OUTCOME_SEQ)];
        assert_eq!(check_revokes_respected(&AuthRecord { changes: revoke_in_doubt, writes: vec![write(11, 12)], refused: 0 }), Verdict::Ok);
    }
}
