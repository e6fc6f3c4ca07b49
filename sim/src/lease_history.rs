//! The record of every lease operation in a run and of every lease's end as the members
//! applied it. Pure data, written into the run's JSON report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::Outcome;

/// What a lease client asked for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LeaseOpKind {
    Grant { requested_ttl: i64 },
    KeepAlive,
    Revoke,
    Put { key: String },
    TimeToLive,
}

/// One lease operation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseOp {
    pub id: u64,
    pub client: u64,
    pub lease: i64,
    pub kind: LeaseOpKind,
    pub member: u64,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub outcome: Outcome,
    /// The TTL the answer carried (grant, keep-alive: granted TTL, 0 = not found;
    /// TimeToLive: remaining, -1 = not found).
    pub ttl: i64,
    pub error: Option<String>,
}

/// How and when a lease ended, at the first member that applied it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseEnd {
    pub at_ms: u64,
    pub revision: i64,
    pub expired: bool,
}

/// Every lease operation and every lease end.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ops: Vec<LeaseOp>,
    pub ends: BTreeMap<i64, LeaseEnd>,
}
