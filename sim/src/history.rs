//! The record of every client operation in a run: what was invoked, when, on which
//! member, and what came back. Written to the run's JSON report and read by
//! `detcd-sim check`.
//!
//! Times: `invoke_seq`/`complete_seq` are positions in one global event counter of the
//! single-threaded simulation, so they order events exactly (many events share one
//! virtual millisecond). `invoke_ms`/`complete_ms` are virtual time, for people.
//! An operation whose outcome the client never learned has `outcome = "unknown"` and no
//! `complete_seq`: it may have taken effect at any point after its invocation, or never.

use serde::{Deserialize, Serialize};

/// Every workload key starts with this; no other client's key does.
pub const KEY_PREFIX: &str = "k";
/// The end of the workload's key range (the prefix's successor).
pub const KEY_PREFIX_END: &str = "l";

/// What a client asked for. Values are unique per write, so a read names its write.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    Put { key: String, value: String },
    Get { key: String, serializable: bool },
    Delete { key: String },
    /// Compare-and-set: put `value` if the key's value is `expected` (`None`: absent).
    Cas { key: String, expected: Option<String>, value: String },
    /// A linearizable read of every key in `[start, end)` (checked by the whole-state
    /// model only: it is not a single-key operation).
    Range { start: String, end: String },
}

impl OpKind {
    pub fn key(&self) -> &str {
        match self {
            OpKind::Put { key, .. } | OpKind::Get { key, .. } | OpKind::Delete { key } | OpKind::Cas { key, .. } => key,
            OpKind::Range { start, .. } => start,
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get { .. } | OpKind::Range { .. })
    }

    /// The value this op writes, if it writes one (values are unique per attempt).
    pub fn written_value(&self) -> Option<&str> {
        match self {
            OpKind::Put { value, .. } | OpKind::Cas { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// One key-value as a read returned it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadKv {
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Refused before it could take effect.
    Fail,
    /// Unknown: timed out or the member stopped; it may or may not have taken effect.
    Unknown,
}

/// One operation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Op {
    pub id: u64,
    pub client: u64,
    pub member: u64,
    /// Which start of that member served it (serializable reads are checked per start).
    pub incarnation: u64,
    pub kind: OpKind,
    pub outcome: Outcome,
    pub invoke_seq: u64,
    pub complete_seq: Option<u64>,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    /// Get: the value read (None: absent).
    #[serde(default)]
    pub read_value: Option<String>,
    /// Get and Range: every key-value returned, with its revisions and version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_kvs: Vec<ReadKv>,
    /// Delete: keys deleted.
    #[serde(default)]
    pub deleted: i64,
    /// Cas: whether the compare held.
    #[serde(default)]
    pub succeeded: bool,
    /// The response header's revision (0 when there was no response).
    #[serde(default)]
    pub revision: i64,
    /// The error text when the outcome is fail or unknown.
    #[serde(default)]
    pub error: Option<String>,
}

impl Op {
    /// An op just invoked: outcome unknown, no completion, no results yet.
    pub fn invoked(id: u64, client: u64, member: u64, incarnation: u64, kind: OpKind, invoke_seq: u64, invoke_ms: u64) -> Op {
        Op {
            id,
            client,
            member,
            incarnation,
            kind,
            outcome: Outcome::Unknown,
            invoke_seq,
            complete_seq: None,
            invoke_ms,
            complete_ms: None,
            read_value: None,
            read_kvs: Vec::new(),
            deleted: 0,
            succeeded: false,
            revision: 0,
            error: None,
        }
    }
}

/// A run's operations, in invocation order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn load(path: &std::path::Path) -> Result<History, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // A Jepsen register log (tab-separated events; raw tabs cannot occur in JSON).
        if crate::jepsen_log::is_jepsen_log(&text) {
            return crate::jepsen_log::parse_jepsen_log(&text).map_err(|e| format!("{}: {e}", path.display()));
        }
        // A history file is either a bare history or a whole run report holding one.
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let history = value.get("history").cloned().unwrap_or(value);
        serde_json::from_value(history).map_err(|e| format!("{}: not a history: {e}", path.display()))
    }

    /// Refuses a history that cannot be a record of a run instead of reinterpreting it:
    /// an answered op (`ok`/`fail`) must have a completion after its invocation, an
    /// `unknown` op must have none, and ids must be unique.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        for op in &self.ops {
            if !ids.insert(op.id) {
                return Err(format!("op {}: the id appears twice", op.id));
            }
            match (op.outcome, op.complete_seq) {
                (Outcome::Unknown, Some(seq)) => {
                    return Err(format!("op {}: outcome unknown, but it has a completion (complete_seq {seq})", op.id))
                }
                (Outcome::Ok | Outcome::Fail, None) => {
                    return Err(format!("op {}: outcome {:?} without a completion (complete_seq missing)", op.id, op.outcome))
                }
                (_, Some(seq)) if seq <= op.invoke_seq => {
                    return Err(format!("op {}: completed (seq {seq}) before it was invoked (seq {})", op.id, op.invoke_seq))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.ops.iter().filter(|op| op.outcome == outcome).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, outcome: Outcome, invoke_seq: u64, complete_seq: Option<u64>) -> Op {
        Op { outcome, complete_seq, ..Op::invoked(id, 0, 1, 1, OpKind::Get { key: "k".into(), serializable: false }, invoke_seq, 0) }
    }

    #[test]
    fn impossible_histories_are_refused() {
        let good = History { ops: vec![op(0, Outcome::Ok, 1, Some(2)), op(1, Outcome::Unknown, 3, None)] };
        assert_eq!(good.validate(), Ok(()));
        assert!(History { ops: vec![op(0, Outcome::Ok, 1, None)] }.validate().is_err());
        assert!(History { ops: vec![op(0, Outcome::Unknown, 1, Some(2))] }.validate().is_err());
        assert!(History { ops: vec![op(0, Outcome::Fail, 5, Some(2))] }.validate().is_err());
        assert!(History { ops: vec![op(0, Outcome::Ok, 1, Some(2)), op(0, Outcome::Ok, 3, Some(4))] }.validate().is_err());
    }
}
