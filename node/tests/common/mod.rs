//! Helpers shared by the core's integration tests.

use std::sync::Mutex;

use detcd_node::env::Transport;
use raft::eraftpb::Message;

/// A transport that keeps what a member sends, for the test to deliver (or not).
#[derive(Default)]
pub struct Wire {
    sent: Mutex<Vec<Message>>,
}

impl Transport for Wire {
    fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        self.sent.lock().expect("wire").extend(messages);
        Vec::new()
    }
}

impl Wire {
    /// Everything sent since the last call.
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.sent.lock().expect("wire"))
    }
}
