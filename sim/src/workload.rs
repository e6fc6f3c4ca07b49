//! The client workload: clients issuing puts, linearizable and serializable gets,
//! deletes and compare-and-set txns on a few keys with unique values, recording every
//! attempt in the history; writes that fail as unavailable are retried elsewhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detcd_node::errors::EtcdError;
use detcd_node::pb::etcdserverpb::{compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use detcd_node::NodeHandle;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;
use crate::history::{OpKind, Outcome, ReadKv, KEY_PREFIX, KEY_PREFIX_END};
use crate::world::read_kv_of as read_kv;
use crate::scenario::{Scenario, LARGE_VALUE_BYTES_MAX, LARGE_VALUE_BYTES_MIN};

/// Client operations per client before it stops on its own.
pub const CLIENT_OPERATIONS_MAX: u64 = 100_000;

pub fn key_name(index: usize) -> String {
    format!("{KEY_PREFIX}{index}")
}

/// One client: issues operations until told to stop, recording each; `large_value_percent`
/// of its writes carry a large value (see `Options::large_value_percent`).
pub async fn run_client(client: u64, cluster: Arc<Cluster>, scenario: Scenario, stop: Arc<AtomicBool>, seed: u64, large_value_percent: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0xa076_1d64_78bd_642f));
    // Value sizes come from a stream of their own: a seed's operations, members and
    // timing stay what they were without large values.
    let mut size_rng = ChaCha8Rng::seed_from_u64(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7369_7a65_7321_2121);
    let workload = &scenario.workload;
    let weights = [workload.put, workload.get, workload.serializable_get, workload.delete, workload.cas, workload.range];
    let total: u32 = weights.iter().sum::<u32>().max(1);
    let mut last_seen: Vec<Option<String>> = vec![None; workload.keys];
    for n in 0..CLIENT_OPERATIONS_MAX {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=workload.think_ms_max))).await;
        let key_index = rng.gen_range(0..workload.keys);
        let key = key_name(key_index);
        let mut value = format!("c{client}-{n}");
        if large_value_percent > 0 && size_rng.gen_range(0..100) < large_value_percent {
            value = large_value(value, &mut size_rng);
        }
        let mut pick = rng.gen_range(0..total);
        let mut kind_index = 0;
        while pick >= weights[kind_index] {
            pick -= weights[kind_index];
            kind_index += 1;
        }
        let kind = match kind_index {
            0 => OpKind::Put { key: key.clone(), value },
            1 => OpKind::Get { key: key.clone(), serializable: false },
            2 => OpKind::Get { key: key.clone(), serializable: true },
            3 => OpKind::Delete { key: key.clone() },
            4 => OpKind::Cas { key: key.clone(), expected: last_seen[key_index].clone(), value },
            _ => OpKind::Range { start: KEY_PREFIX.into(), end: KEY_PREFIX_END.into() },
        };
        // A write that failed as unavailable is retried on another member, like etcd
        // clients do; every attempt is its own operation in the history, with a value
        // of its own, so a late copy of an earlier attempt can never pass for a retry.
        for attempt in 0..=workload.write_retries_max {
            let member = rng.gen_range(0..cluster.members.len());
            let lose_request = workload.client_link_loss > 0.0 && rng.gen_bool(workload.client_link_loss);
            let lose_answer = workload.client_link_loss > 0.0 && rng.gen_bool(workload.client_link_loss);
            let attempt_kind = with_attempt_value(&kind, attempt);
            let (read, outcome) = perform(&cluster, client, member, attempt_kind, lose_request, lose_answer, workload.client_timeout_ms).await;
            if let Some(value) = read {
                last_seen[key_index] = value;
            }
            if outcome == Outcome::Ok || !kind.is_write() || stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..=200))).await;
        }
    }
}

/// `value` (unique) padded to a drawn size between `LARGE_VALUE_BYTES_MIN` and
/// `LARGE_VALUE_BYTES_MAX` (log-uniform): "c1-7:" then dots.
fn large_value(value: String, rng: &mut ChaCha8Rng) -> String {
    let (low, high) = (LARGE_VALUE_BYTES_MIN as f64, LARGE_VALUE_BYTES_MAX as f64);
    let size_bytes = (rng.gen_range(low.ln()..=high.ln()).exp() as usize).clamp(LARGE_VALUE_BYTES_MIN, LARGE_VALUE_BYTES_MAX);
    let mut padded = value;
    padded.push(':');
    while padded.len() < size_bytes {
        padded.push('.');
    }
    padded
}

/// `kind` with its written value made unique to retry `attempt` (the first attempt
/// keeps it: "c1-7", then "c1-7r1", "c1-7r2").
fn with_attempt_value(kind: &OpKind, attempt: u32) -> OpKind {
    if attempt == 0 {
        return kind.clone();
    }
    match kind {
        OpKind::Put { key, value } => OpKind::Put { key: key.clone(), value: format!("{value}r{attempt}") },
        OpKind::Cas { key, expected, value } => OpKind::Cas { key: key.clone(), expected: expected.clone(), value: format!("{value}r{attempt}") },
        other => other.clone(),
    }
}

/// Performs one operation on `member` and records it. Returns the value read (if a read
/// succeeded) and the outcome.
pub async fn perform(
    cluster: &Cluster,
    client: u64,
    member: usize,
    kind: OpKind,
    lose_request: bool,
    lose_answer: bool,
    timeout_ms: u64,
) -> (Option<Option<String>>, Outcome) {
    let slot = &cluster.members[member];
    let world = &cluster.world;
    let handle = slot.handle();
    let incarnation = handle.as_ref().map_or(0, |(_, inc)| *inc);
    let id = world.invoke(client, slot.member_id(), incarnation, kind.clone());
    let Some((handle, _)) = handle else {
        world.complete(id, Outcome::Fail, |op| op.error = Some("member is down".into()));
        return (None, Outcome::Fail);
    };
    if lose_request {
        tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
        world.complete(id, Outcome::Unknown, |op| op.error = Some("request lost on the client link".into()));
        return (None, Outcome::Unknown);
    }
    let timeout = Duration::from_millis(timeout_ms);
    let result = tokio::time::timeout(timeout, execute(&handle, &kind)).await;
    let result = match result {
        Err(_) => {
            world.complete(id, Outcome::Unknown, |op| op.error = Some("client timeout".into()));
            return (None, Outcome::Unknown);
        }
        Ok(result) => result,
    };
    if lose_answer {
        world.complete(id, Outcome::Unknown, |op| op.error = Some("answer lost on the client link".into()));
        return (None, Outcome::Unknown);
    }
    match result {
        Ok(answer) => {
            let read = answer.read_value.clone();
            world.complete(id, Outcome::Ok, |op| {
                op.read_value = answer.read_value;
                op.read_kvs = answer.read_kvs;
                op.deleted = answer.deleted;
                op.succeeded = answer.succeeded;
                op.revision = answer.revision;
            });
            (matches!(kind, OpKind::Get { .. }).then_some(read), Outcome::Ok)
        }
        Err(error) => {
            let outcome = if error.outcome_unknown() { Outcome::Unknown } else { Outcome::Fail };
            // Reached mostly through drawn member knobs (small request and uncommitted
            // byte limits): counted, so a sweep shows how often refusals were judged.
            if matches!(error, EtcdError::TooManyRequests) {
                world.count("client: refused as too many requests");
            }
            // A large value over a member's drawn `--max-request-bytes`.
            if matches!(error, EtcdError::RequestTooLarge) {
                world.count("client: refused as too large");
            }
            world.complete(id, outcome, |op| op.error = Some(error.message().to_string()));
            (None, outcome)
        }
    }
}

struct Answer {
    read_value: Option<String>,
    read_kvs: Vec<ReadKv>,
    deleted: i64,
    succeeded: bool,
    revision: i64,
}

async fn execute(handle: &NodeHandle, kind: &OpKind) -> Result<Answer, EtcdError> {
    let revision_of = |header: Option<&detcd_node::pb::etcdserverpb::ResponseHeader>| header.map_or(0, |h| h.revision);
    match kind {
        OpKind::Put { key, value } => {
            let response = handle.put(PutRequest { key: key.clone().into_bytes(), value: value.clone().into_bytes().into(), ..Default::default() }).await?;
            Ok(Answer { read_value: None, read_kvs: Vec::new(), deleted: 0, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Get { key, serializable } => {
            let response = handle.range(RangeRequest { key: key.clone().into_bytes(), serializable: *serializable, ..Default::default() }).await?;
            let read_value = response.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            let read_kvs = response.kvs.iter().map(read_kv).collect();
            Ok(Answer { read_value, read_kvs, deleted: 0, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Range { start, end } => {
            let request = RangeRequest { key: start.clone().into_bytes(), range_end: end.clone().into_bytes(), ..Default::default() };
            let response = handle.range(request).await?;
            let read_kvs = response.kvs.iter().map(read_kv).collect();
            Ok(Answer { read_value: None, read_kvs, deleted: 0, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Delete { key } => {
            let response = handle.delete_range(DeleteRangeRequest { key: key.clone().into_bytes(), ..Default::default() }).await?;
            Ok(Answer { read_value: None, read_kvs: Vec::new(), deleted: response.deleted, succeeded: true, revision: revision_of(response.header.as_ref()) })
        }
        OpKind::Cas { key, expected, value } => {
            let compare = match expected {
                Some(expected) => Compare {
                    key: key.clone().into_bytes(),
                    target: compare::CompareTarget::Value as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Value(expected.clone().into_bytes())),
                    range_end: Vec::new(),
                },
                None => Compare {
                    key: key.clone().into_bytes(),
                    target: compare::CompareTarget::Version as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Version(0)),
                    range_end: Vec::new(),
                },
            };
            let put = RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest { key: key.clone().into_bytes(), value: value.clone().into_bytes().into(), ..Default::default() })),
            };
            let response = handle.txn(TxnRequest { compare: vec![compare], success: vec![put], failure: Vec::new() }).await?;
            Ok(Answer { read_value: None, read_kvs: Vec::new(), deleted: 0, succeeded: response.succeeded, revision: revision_of(response.header.as_ref()) })
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_keeps_its_unique_prefix_within_the_drawn_sizes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sizes: Vec<usize> = (0..500)
            .map(|n| {
                let value = large_value(format!("c3-{n}"), &mut rng);
                assert!(value.starts_with(&format!("c3-{n}:")), "{}", &value[..16]);
                value.len()
            })
            .collect();
        assert!(sizes.iter().all(|size| (LARGE_VALUE_BYTES_MIN..=LARGE_VALUE_BYTES_MAX).contains(size)));
        assert!(sizes.iter().any(|size| *size < 1024) && sizes.iter().any(|size| *size > 8 * 1024), "log-uniform over the range");
    }
}
