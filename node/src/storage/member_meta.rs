//! Who this member is (cluster id, member id, first voters), written once when the data
//! dir is created and checked at every start.

use serde::{Deserialize, Serialize};

use crate::env::{Disk, DiskError};

const META_PATH: &str = "meta";

/// Identity of a member, fixed when its data dir is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Member ids of the cluster's first voters.
    pub initial_voters: Vec<u64>,
}

impl MemberMeta {
    /// Reads the metadata, or `None` for a data dir that was never initialised.
    pub fn load(disk: &dyn Disk) -> Result<Option<MemberMeta>, DiskError> {
        match disk.read(META_PATH) {
            Ok(bytes) => {
                let meta = bincode::deserialize(&bytes).map_err(|e| DiskError::Corrupt {
                    path: META_PATH.to_string(),
                    detail: e.to_string(),
                })?;
                Ok(Some(meta))
            }
            Err(DiskError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the metadata durably.
    pub fn save(&self, disk: &dyn Disk) -> Result<(), DiskError> {
        let temp = format!("{META_PATH}.tmp");
        let bytes = bincode::serialize(self).expect("member meta encodes");
        disk.create(&temp)?;
        disk.append(&temp, &bytes)?;
        disk.sync(&temp)?;
        disk.rename(&temp, META_PATH)
    }
}

