//! A member's simulated clock: virtual time with per-member offset, drift and forward
//! jumps. Drift also stretches the member's timers, so a fast clock ticks raft faster.

use std::sync::Mutex;
use std::time::Duration;

use detcd_node::env::{BoxFuture, Clock};

#[derive(Debug, Default)]
struct Skew {
    offset_ms: u64,
    drift_ppm: i64,
    last_ms: u64,
}

/// See the module documentation.
pub struct SimClock {
    origin: tokio::time::Instant,
    skew: Mutex<Skew>,
}

impl SimClock {
    pub fn new() -> Self {
        Self { origin: tokio::time::Instant::now(), skew: Mutex::new(Skew::default()) }
    }

    /// Jumps the clock forward and sets its drift (parts per million; ±).
    pub fn skew(&self, jump_ms: u64, drift_ppm: i64) {
        let mut skew = self.skew.lock().expect("clock lock");
        skew.offset_ms += jump_ms;
        skew.drift_ppm = drift_ppm.clamp(-500_000, 500_000);
    }

    /// Stops drifting (the offset stays: a monotonic clock never goes back).
    pub fn stop_drift(&self) {
        self.skew.lock().expect("clock lock").drift_ppm = 0;
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = self.origin.elapsed().as_millis() as i128;
        let mut skew = self.skew.lock().expect("clock lock");
        let drifted = elapsed_ms * (1_000_000 + i128::from(skew.drift_ppm)) / 1_000_000;
        let now = (drifted.max(0) as u64).saturating_add(skew.offset_ms).max(skew.last_ms);
        skew.last_ms = now;
        now
    }

    fn sleep_ms(&self, ms: u64) -> BoxFuture {
        let drift_ppm = self.skew.lock().expect("clock lock").drift_ppm;
        let real_ms = (u128::from(ms) * 1_000_000 / (1_000_000 + drift_ppm) as u128).max(1) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(real_ms)))
    }
}
