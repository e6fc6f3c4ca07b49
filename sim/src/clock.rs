//! A member's simulated clock: virtual time with per-member offset, drift and forward
//! jumps. Drift also stretches the member's timers, so a fast clock ticks raft faster.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use detcd_node::env::{BoxFuture, Clock};

/// The clock reads `base_ms + (elapsed - base_elapsed_ms) × (1 + drift)`: drift acts
/// only from the moment it was set, so changing or stopping it never moves the clock by
/// itself (the only jumps are the explicit ones).
#[derive(Debug, Default)]
struct Skew {
    base_ms: u64,
    base_elapsed_ms: u64,
    drift_ppm: i64,
    last_ms: u64,
}

impl Skew {
    fn read(&self, elapsed_ms: u64) -> u64 {
        let since = i128::from(elapsed_ms.saturating_sub(self.base_elapsed_ms));
        let drifted = since * (1_000_000 + i128::from(self.drift_ppm)) / 1_000_000;
        self.base_ms.saturating_add(drifted.max(0) as u64).max(self.last_ms)
    }

    /// Folds the time read so far into the base, so a new drift starts from now.
    fn rebase(&mut self, elapsed_ms: u64) {
        self.base_ms = self.read(elapsed_ms);
        self.base_elapsed_ms = elapsed_ms;
        self.last_ms = self.base_ms;
    }
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
        let elapsed_ms = self.elapsed_ms();
        let mut skew = self.skew.lock().expect("clock lock");
        skew.rebase(elapsed_ms);
        skew.base_ms += jump_ms;
        skew.last_ms = skew.base_ms;
        skew.drift_ppm = drift_ppm.clamp(-500_000, 500_000);
    }

    /// Stops drifting (what drift and jumps added stays: a monotonic clock never goes
    /// back, and stopping the drift does not move it).
    pub fn stop_drift(&self) {
        let elapsed_ms = self.elapsed_ms();
        let mut skew = self.skew.lock().expect("clock lock");
        skew.rebase(elapsed_ms);
        skew.drift_ppm = 0;
    }

    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed_ms = self.elapsed_ms();
        let mut skew = self.skew.lock().expect("clock lock");
        let now = skew.read(elapsed_ms);
        skew.last_ms = now;
        now
    }

    fn sleep_ms(&self, ms: u64) -> BoxFuture {
        let drift_ppm = self.skew.lock().expect("clock lock").drift_ppm;
        let real_ms = (u128::from(ms) * 1_000_000 / (1_000_000 + drift_ppm) as u128).max(1) as u64;
        Box::pin(SleepRegisteredOnce { sleep: Box::pin(tokio::time::sleep(Duration::from_millis(real_ms))), waker: None })
    }
}

/// A sleep that hands its timer to madsim once per waker. madsim's `Sleep` adds a timer
/// at every poll while it is pending, and a member's loop polls its tick and progress
/// sleeps at every turn: the timer heap grew by two entries per turn, each pushed, then
/// expired as a wake of a task already woken (~7% of a heavy-load run's CPU).
struct SleepRegisteredOnce {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The waker the timer wakes, once one was handed over.
    waker: Option<Waker>,
}

impl Future for SleepRegisteredOnce {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            return if this.sleep.is_elapsed() { Poll::Ready(()) } else { Poll::Pending };
        }
        let poll = this.sleep.as_mut().poll(cx);
        if poll.is_pending() {
            this.waker = Some(cx.waker().clone());
        }
        poll
    }
}
