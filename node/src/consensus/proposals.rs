//! Client writes proposed by this member and waiting for their entry to be applied:
//! ids, deadlines, byte accounting, and failing them when the leader is lost.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::apply::{Request, Response};
use crate::errors::EtcdError;

pub type Responder = tokio::sync::oneshot::Sender<Result<Response, EtcdError>>;

/// A client request waiting for an answer from the loop.
pub struct PendingRequest {
    pub request: Request,
    pub responder: Responder,
    pub deadline_ms: u64,
    /// Encoded size, counted against the member's pending-bytes limit.
    pub size_bytes: usize,
    /// The client's user and the auth revision it was resolved at (`None`: auth was
    /// disabled when the request was taken).
    pub auth: Option<crate::pb::detcdpb::AuthInfo>,
}

impl PendingRequest {
    pub fn fail(self, error: EtcdError) {
        let _ = self.responder.send(Err(error));
    }
}

/// Proposals by request id. Ids are random (from the member's seeded generator) so a
/// restarted member never reuses an id its previous incarnation proposed.
#[derive(Default)]
pub struct Proposals {
    by_id: BTreeMap<u64, PendingRequest>,
    bytes: usize,
    /// Proposals failed so far (timed out, or the leader was lost): etcd's
    /// `proposals_failed_total`.
    failed_total: u64,
}

impl Proposals {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn failed_total(&self) -> u64 {
        self.failed_total
    }

    /// A fresh non-zero id not in use.
    pub fn new_id(&self, rng: &mut ChaCha8Rng) -> u64 {
        loop {
            let candidate: u64 = rng.gen();
            if candidate != 0 && !self.by_id.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    pub fn insert(&mut self, request_id: u64, pending: PendingRequest) {
        self.bytes += pending.size_bytes;
        let previous = self.by_id.insert(request_id, pending);
        assert!(previous.is_none(), "proposal ids are unique");
    }

    pub fn remove(&mut self, request_id: u64) -> Option<PendingRequest> {
        let pending = self.by_id.remove(&request_id)?;
        self.bytes -= pending.size_bytes;
        Some(pending)
    }

    /// Fails every proposal whose deadline passed with "request timed out".
    pub fn expire(&mut self, now_ms: u64) {
        let expired: Vec<u64> = self.by_id.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
        for id in expired {
            self.remove(id).expect("expired id listed above").fail(EtcdError::Timeout);
            self.failed_total += 1;
        }
    }

    /// Fails every proposal with `error` (their outcome is unknown to the client).
    pub fn fail_all(&mut self, error: EtcdError) {
        for (_, pending) in std::mem::take(&mut self.by_id) {
            pending.fail(error.clone());
            self.failed_total += 1;
        }
        self.bytes = 0;
    }
}
