//! Transactions, in etcd's order: first the *compare path* — every compare of the txn
//! and of each nested txn on the chosen branches is evaluated on the state before the
//! txn — then every op on that path is checked on the same state, and only then is the
//! path executed. Execution cannot fail, so nothing ever needs rolling back, and nested
//! compares never see the txn's own writes (as etcd's `compareToPath`).
//!
//! Nested txns are walked with explicit stacks (no recursion); nesting depth is bounded
//! by the request size limit.

use std::cmp::Ordering;

use super::{key_range, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb::{Event, KeyValue};

/// One txn being executed: its chosen branch, the next op to run, responses so far.
struct Frame<'a> {
    ops: &'a [RequestOp],
    next_op: usize,
    succeeded: bool,
    responses: Vec<ResponseOp>,
}

impl Mvcc {
    fn compare_holds(&self, comparison: &Compare, revision: i64) -> bool {
        let kvs = self.collect(&key_range(&comparison.key, &comparison.range_end), revision);
        let target = compare::CompareTarget::try_from(comparison.target).unwrap_or(compare::CompareTarget::Version);
        if kvs.is_empty() {
            if target == compare::CompareTarget::Value {
                return false;
            }
            return compare_key_value(comparison, target, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_key_value(comparison, target, kv))
    }

    /// Whether every compare of `txn` holds on the state before the txn.
    fn txn_succeeds(&self, txn: &TxnRequest) -> bool {
        txn.compare.iter().all(|c| self.compare_holds(c, self.current_revision))
    }

    /// Checks every op on the compare path against the state before the txn (etcd's
    /// `checkTxn`): read revisions, and what puts need (a live key, an existing lease).
    fn check_txn_path(&self, request: &TxnRequest) -> Result<(), EtcdError> {
        let mut stack = vec![request];
        while let Some(txn) = stack.pop() {
            let ops = if self.txn_succeeds(txn) { &txn.success } else { &txn.failure };
            for op in ops {
                match &op.request {
                    Some(request_op::Request::RequestRange(range)) if range.revision > 0 => {
                        self.check_read_revision(range.revision)?;
                    }
                    Some(request_op::Request::RequestPut(put)) => self.check_put(put)?,
                    Some(request_op::Request::RequestTxn(nested)) => stack.push(nested),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Applies a Txn atomically: every change shares one new revision, and is appended
    /// to `events` in execution order.
    pub fn apply_txn(&mut self, request: &TxnRequest, events: &mut Vec<Event>) -> Result<TxnResponse, EtcdError> {
        self.check_txn_path(request)?;
        let write_revision = self.current_revision + 1;
        let mut changed = false;
        let succeeded = self.txn_succeeds(request);
        let ops = if succeeded { &request.success } else { &request.failure };
        let mut stack = vec![Frame { ops, next_op: 0, succeeded, responses: Vec::new() }];
        let mut finished: Option<TxnResponse> = None;
        while let Some(frame) = stack.last_mut() {
            let Some(op) = frame.ops.get(frame.next_op) else {
                let done = stack.pop().expect("the frame looked at above");
                let response = TxnResponse { header: None, succeeded: done.succeeded, responses: done.responses };
                match stack.last_mut() {
                    Some(parent) => parent.responses.push(ResponseOp { response: Some(response_op::Response::ResponseTxn(response)) }),
                    None => finished = Some(response),
                }
                continue;
            };
            frame.next_op += 1;
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    // A range inside a txn sees the txn's own earlier writes, as etcd's.
                    let latest = if changed { write_revision } else { self.current_revision };
                    let response = self.range_at_latest(range, latest).expect("range revisions were checked");
                    response_op::Response::ResponseRange(response)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    changed = true;
                    response_op::Response::ResponsePut(self.put_at(put, write_revision, events))
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    let response = self.delete_at(delete, write_revision, events);
                    changed |= response.deleted > 0;
                    response_op::Response::ResponseDeleteRange(response)
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let succeeded = self.txn_succeeds(nested);
                    let ops = if succeeded { &nested.success } else { &nested.failure };
                    stack.push(Frame { ops, next_op: 0, succeeded, responses: Vec::new() });
                    continue;
                }
                None => continue,
            };
            frame.responses.push(ResponseOp { response: Some(response) });
        }
        let mut response = finished.expect("the outermost txn finishes last");
        let revision = if changed { write_revision } else { self.current_revision };
        if changed {
            self.current_revision = write_revision;
        }
        set_nested_revisions(&mut response.responses, revision);
        Ok(response)
    }

    /// [`Mvcc::apply_txn`] for callers that do not consume events.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.apply_txn(request, &mut Vec::new())
    }

}

fn compare_key_value(comparison: &Compare, target: compare::CompareTarget, kv: &KeyValue) -> bool {
    use compare::TargetUnion;
    let ordering = match target {
        compare::CompareTarget::Value => {
            let wanted: &[u8] = match &comparison.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(wanted)
        }
        _ => {
            let wanted = match comparison.target_union {
                Some(TargetUnion::Version(v))
                | Some(TargetUnion::CreateRevision(v))
                | Some(TargetUnion::ModRevision(v))
                | Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            let actual = match target {
                compare::CompareTarget::Version => kv.version,
                compare::CompareTarget::Create => kv.create_revision,
                compare::CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            actual.cmp(&wanted)
        }
    };
    match compare::CompareResult::try_from(comparison.result).unwrap_or(compare::CompareResult::Equal) {
        compare::CompareResult::Equal => ordering == Ordering::Equal,
        compare::CompareResult::Greater => ordering == Ordering::Greater,
        compare::CompareResult::Less => ordering == Ordering::Less,
        compare::CompareResult::NotEqual => ordering != Ordering::Equal,
    }
}

/// etcd reports the txn's revision in every nested response header.
fn set_nested_revisions(responses: &mut [ResponseOp], revision: i64) {
    // Iterative walk (no recursion): a stack of response lists still to visit.
    let mut stack: Vec<&mut [ResponseOp]> = vec![responses];
    while let Some(list) = stack.pop() {
        for op in list.iter_mut() {
            let header = Some(ResponseHeader { revision, ..Default::default() });
            match &mut op.response {
                Some(response_op::Response::ResponseRange(r)) => r.header = header,
                Some(response_op::Response::ResponsePut(r)) => r.header = header,
                Some(response_op::Response::ResponseDeleteRange(r)) => r.header = header,
                Some(response_op::Response::ResponseTxn(r)) => {
                    r.header = header;
                    stack.push(&mut r.responses);
                }
                None => {}
            }
        }
    }
}
