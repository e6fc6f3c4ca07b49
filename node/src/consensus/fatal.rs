//! Why a member cannot start or must stop. Disk failures during operation are fatal:
//! the member stops rather than acknowledge anything it could not make durable.

use crate::env::DiskError;
use crate::storage::wal::WalError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatalError {
    Disk(DiskError),
    Wal(WalError),
    Raft(String),
    Snapshot(String),
    /// The data dir belongs to another member or cluster.
    WrongDataDir(String),
    /// This member applied its own removal from the cluster.
    Removed,
}

impl std::fmt::Display for FatalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FatalError::Disk(e) => write!(f, "{e}"),
            FatalError::Wal(e) => write!(f, "{e}"),
            FatalError::Raft(e) => write!(f, "raft: {e}"),
            FatalError::Snapshot(e) => write!(f, "snapshot: {e}"),
            FatalError::WrongDataDir(e) => write!(f, "data dir: {e}"),
            FatalError::Removed => write!(f, "the member has been permanently removed from the cluster"),
        }
    }
}

impl std::error::Error for FatalError {}

impl From<DiskError> for FatalError {
    fn from(e: DiskError) -> Self {
        FatalError::Disk(e)
    }
}

impl From<WalError> for FatalError {
    fn from(e: WalError) -> Self {
        FatalError::Wal(e)
    }
}

impl From<raft::Error> for FatalError {
    fn from(e: raft::Error) -> Self {
        FatalError::Raft(e.to_string())
    }
}
