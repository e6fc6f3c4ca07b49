//! Everything the member keeps on disk, and the raft `Storage` built from it:
//!
//! - [`wal`]: the write-ahead log (entries, hard states, snapshot marks);
//! - [`snapshot_files`]: snapshot files on the data disk;
//! - [`member_meta`]: the member's identity;
//! - [`raft_storage`]: the `raft` crate's view of the log and the latest snapshot;
//! - [`client_snapshot`]: the snapshot file people save and restore (`etcdctl snapshot
//!   save`, `detcd snapshot restore`).
//!
//! The crash-ordering rules that tie them together (snapshot file before WAL mark,
//! WAL mark before segment release, purge last) live in `consensus::snapshotter`.

pub mod bbolt;
pub mod client_snapshot;
pub mod etcd_snapshot;
pub mod member_meta;
pub mod raft_log;
pub mod raft_storage;
pub mod snapshot_files;
pub mod wal;

pub use member_meta::MemberMeta;
pub use raft_storage::NodeStorage;
pub use snapshot_files::{LoadedSnapshot, SnapshotData, SnapshotStore, Writer as SnapshotWriter};
