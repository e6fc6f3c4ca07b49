//! What a peer may put into raft. The peer port is an input like any other: a proposal
//! forwarded by a follower becomes a log entry that every member applies on every
//! restart, so a bad one must be refused before raft sees it, never at apply.

use raft::eraftpb::{EntryType, Message, MessageType};

use crate::apply::decode_internal;

/// A message of detcd's own beside raft's (a membership probe, a forwarded keep-alive):
/// a `MsgUnreachable` — local to raft-rs, which refuses a peer's — whose context is
/// `context` (a tag, then the body). The core takes it before raft could see it, so it
/// travels every transport, and every simulated fault, as raft's own messages do.
pub fn side_message(from: u64, to: u64, context: Vec<u8>) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgUnreachable);
    message.from = from;
    message.to = to;
    message.context = context.into();
    message
}

/// The context of a message built by [`side_message`], if `message` is one.
pub fn side_context(message: &Message) -> Option<&[u8]> {
    (message.get_msg_type() == MessageType::MsgUnreachable && message.term == 0).then_some(message.context.as_ref())
}

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
        match entry.get_entry_type() {
            EntryType::EntryNormal => {
                decode_internal(&entry.data).map_err(|e| format!("a forwarded proposal that {e}"))?;
            }
            EntryType::EntryConfChangeV2 => check_member_change(&entry.data)?,
            EntryType::EntryConfChange => return Err("a forwarded v1 configuration change (detcd proposes v2 only)".into()),
        }
    }
    Ok(())
}

/// A forwarded membership change is what `consensus::membership` proposes: one change,
/// with a context naming the member it changes.
fn check_member_change(data: &[u8]) -> Result<(), String> {
    use prost::Message as _;
    use protobuf::Message as _;
    let mut change = raft::eraftpb::ConfChangeV2::default();
    change.merge_from_bytes(data).map_err(|e| format!("a forwarded configuration change that does not decode: {e}"))?;
    let [single] = change.get_changes() else {
        return Err(format!("a forwarded configuration change of {} changes (detcd proposes one at a time)", change.get_changes().len()));
    };
    let context = crate::pb::detcdpb::MemberChange::decode(change.get_context())
        .map_err(|e| format!("a forwarded configuration change whose context does not decode: {e}"))?;
    if context.member.as_ref().map(|m| m.id) != Some(single.node_id) || single.node_id == 0 {
        return Err("a forwarded configuration change whose context names another member".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use protobuf::Message as _;
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry};

    use super::*;
    use crate::pb::detcdpb::MemberChange;
    use crate::pb::etcdserverpb::Member;

    fn proposal_of(changes: &[(u64, ConfChangeType)], context_member: u64) -> Message {
        let mut change = ConfChangeV2::default();
        let singles: Vec<ConfChangeSingle> = changes
            .iter()
            .map(|(id, kind)| {
                let mut single = ConfChangeSingle::default();
                single.set_change_type(*kind);
                single.node_id = *id;
                single
            })
            .collect();
        change.set_changes(singles.into());
        let context = MemberChange { proposer: 1, request_id: 2, member: Some(Member { id: context_member, ..Member::default() }) };
        change.set_context(context.encode_to_vec().into());
        let mut entry = Entry::default();
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        entry.data = change.write_to_bytes().expect("encodes").into();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.entries = vec![entry].into();
        message
    }

    #[test]
    fn a_forwarded_membership_change_must_be_one_change_naming_its_member() {
        assert_eq!(check_peer_message(&proposal_of(&[(7, ConfChangeType::AddNode)], 7)), Ok(()));
        assert!(check_peer_message(&proposal_of(&[(7, ConfChangeType::AddNode)], 8)).is_err());
        assert!(check_peer_message(&proposal_of(&[(7, ConfChangeType::AddNode), (8, ConfChangeType::RemoveNode)], 7)).is_err());
        assert!(check_peer_message(&proposal_of(&[], 7)).is_err());
        let mut garbage = proposal_of(&[(7, ConfChangeType::AddNode)], 7);
        garbage.entries[0].data = vec![0xff, 0xff, 0xff].into();
        assert!(check_peer_message(&garbage).is_err());
    }
}
