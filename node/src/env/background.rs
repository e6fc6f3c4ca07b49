//! Background priority for the worker's jobs (production only).
//!
//! Why it exists: a member's jobs — encoding and writing a snapshot of a store with long
//! histories (hundreds of megabytes), hashing it, preparing a spare WAL segment, paced
//! removals — are CPU the member can take later; its loop and its connections' tasks
//! cannot. On a machine with few cores they competed as equals: three members putting
//! at 64 clients over keys with ~90 revisions each answered with a p99 of 16-27 ms
//! while their snapshots ran, against ~5 ms with snapshots off (2026-11-29). A job's
//! thread runs at a higher nice value (`WORKER_JOB_NICE`) while the job runs, so the
//! kernel gives the loop its CPU first and the job the rest.
//!
//! Linux's nice values are per thread (`setpriority(PRIO_PROCESS, tid)`). Raising one is
//! always allowed; lowering it back needs `CAP_SYS_NICE`, so without it the pool's thread
//! stays nice until tokio retires it (10 s idle) — only the pool's other blocking work
//! (a large range's encoding, bcrypt) then runs nice too, which is background work as
//! well.

/// The nice value a worker job's thread runs at (0 is the default, 19 the lowest
/// priority).
pub const WORKER_JOB_NICE: i32 = 10;

/// While alive, the calling thread runs at [`WORKER_JOB_NICE`] (or its own value if
/// that is higher); dropped, it asks for the thread's earlier value back.
pub struct BackgroundPriority {
    thread_id: libc::id_t,
    earlier_nice: Option<i32>,
}

impl BackgroundPriority {
    pub fn enter() -> Self {
        // SAFETY: gettid has no preconditions and touches no memory of ours.
        let thread_id = unsafe { libc::gettid() } as libc::id_t;
        let earlier_nice = thread_nice(thread_id);
        if earlier_nice.is_some_and(|nice| nice < WORKER_JOB_NICE) {
            set_thread_nice(thread_id, WORKER_JOB_NICE);
        }
        Self { thread_id, earlier_nice }
    }
}

impl Drop for BackgroundPriority {
    fn drop(&mut self) {
        if let Some(earlier) = self.earlier_nice.filter(|nice| *nice < WORKER_JOB_NICE) {
            // Fails without CAP_SYS_NICE (see the module documentation): then it stays.
            set_thread_nice(self.thread_id, earlier);
        }
    }
}

fn thread_nice(thread_id: libc::id_t) -> Option<i32> {
    // SAFETY: getpriority reads the scheduler's value for a thread id; -1 is both an
    // error and a valid nice value, told apart by errno, which is cleared first.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread_id);
        (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
    }
}

fn set_thread_nice(thread_id: libc::id_t, nice: i32) {
    // SAFETY: setpriority changes the scheduler's value for this thread only (Linux: a
    // thread id with PRIO_PROCESS); it touches no memory of ours. A refusal is ignored.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread_id, nice) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_nice_and_the_thread_gets_its_value_back_when_allowed() {
        std::thread::spawn(|| {
            // SAFETY: as above.
            let thread_id = unsafe { libc::gettid() } as libc::id_t;
            let before = thread_nice(thread_id).expect("own nice value");
            {
                let _background = BackgroundPriority::enter();
                assert_eq!(thread_nice(thread_id), Some(before.max(WORKER_JOB_NICE)));
            }
            let after = thread_nice(thread_id).expect("own nice value");
            // Lowering it back needs CAP_SYS_NICE: either it is back, or it stayed nice.
            assert!(after == before || after == before.max(WORKER_JOB_NICE), "nice {after}, was {before}");
        })
        .join()
        .expect("thread ran");
    }
}
