//! detcd's deterministic simulator: runs the real member code (`detcd-node`) on madsim
//! with simulated disks, network and clocks, injects faults from a seed, records every
//! client operation and checks linearizability, durability, raft invariants and
//! convergence.
//!
//! The pure parts (scenarios, histories, checkers, reports) build everywhere; the parts
//! that need the simulated runtime build only with `--cfg madsim` (`cargo sim ...`).

pub mod alarm_checker;
pub mod auth_checker;
pub mod checker;
pub mod history;
pub mod jepsen_log;
pub mod kv_model;
pub mod lease_checker;
pub mod lease_history;
pub mod report;
pub mod scenario;
pub mod synthetic;
pub mod watch_checker;
pub mod watch_history;

#[cfg(madsim)]
pub mod auth_workload;
#[cfg(madsim)]
pub mod clock;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod crash_sweep;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod lease_workload;
#[cfg(madsim)]
pub mod liveness;
#[cfg(madsim)]
pub mod lock_workload;
#[cfg(madsim)]
pub mod maintenance_workload;
#[cfg(madsim)]
pub mod membership_workload;
#[cfg(madsim)]
pub mod net;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod watch_workload;
#[cfg(madsim)]
pub mod workload;
#[cfg(madsim)]
pub mod world;
#[cfg(madsim)]
pub mod worker;
