//! The daemon's decode workers: a crossbeam-channel thread pool, shared by every stream and
//! `load` request, whose size the tuner changes at run time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::panic_message;

type Job = Box<dyn FnOnce() + Send>;

struct Shared {
    rx: Receiver<Job>,
    /// Workers wanted; a worker above it exits after its current job.
    target: AtomicUsize,
    live: AtomicUsize,
    /// Nanoseconds spent running jobs, for the busy share.
    busy_ns: AtomicU64,
    spawned: AtomicUsize,
    panicked: AtomicU64,
}

#[derive(Clone)]
pub struct Pool {
    tx: Sender<Job>,
    shared: Arc<Shared>,
}

/// How often an idle worker checks whether it should retire.
const IDLE_CHECK: Duration = Duration::from_millis(100);

impl Pool {
    pub fn new(size: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let pool = Self {
            tx,
            shared: Arc::new(Shared {
                rx,
                target: AtomicUsize::new(0),
                live: AtomicUsize::new(0),
                busy_ns: AtomicU64::new(0),
                spawned: AtomicUsize::new(0),
                panicked: AtomicU64::new(0),
            }),
        };
        pool.resize(size);
        pool
    }

    /// Workers wanted now.
    pub fn size(&self) -> usize {
        self.shared.target.load(Ordering::SeqCst)
    }

    /// Grow at once, or shrink as busy workers finish their current job.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        self.shared.target.store(size, Ordering::SeqCst);
        while self.shared.live.load(Ordering::SeqCst) < size {
            self.shared.live.fetch_add(1, Ordering::SeqCst);
            let shared = Arc::clone(&self.shared);
            let n = shared.spawned.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("decode-{n}"))
                .spawn(move || worker(&shared));
            if let Err(e) = spawned {
                self.shared.live.fetch_sub(1, Ordering::SeqCst);
                log::error!("cannot start decode worker: {e}");
                return;
            }
        }
    }

    /// Total time workers have spent running jobs.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.shared.busy_ns.load(Ordering::Relaxed))
    }

    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        // The pool holds a receiver itself, so the channel cannot be closed.
        let _ = self.tx.send(Box::new(job));
    }

    /// Runs `job` on a worker and hands `deliver` its result, or the panic it raised, so a
    /// request is answered whatever happens to the job.
    pub fn run<R: 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
        deliver: impl FnOnce(Result<R, JobPanicked>) + Send + 'static,
    ) {
        self.submit(move || {
            let result = catch_unwind(AssertUnwindSafe(job))
                .map_err(|payload| JobPanicked(panic_message(payload.as_ref())));
            deliver(result);
        });
    }

    /// Jobs that panicked since the pool started (each was answered with an error).
    pub fn panicked(&self) -> u64 {
        self.shared.panicked.load(Ordering::Relaxed)
    }
}

/// A job panicked; the message is the panic's.
#[derive(Debug, thiserror::Error)]
#[error("a worker panicked: {0}")]
pub struct JobPanicked(pub String);

fn worker(shared: &Shared) {
    loop {
        // Retire when the pool shrank: compare-and-swap so that exactly the surplus leaves.
        let live = shared.live.load(Ordering::SeqCst);
        if live > shared.target.load(Ordering::SeqCst)
            && shared
                .live
                .compare_exchange(live, live - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return;
        }
        match shared.rx.recv_timeout(IDLE_CHECK) {
            Ok(job) => {
                let started = Instant::now();
                // A panicking job must not take its worker with it: the pool would shrink
                // below its size with every bad request.
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    shared.panicked.fetch_add(1, Ordering::Relaxed);
                }
                let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                shared.busy_ns.fetch_add(ns, Ordering::Relaxed);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_both_ways_and_runs_every_job() {
        let pool = Pool::new(1);
        let done = Arc::new(AtomicUsize::new(0));
        pool.resize(3);
        for _ in 0..50 {
            let done = Arc::clone(&done);
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(1));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        pool.resize(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (done.load(Ordering::SeqCst) < 50 || pool.shared.live.load(Ordering::SeqCst) > 1)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert_eq!(pool.shared.live.load(Ordering::SeqCst), 1);
        assert!(pool.busy() >= Duration::from_millis(50));
    }
}
