//! The read path: etcd's Range with every option (revision, sort, mod/create revision
//! filters, limit, keys only, count only).

use std::cmp::Ordering;

use super::cow_map::CowMap;
use super::{key_range, visible_at, KeyRange, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{range_request, RangeRequest, RangeResponse};
use crate::pb::mvccpb::KeyValue;

/// The keys of `keys` inside `range`, in key order (no copies).
pub(crate) fn keys_in<'s>(
    keys: &'s CowMap<super::History>,
    range: &KeyRange<'s>,
) -> Box<dyn Iterator<Item = (&'s [u8], &'s super::History)> + 's> {
    if range.single {
        return Box::new(keys.get_key_value(range.start).into_iter());
    }
    if range.end.is_some_and(|end| end <= range.start) {
        return Box::new(std::iter::empty());
    }
    Box::new(keys.range(range.start, range.end))
}

impl Mvcc {
    /// A Range request (revision, sort, filters, limit, keys/count only). The caller sets
    /// the header.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.range_at_latest(request, self.current_revision)
    }

    /// Live keys in a range at `revision`, counted without copying keys or values.
    fn count_live(&self, range: &KeyRange<'_>, revision: i64) -> i64 {
        keys_in(&self.keys, range).filter(|(_, records)| visible_at(records, revision).is_some()).count() as i64
    }

    pub(crate) fn range_at_latest(&self, request: &RangeRequest, latest: i64) -> Result<RangeResponse, EtcdError> {
        let revision = if request.revision <= 0 { latest } else { self.check_read_revision(request.revision)? };
        let range = key_range(&request.key, &request.range_end);
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        if request.count_only && !filtered {
            return Ok(RangeResponse { header: None, kvs: Vec::new(), more: false, count: self.count_live(&range, revision) });
        }
        let target = range_request::SortTarget::try_from(request.sort_target).unwrap_or(range_request::SortTarget::Key);
        let mut order = range_request::SortOrder::try_from(request.sort_order).unwrap_or(range_request::SortOrder::None);
        if target != range_request::SortTarget::Key && order == range_request::SortOrder::None {
            order = range_request::SortOrder::Ascend;
        }
        // The common shape — key order, a limit, no filters (etcdctl's paging, a prefix
        // read of a big store): count without copying, copy only what is returned.
        let key_order = target == range_request::SortTarget::Key && order != range_request::SortOrder::Descend;
        if !filtered && !request.count_only && request.limit > 0 && key_order {
            let count = self.count_live(&range, revision);
            let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
            let kvs: Vec<KeyValue> = keys_in(&self.keys, &range)
                .filter_map(|(key, records)| visible_at(records, revision).map(|r| r.to_key_value_shaped(key, !request.keys_only)))
                .take(limit)
                .collect();
            let more = count > kvs.len() as i64;
            return Ok(RangeResponse { header: None, kvs, more, count });
        }
        let mut kvs = self.collect(&range, revision);
        let count = kvs.len() as i64;
        if request.count_only {
            return Ok(RangeResponse { header: None, kvs: Vec::new(), more: false, count });
        }
        kvs.retain(|kv| {
            (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
                && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
        });
        if order != range_request::SortOrder::None {
            let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
                match target {
                    range_request::SortTarget::Key => a.key.cmp(&b.key),
                    range_request::SortTarget::Version => a.version.cmp(&b.version),
                    range_request::SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    range_request::SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    range_request::SortTarget::Value => a.value.cmp(&b.value),
                }
            };
            if order == range_request::SortOrder::Descend {
                kvs.sort_by(|a, b| by(b, a));
            } else {
                kvs.sort_by(by);
            }
        }
        let mut more = false;
        if request.limit > 0 && kvs.len() as i64 > request.limit {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { header: None, kvs, more, count })
    }
}
