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
    }
    check_no_duplicate_writes(&request.success)?;
    check_no_duplicate_writes(&request.failure)?;
    Ok(())
}

/// Whether a txn (with everything nested in it) has a put on any branch.
pub fn txn_has_put(request: &TxnRequest) -> bool {
    let mut stack = vec![request];
    while let Some(txn) = stack.pop() {
        for op in txn.success.iter().chain(txn.failure.iter()) {
            match &op.request {
                Some(request_op::Request::RequestPut(_)) => return true,
                Some(request_op::Request::RequestTxn(nested)) => stack.push(nested),
                _ => {}
            }
        }
    }
    false
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

/// A delete's key range: `[start, end)`; `end` empty is the single key `start`, `[0]`
/// means every key from `start`.
fn delete_covers(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Puts and deletes of one branch (a list of ops) and everything nested in it.
#[derive(Default)]
struct BranchWrites<'a> {
    puts: BTreeSet<&'a [u8]>,
    deletes: Vec<(&'a [u8], &'a [u8])>,
}

impl BranchWrites<'_> {
    fn deletes_cover(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|(start, end)| delete_covers(start, end, key))
    }
}

/// etcd's `checkIntervals`: across a branch and every txn nested in it, no key is put
/// twice and no put falls in a delete's range — except that a nested txn's success and
/// failure branches may put the same key (only one of them runs).
///
/// Branches are numbered in the order they are found, so a nested branch always has a
/// higher number than its parent; visiting them from the highest number down checks
/// every child before its parent, without recursion.
fn check_no_duplicate_writes(top: &[RequestOp]) -> Result<(), EtcdError> {
    // (ops, per nested txn of these ops: its success and failure branch numbers)
    let mut branches: Vec<(&[RequestOp], Vec<(usize, usize)>)> = vec![(top, Vec::new())];
    let mut next = 0;
    while next < branches.len() {
        let ops = branches[next].0;
        let mut children = Vec::new();
        for op in ops {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                let success = branches.len();
                branches.push((&nested.success, Vec::new()));
                branches.push((&nested.failure, Vec::new()));
                children.push((success, success + 1));
            }
        }
        branches[next].1 = children;
        next += 1;
    }
    let mut writes: Vec<Option<BranchWrites<'_>>> = (0..branches.len()).map(|_| None).collect();
    for index in (0..branches.len()).rev() {
        let (ops, children) = &branches[index];
        let mut level = BranchWrites::default();
        for op in ops.iter() {
            if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
                level.deletes.push((&d.key, &d.range_end));
            }
        }
        for (success, failure) in children {
            let then_writes = writes[*success].take().expect("children are checked before their parent");
            let else_writes = writes[*failure].take().expect("children are checked before their parent");
            for key in &then_writes.puts {
                if level.puts.contains(key) || level.deletes_cover(key) {
                    return Err(EtcdError::DuplicateKey);
                }
                level.puts.insert(key);
            }
            for key in &else_writes.puts {
                if (level.puts.contains(key) && !then_writes.puts.contains(key)) || level.deletes_cover(key) {
                    return Err(EtcdError::DuplicateKey);
                }
                level.puts.insert(key);
            }
            level.deletes.extend(then_writes.deletes);
            level.deletes.extend(else_writes.deletes);
        }
        for op in ops.iter() {
            if let Some(request_op::Request::RequestPut(p)) = &op.request {
                if !level.puts.insert(&p.key) || level.deletes_cover(&p.key) {
                    return Err(EtcdError::DuplicateKey);
                }
            }
        }
        writes[index] = Some(level);
    }
    Ok(())
}
