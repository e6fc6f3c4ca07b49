//! [`SimWorker`]: the simulated twin of the member's blocking pool (`env::Worker`).
//!
//! A job (encoding and writing a snapshot, hashing a frozen store, a client snapshot)
//! starts only after a seeded, simulated delay, as a real one takes time on a real disk:
//! meanwhile the member's loop goes on applying, receives snapshots from its leader,
//! crashes or loses power — the interleavings that running snapshots off the loop
//! created, and that the snapshot ordering rules must survive. The job is a task of the
//! member's simulated node, so a crash kills it half-way like a real process's thread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use detcd_node::env::Worker;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::world::World;

/// The longest simulated time a job waits before it runs, beyond the scenario's floor
/// (`[node] worker_job_delay_ms_min`).
pub const JOB_DELAY_MS_MAX: u64 = 400;

/// See the module documentation.
pub struct SimWorker {
    rng: Mutex<ChaCha8Rng>,
    world: Arc<World>,
    /// Every job waits at least this long (a slow disk or a large store).
    delay_ms_min: u64,
}

impl SimWorker {
    pub fn new(seed: u64, world: Arc<World>, delay_ms_min: u64) -> Self {
        Self {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x776f_726b_6572)),
            world,
            delay_ms_min,
        }
    }
}

impl Worker for SimWorker {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        let delay_ms = self
            .rng
            .lock()
            .expect("worker rng")
            .gen_range(self.delay_ms_min..=self.delay_ms_min.saturating_add(JOB_DELAY_MS_MAX));
        let world = self.world.clone();
        world.count("background job: started");
        drop(madsim::task::spawn(async move {
            madsim::time::sleep(Duration::from_millis(delay_ms)).await;
            job();
            world.count("background job: finished");
        }));
    }
}
