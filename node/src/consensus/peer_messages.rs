//! What a peer may put into raft. The peer port is an input like any other: a proposal
//! forwarded by a follower becomes a log entry that every member applies on every
//! restart, so a bad one must be refused before raft sees it, never at apply.

use raft::eraftpb::{EntryType, Message, MessageType};

use crate::apply::decode_internal;

/// Why a peer message is refused, or `Ok` if raft may step it.
pub fn check_peer_message(message: &Message) -> Result<(), String> {
    if message.get_msg_type() != MessageType::MsgPropose {
        // Every other type is raft's own protocol; raft-rs refuses local-only types and
        // responses from unknown peers itself.
        return Ok(());
    }
    if message.entries.is_empty() {
        return Err("a proposal without entries".into());
    }
    for entry in &message.entries {
        if entry.get_entry_type() != EntryType::EntryNormal {
            return Err("a forwarded configuration change (membership changes are not proposed by peers)".into());
        }
        decode_internal(&entry.data).map_err(|e| format!("a forwarded proposal that {e}"))?;
    }
    Ok(())
}
