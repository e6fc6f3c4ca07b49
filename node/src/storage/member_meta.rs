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

/// The first bytes of the metadata file since it carries a CRC (older files are the bare
/// encoding, still read).
const META_MAGIC: &[u8; 8] = b"detcdmd1";

impl MemberMeta {
    /// Reads the metadata, or `None` for a data dir that was never initialised. A file
    /// whose CRC does not check out is `Corrupt`: a flipped voter id must never become
    /// the member's configuration (the simulator's flipped reads found that it could).
    pub fn load(disk: &dyn Disk) -> Result<Option<MemberMeta>, DiskError> {
        let corrupt = |detail: String| DiskError::Corrupt { path: META_PATH.to_string(), detail };
        match disk.read(META_PATH) {
            Ok(bytes) => {
                let body = match bytes.strip_prefix(META_MAGIC.as_slice()) {
                    Some(rest) if rest.len() >= 4 => {
                        let (body, crc) = rest.split_at(rest.len() - 4);
                        if crc32fast::hash(body).to_le_bytes() != crc {
                            return Err(corrupt("member metadata fails its CRC".into()));
                        }
                        body
                    }
                    Some(_) => return Err(corrupt("member metadata is truncated".into())),
                    None => bytes.as_slice(),
                };
                let meta: MemberMeta = bincode::deserialize(body).map_err(|e| corrupt(e.to_string()))?;
                // The whole file is the encoding, nothing more (an old file whose magic
                // was damaged must not pass for a shorter one).
                if bincode::serialized_size(&meta).ok() != Some(body.len() as u64) {
                    return Err(corrupt("member metadata has bytes its encoding does not account for".into()));
                }
                Ok(Some(meta))
            }
            Err(DiskError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the metadata durably, with its CRC.
    pub fn save(&self, disk: &dyn Disk) -> Result<(), DiskError> {
        let temp = format!("{META_PATH}.tmp");
        let body = bincode::serialize(self).expect("member meta encodes");
        let mut bytes = META_MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        disk.create(&temp)?;
        disk.append(&temp, &bytes)?;
        disk.sync(&temp)?;
        disk.rename(&temp, META_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem_disk::MemDisk;

    #[test]
    fn a_flipped_byte_is_refused_and_an_old_file_without_crc_still_reads() {
        let disk = MemDisk::new();
        let meta = MemberMeta { cluster_id: 7, member_id: 2, initial_voters: vec![1, 2, 3] };
        meta.save(&disk).expect("save");
        assert_eq!(MemberMeta::load(&disk).expect("load"), Some(meta.clone()));
        for offset in 0..disk.file_len(META_PATH).expect("written") {
            disk.corrupt_byte(META_PATH, offset);
            assert!(!matches!(MemberMeta::load(&disk), Ok(Some(ref m)) if *m != meta), "byte {offset} flipped went unnoticed");
            disk.corrupt_byte(META_PATH, offset);
        }
        let legacy = MemDisk::new();
        legacy.create(META_PATH).expect("create");
        legacy.append(META_PATH, &bincode::serialize(&meta).expect("encode")).expect("append");
        assert_eq!(MemberMeta::load(&legacy).expect("load"), Some(meta));
    }
}
