//! Cluster and member ids, derived deterministically from the cluster token and the
//! member names, so every member computes the same ids without talking to the others.

use crate::consensus::fnv1a64;

/// The id of member `name` in the cluster made with `token` (never 0: raft reserves it).
pub fn member_id(token: &str, name: &str) -> u64 {
    let id = fnv1a64(format!("detcd-member/{token}/{name}").as_bytes());
    if id == 0 { 1 } else { id }
}

/// The cluster id: a digest of the token and every first member's id.
pub fn cluster_id(token: &str, member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut bytes = format!("detcd-cluster/{token}").into_bytes();
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    fnv1a64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_token_and_name_only() {
        assert_eq!(member_id("t", "a"), member_id("t", "a"));
        assert_ne!(member_id("t", "a"), member_id("t", "b"));
        assert_ne!(member_id("t", "a"), member_id("u", "a"));
        let ids = [member_id("t", "a"), member_id("t", "b")];
        assert_eq!(cluster_id("t", &ids), cluster_id("t", &[ids[1], ids[0]]));
        assert_ne!(cluster_id("t", &ids), cluster_id("u", &ids));
    }
}
