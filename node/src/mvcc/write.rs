//! The write path: puts and deletes at a given revision, each change reported as an
//! etcd watch event (`mvccpb.Event`) for whoever consumes the state machine's output.

use super::{key_range, live_record_digest, record_bytes, KeyRecord, Mvcc};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};

/// The sub-revision of the next change: the changes of one write request share
/// `events`, in the order they are made.
fn sub_revision(events: &[Event]) -> u32 {
    u32::try_from(events.len()).expect("a request makes fewer than 2^32 changes")
}

impl Mvcc {
    /// Writes one record for `key` at `write_revision`, returning the previous live value.
    fn write_record(&mut self, key: &[u8], write_revision: i64, record: KeyRecord) -> Option<KeyValue> {
        self.write_record_made(key, write_revision, |_| record)
    }

    /// [`Mvcc::write_record`] of the record `make` builds from the key's records (none
    /// for a new key): the key is looked up once.
    fn write_record_made(&mut self, key: &[u8], write_revision: i64, make: impl FnOnce(&[KeyRecord]) -> KeyRecord) -> Option<KeyValue> {
        // Most keys keep one record: room for exactly one (an empty Vec's first push would
        // make room for four, 192 bytes wasted per key).
        let records = std::sync::Arc::make_mut(self.keys.get_or_insert_with(key, || std::sync::Arc::new(Vec::with_capacity(1))));
        let record = make(records);
        let previous = records.last().filter(|r| !r.tombstone).map(|p| p.to_key_value(key));
        if let Some(live) = records.last().filter(|r| !r.tombstone) {
            self.live_digest ^= live_record_digest(key, live);
            self.live_keys -= 1;
        }
        if !record.tombstone {
            self.live_digest ^= live_record_digest(key, &record);
            self.live_keys += 1;
        }
        let added = record_bytes(key, &record);
        match records.last_mut() {
            // A txn writes a key at most once (validation refuses more), but stay exact.
            Some(last) if last.mod_revision == write_revision => {
                let replaced = record_bytes(key, last);
                *last = record;
                self.size_bytes = self.size_bytes - replaced + added;
            }
            _ => {
                records.push(record);
                self.size_bytes += added;
            }
        }
        previous
    }

    /// What a put needs from the current state, checked before anything is written:
    /// `ignore_value`/`ignore_lease` need a live key; a lease must exist.
    pub(crate) fn check_put(&self, request: &PutRequest) -> Result<(), EtcdError> {
        // Only these flags need the key: a plain put looks it up once, where it writes.
        let needs_live_key = request.ignore_value || request.ignore_lease;
        if needs_live_key && !self.keys.get(&request.key).and_then(|r| r.last()).is_some_and(|r| !r.tombstone) {
            return Err(EtcdError::KeyNotFound);
        }
        if !request.ignore_lease && request.lease != 0 && !self.lessor.contains(request.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    /// A put that [`Mvcc::check_put`] accepted. Cannot fail.
    pub(crate) fn put_at(&mut self, request: &PutRequest, write_revision: i64, events: &mut Vec<Event>) -> PutResponse {
        let sub = sub_revision(events);
        #[cfg(madsim)]
        let create_revision_survives_delete = self.create_revision_survives_delete;
        // What the record replaces: the previous live record's lease, and the new record.
        let mut written: Option<(Option<i64>, KeyValue)> = None;
        let prev_kv = self.write_record_made(&request.key, write_revision, |records| {
            let previous = records.last().filter(|r| !r.tombstone);
            let value = match (previous, request.ignore_value) {
                (Some(previous), true) => previous.value.clone(),
                (None, true) => panic!("put with ignore_value on a missing key passed its check"),
                (_, false) => super::stored_value(&request.value),
            };
            let lease = match (previous, request.ignore_lease) {
                (Some(previous), true) => previous.lease,
                (None, true) => panic!("put with ignore_lease on a missing key passed its check"),
                (_, false) => request.lease,
            };
            #[allow(unused_mut)]
            let (mut create_revision, version) = match previous {
                Some(p) => (p.create_revision, p.version + 1),
                None => (write_revision, 1),
            };
            #[cfg(madsim)]
            if create_revision_survives_delete && previous.is_none() {
                // The planted bug: a re-created key keeps its previous life's create revision.
                if let [.., life, tombstone] = records {
                    if tombstone.tombstone && !life.tombstone {
                        create_revision = life.create_revision;
                    }
                }
            }
            let record = KeyRecord { mod_revision: write_revision, sub, create_revision, version, lease, value, tombstone: false };
            written = Some((previous.map(|p| p.lease), record.to_key_value(&request.key)));
            record
        });
        let (previous_lease, kv) = written.expect("the record was made");
        if let Some(previous_lease) = previous_lease.filter(|l| *l != kv.lease) {
            self.lessor.detach(previous_lease, &request.key);
        }
        self.lessor.attach(kv.lease, &request.key);
        events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev_kv.clone() });
        PutResponse { header: None, prev_kv: if request.prev_kv { prev_kv } else { None } }
    }

    pub(crate) fn delete_at(
        &mut self,
        request: &DeleteRangeRequest,
        write_revision: i64,
        events: &mut Vec<Event>,
    ) -> DeleteRangeResponse {
        let live = self.collect(&key_range(&request.key, &request.range_end), write_revision);
        for kv in &live {
            let tombstone = KeyRecord {
                mod_revision: write_revision,
                sub: sub_revision(events),
                create_revision: 0,
                version: 0,
                lease: 0,
                value: super::no_value(),
                tombstone: true,
            };
            self.lessor.detach(kv.lease, &kv.key);
            self.write_record(&kv.key, write_revision, tombstone);
            let deleted = KeyValue { key: kv.key.clone(), mod_revision: write_revision, ..Default::default() };
            events.push(Event { r#type: EventType::Delete as i32, kv: Some(deleted), prev_kv: Some(kv.clone()) });
        }
        DeleteRangeResponse {
            header: None,
            deleted: live.len() as i64,
            prev_kvs: if request.prev_kv { live } else { Vec::new() },
        }
    }

    /// Applies a Put; advances the revision. Its change is appended to `events`.
    pub fn apply_put(&mut self, request: &PutRequest, events: &mut Vec<Event>) -> Result<PutResponse, EtcdError> {
        self.check_put(request)?;
        let write_revision = self.current_revision + 1;
        let response = self.put_at(request, write_revision, events);
        self.current_revision = write_revision;
        Ok(response)
    }

    /// Applies a DeleteRange; advances the revision only if something was deleted.
    pub fn apply_delete_range(&mut self, request: &DeleteRangeRequest, events: &mut Vec<Event>) -> DeleteRangeResponse {
        let write_revision = self.current_revision + 1;
        let response = self.delete_at(request, write_revision, events);
        if response.deleted > 0 {
            self.current_revision = write_revision;
        }
        response
    }

    /// [`Mvcc::apply_put`] for callers that do not consume events.
    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.apply_put(request, &mut Vec::new())
    }

    /// [`Mvcc::apply_delete_range`] for callers that do not consume events.
    pub fn delete_range(&mut self, request: &DeleteRangeRequest) -> DeleteRangeResponse {
        self.apply_delete_range(request, &mut Vec::new())
    }
}
