//! etcd's `--experimental-initial-corrupt-check`: before a member serves clients, it
//! hashes its key space at its own revision (HashKV) and asks every peer, on the client
//! URL the peer published, for its hash at the same revision. A peer that answers with
//! the same compaction point and another hash means the data differ: the member refuses
//! to start ("found data inconsistency with peers"). A peer that cannot answer (down,
//! not published yet, compacted past the revision, or behind it) is skipped with a
//! warning, as etcd skips it.

use std::time::Duration;

use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::HashKvRequest;
use crate::server::NodeHandle;

/// How long one peer may take to answer.
pub const PEER_HASH_TIMEOUT_MS: u64 = 5000;

/// How long the member may take to apply what its WAL holds committed before the check.
pub const REPLAY_WAIT_MS_MAX: u64 = 30_000;

/// Ok with a summary line when no peer disagrees; the error names the peers that do.
/// First waits until the member applied every entry its disk holds committed (a member
/// replays its WAL on its loop): the hash and the peers' client URLs are then those of
/// its data, not of the snapshot it started from.
pub async fn check_with_peers(node: &NodeHandle) -> Result<String, String> {
    let committed_at_start = node.status().await.ok_or("the member stopped")?.commit_index;
    let replayed = async {
        while node.status().await.is_some_and(|s| s.applied_index < committed_at_start) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_millis(REPLAY_WAIT_MS_MAX), replayed).await.is_err() {
        return Err(format!("the member did not apply its committed entries (up to index {committed_at_start}) in time"));
    }
    let (status, members) = node.member_list().await.ok_or("the member stopped")?;
    let (revision, hash, compact_revision) = node.hash_kv(0).await.map_err(|e| e.to_string())?;
    let mut compared = 0;
    let mut differing = Vec::new();
    for member in members.iter().filter(|m| m.id != status.member_id) {
        let Some(url) = member.client_ur_ls.first().cloned() else {
            tracing::warn!("initial corruption check: peer {:016x} has not published a client URL; skipped", member.id);
            continue;
        };
        let ask = async {
            let mut client = MaintenanceClient::connect(url.clone()).await.map_err(|e| e.to_string())?;
            client.hash_kv(HashKvRequest { revision }).await.map(|r| r.into_inner()).map_err(|e| e.message().to_string())
        };
        match tokio::time::timeout(Duration::from_millis(PEER_HASH_TIMEOUT_MS), ask).await {
            Ok(Ok(answer)) if answer.compact_revision == compact_revision => {
                compared += 1;
                if answer.hash != hash {
                    differing.push(format!("{:016x} (hash {} at revision {revision})", member.id, answer.hash));
                }
            }
            Ok(Ok(answer)) => tracing::warn!(
                "initial corruption check: peer {:016x} is compacted at {}, this member at {compact_revision}; skipped",
                member.id, answer.compact_revision
            ),
            Ok(Err(error)) => tracing::warn!("initial corruption check: cannot fetch hash from peer {:016x} ({url}): {error}; skipped", member.id),
            Err(_) => tracing::warn!("initial corruption check: peer {:016x} ({url}) did not answer in time; skipped", member.id),
        }
    }
    if !differing.is_empty() {
        return Err(format!(
            "found data inconsistency with peers: local hash {hash} at revision {revision} (compacted at {compact_revision}), peers {}",
            differing.join(", ")
        ));
    }
    Ok(format!("initial corruption checking passed; no corruption (revision {revision}, {compared} peer(s) compared)"))
}
