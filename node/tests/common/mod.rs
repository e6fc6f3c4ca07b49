//! Helpers shared by the core's integration tests.

use std::collections::BTreeSet;
use std::sync::Mutex;

use detcd_node::env::{PeerDirectory, Transport};
use raft::eraftpb::Message;

/// A transport that keeps what a member sends, for the test to deliver (or not), and
/// the members its member's applied table removed (see [`Wire::refuses`]).
#[derive(Default)]
pub struct Wire {
    sent: Mutex<Vec<Message>>,
    removed: Mutex<BTreeSet<u64>>,
    /// The members that told this one it was removed.
    told_removed_by: Mutex<BTreeSet<u64>>,
}

impl Transport for Wire {
    fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        self.sent.lock().expect("wire").extend(messages);
        Vec::new()
    }

    fn set_peers(&self, peers: &PeerDirectory) {
        *self.removed.lock().expect("wire") = peers.removed.clone();
    }

    fn removal_notices(&self) -> BTreeSet<u64> {
        self.told_removed_by.lock().expect("wire").clone()
    }
}

impl Wire {
    /// Everything sent since the last call.
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.sent.lock().expect("wire"))
    }

    /// As the production transport does: whether this member (`own_id`) refuses a
    /// message from `sender`, a member it removed — and then tells the sender so.
    #[allow(dead_code)]
    pub fn refuses(&self, own_id: u64, sender: &Wire, from: u64) -> bool {
        let refused = self.removed.lock().expect("wire").contains(&from);
        if refused {
            sender.told_removed_by.lock().expect("wire").insert(own_id);
        }
        refused
    }
}
