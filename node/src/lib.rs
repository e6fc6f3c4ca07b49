//! detcd's member: an etcd v3 compatible key-value server built on raft, a WAL and an
//! MVCC store, reaching the outside world only through the [`env`] seam so that the same
//! code runs in production and, deterministically, in the simulator.
//!
//! See ARCHITECTURE.md at the repository root for the map of modules and invariants.

pub mod apply;
pub mod auth;
pub mod consensus;
pub mod digest;
pub mod env;
pub mod errors;
pub mod ids;
pub mod mvcc;
pub mod recipes;
pub mod server;
pub mod storage;
pub mod validate;
pub mod watch;

#[cfg(not(madsim))]
pub mod config;
#[cfg(not(madsim))]
pub mod grpc;
#[cfg(not(madsim))]
pub mod logging;
#[cfg(not(madsim))]
pub mod tls;
#[cfg(not(madsim))]
pub mod snapshot_cli;

/// Code generated from etcd's wire schema (`proto/`).
pub mod pb {
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
        #[cfg(not(madsim))]
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
        #[cfg(not(madsim))]
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
        #[cfg(not(madsim))]
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
    pub mod detcdpb {
        include!(concat!(env!("OUT_DIR"), "/detcdpb.rs"));
    }
    pub mod v3electionpb {
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
        #[cfg(not(madsim))]
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
    }
    pub mod v3lockpb {
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
        #[cfg(not(madsim))]
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
    }
}

pub use crate::apply::{Request, Response, StateMachine};
pub use crate::consensus::{FatalError, NodeConfig, NodeCore, NodeStatus};
pub use crate::errors::EtcdError;
pub use crate::server::{Node, NodeHandle, PeerInbox, WatchRequests, WatchStream};
