//! Checks a request must pass before it is proposed or served, with etcd's errors.
//!
//! Run on the member that receives the request, before raft sees it, so bad input is
//! refused and nothing is written.

use std::collections::BTreeSet;

use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

pub fn check_range(request: &RangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(request: &PutRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(request: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Sizes, keys and duplicate writes of a txn and every txn nested in it.
pub fn check_txn(request: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    // Walk nested txns with an explicit stack.
    let mut stack = vec![request];
    while let Some(txn) = stack.pop() {
        if txn.compare.len() > max_txn_ops || txn.success.len() > max_txn_ops || txn.failure.len() > max_txn_ops {
            return Err(EtcdError::TooManyOps);
        }
        if txn.compare.iter().any(|c| c.key.is_empty()) {
            return Err(EtcdError::EmptyKey);
        }
        for op in txn.success.iter().chain(txn.failure.iter()) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => check_range(r)?,
                Some(request_op::Request::RequestPut(p)) => check_put(p)?,
                Some(request_op::Request::RequestDeleteRange(d)) => check_delete_range(d)?,
                Some(request_op::Request::RequestTxn(nested)) => stack.push(nested),
                None => {}
            }
        }
        check_no_duplicate_writes(&txn.success)?;
        check_no_duplicate_writes(&txn.failure)?;
    }
    Ok(())
}

/// Whether a txn (with everything nested in it) writes nothing.
pub fn txn_is_read_only(request: &TxnRequest) -> bool {
    let mut stack = vec![request];
    while let Some(txn) = stack.pop() {
        for op in txn.success.iter().chain(txn.failure.iter()) {
            match &op.request {
                Some(request_op::Request::RequestPut(_)) | Some(request_op::Request::RequestDeleteRange(_)) => {
                    return false
                }
                Some(request_op::Request::RequestTxn(nested)) => stack.push(nested),
                _ => {}
            }
        }
    }
    true
}

/// One branch may not put a key twice, nor put a key that one of its deletes covers.
/// Nested txns are checked on their own level (a write in a nested txn colliding with
/// the outer branch is not caught here; the store still applies it exactly).
fn check_no_duplicate_writes(ops: &[RequestOp]) -> Result<(), EtcdError> {
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    let mut deletes: Vec<(&[u8], &[u8])> = Vec::new();
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if !puts.insert(&p.key) {
                    return Err(EtcdError::DuplicateKey);
                }
            }
            Some(request_op::Request::RequestDeleteRange(d)) => deletes.push((&d.key, &d.range_end)),
            _ => {}
        }
    }
    for key in &puts {
        for (start, end) in &deletes {
            let covered = if end.is_empty() {
                key == start
            } else if *end == [0] {
                *key >= *start
            } else {
                *key >= *start && *key < *end
            };
            if covered {
                return Err(EtcdError::DuplicateKey);
            }
        }
    }
    Ok(())
}
