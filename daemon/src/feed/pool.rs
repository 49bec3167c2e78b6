//! The daemon's decode workers: a crossbeam-channel thread pool, shared by every stream and
//! `load` request, whose size the tuner changes at run time.
//!
//! Every request is answered (see Note [Resource limits]): a job that panics is answered
//! with the panic and its worker carries on; a job run with [`Pool::run`] that passes the
//! item deadline is answered with [`JobFailure::TimedOut`], its worker is written off (a
//! thread cannot be killed; it exits when the job returns) and a fresh worker takes its
//! place, so the pool never shrinks because of a bad input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{panic_message, DecodeError};

/// Called at most once, by whoever comes first: the job's worker or the watchdog.
type Answer = Box<dyn FnOnce() + Send>;

struct Job {
    run: Box<dyn FnOnce() + Send>,
    /// Answers the job's requester with a timeout; `None` for jobs without a deadline.
    abandon: Option<Answer>,
}

/// What one worker is doing, for the watchdog.
#[derive(Default)]
struct WorkerState {
    current: Mutex<Option<Running>>,
    /// Set by the watchdog: the worker was replaced and leaves after its job.
    written_off: AtomicBool,
}

struct Running {
    started: Instant,
    abandon: Option<Answer>,
}

struct Shared {
    rx: Receiver<Job>,
    /// Workers wanted; a worker above it exits after its current job.
    target: AtomicUsize,
    live: AtomicUsize,
    /// Nanoseconds spent running jobs, for the busy share.
    busy_ns: AtomicU64,
    spawned: AtomicUsize,
    panicked: AtomicU64,
    abandoned: AtomicU64,
    /// Longest a [`Pool::run`] job may take.
    deadline: Duration,
    workers: Mutex<Vec<Arc<WorkerState>>>,
}

#[derive(Clone)]
pub struct Pool {
    tx: Sender<Job>,
    shared: Arc<Shared>,
}

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    #[error("a worker panicked: {0}")]
    Panicked(String),
    #[error("abandoned after {0:?} (the item deadline); its worker was replaced")]
    TimedOut(Duration),
    #[error("cannot start a thread for it: {0}")]
    NoThread(String),
}

impl JobFailure {
    /// The failure as the error of the item at `path`.
    pub fn for_item(self, path: &std::path::Path) -> DecodeError {
        match self {
            Self::Panicked(message) => DecodeError::Panic {
                path: path.into(),
                message,
            },
            Self::NoThread(reason) => DecodeError::Io {
                path: path.into(),
                source: std::io::Error::other(format!(
                    "cannot start a thread to decode it: {reason}"
                )),
            },
            Self::TimedOut(after) => DecodeError::TimedOut {
                path: path.into(),
                seconds: after.as_secs_f64(),
            },
        }
    }
}

/// Runs `job` on a thread of its own and waits for it at most `deadline`. A job still
/// running then is abandoned, as a pool job past the item deadline is: its thread is left
/// to finish or stay stuck, detached, and the caller goes on with `TimedOut`. A panic is
/// caught. For work outside the pool that owes the same guarantee as its items (labeling's
/// decodes), so that one pathological file cannot hold a run for good.
pub fn run_within<R: Send + 'static>(
    deadline: Duration,
    job: impl FnOnce() -> R + Send + 'static,
) -> Result<R, JobFailure> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("deadline-job".into())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(job))
                .map_err(|payload| JobFailure::Panicked(panic_message(&*payload)));
            let _ = tx.send(result);
        })
        .map_err(|e| JobFailure::NoThread(e.to_string()))?;
    match rx.recv_timeout(deadline) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err(JobFailure::TimedOut(deadline)),
        Err(RecvTimeoutError::Disconnected) => Err(JobFailure::Panicked(
            "its thread ended without a result".into(),
        )),
    }
}

/// How often an idle worker checks whether it should retire.
const IDLE_CHECK: Duration = Duration::from_millis(100);

/// Default item deadline: a three-hour MP3 decodes in about a minute on one core, so five
/// minutes only catches decodes that are stuck or pathological.
pub const DEFAULT_ITEM_DEADLINE: Duration = Duration::from_secs(300);

impl Pool {
    pub fn new(size: usize) -> Self {
        Self::with_deadline(size, DEFAULT_ITEM_DEADLINE)
    }

    pub fn with_deadline(size: usize, deadline: Duration) -> Self {
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
                abandoned: AtomicU64::new(0),
                deadline,
                workers: Mutex::new(Vec::new()),
            }),
        };
        pool.resize(size);
        let shared = Arc::clone(&pool.shared);
        let watchdog = std::thread::Builder::new()
            .name("pool-watchdog".into())
            .spawn(move || watch(&shared));
        if let Err(e) = watchdog {
            log::error!("cannot start the item-deadline watchdog: {e}");
        }
        pool
    }

    /// How long one job may run before it is abandoned.
    pub fn deadline(&self) -> Duration {
        self.shared.deadline
    }

    /// Workers wanted now.
    pub fn size(&self) -> usize {
        self.shared.target.load(Ordering::SeqCst)
    }

    /// Grow at once, or shrink as busy workers finish their current job.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        self.shared.target.store(size, Ordering::SeqCst);
        spawn_missing(&self.shared);
    }

    /// Total time workers have spent running jobs.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.shared.busy_ns.load(Ordering::Relaxed))
    }

    /// Runs `job` on a worker, without a deadline; a panic is counted and swallowed.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        // The pool holds a receiver itself, so the channel cannot be closed.
        let _ = self.tx.send(Job {
            run: Box::new(job),
            abandon: None,
        });
    }

    /// Runs `job` on a worker and hands `deliver` its result, the panic it raised, or a
    /// timeout at the item deadline: a request is answered whatever happens to the job.
    pub fn run<R: 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
        deliver: impl FnOnce(Result<R, JobFailure>) + Send + 'static,
    ) {
        type Deliver<R> = Box<dyn FnOnce(Result<R, JobFailure>) + Send>;
        let answer: Arc<Mutex<Option<Deliver<R>>>> = Arc::new(Mutex::new(Some(Box::new(deliver))));
        let take = |answer: &Mutex<Option<Deliver<R>>>| {
            answer.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let deadline = self.shared.deadline;
        let on_timeout = Arc::clone(&answer);
        let abandon: Answer = Box::new(move || {
            if let Some(deliver) = take(&on_timeout) {
                deliver(Err(JobFailure::TimedOut(deadline)));
            }
        });
        let shared = Arc::clone(&self.shared);
        let run = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(job))
                .map_err(|payload| JobFailure::Panicked(panic_message(payload.as_ref())));
            if result.is_err() {
                // Counted here: the worker's own catch only sees panics of `deliver`.
                shared.panicked.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(deliver) = take(&answer) {
                deliver(result);
            }
        });
        let _ = self.tx.send(Job {
            run,
            abandon: Some(abandon),
        });
    }

    /// Jobs that panicked since the pool started (each was answered with an error).
    pub fn panicked(&self) -> u64 {
        self.shared.panicked.load(Ordering::Relaxed)
    }

    /// Jobs abandoned at the item deadline (each was answered and its worker replaced).
    pub fn abandoned(&self) -> u64 {
        self.shared.abandoned.load(Ordering::Relaxed)
    }
}

fn spawn_missing(shared: &Arc<Shared>) {
    while shared.live.load(Ordering::SeqCst) < shared.target.load(Ordering::SeqCst) {
        shared.live.fetch_add(1, Ordering::SeqCst);
        let state = Arc::new(WorkerState::default());
        let for_thread = Arc::clone(shared);
        let n = shared.spawned.fetch_add(1, Ordering::SeqCst);
        let worker_state = Arc::clone(&state);
        let spawned = std::thread::Builder::new()
            .name(format!("decode-{n}"))
            .spawn(move || worker(&for_thread, &worker_state));
        match spawned {
            Ok(_) => shared
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state),
            Err(e) => {
                shared.live.fetch_sub(1, Ordering::SeqCst);
                log::error!("cannot start decode worker: {e}");
                return;
            }
        }
    }
}

fn worker(shared: &Arc<Shared>, state: &Arc<WorkerState>) {
    let forget = || {
        let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| !Arc::ptr_eq(w, state));
    };
    loop {
        // Retire when the pool shrank: compare-and-swap so that exactly the surplus leaves.
        let live = shared.live.load(Ordering::SeqCst);
        if live > shared.target.load(Ordering::SeqCst)
            && shared
                .live
                .compare_exchange(live, live - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            forget();
            return;
        }
        match shared.rx.recv_timeout(IDLE_CHECK) {
            Ok(job) => {
                let started = Instant::now();
                *state.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
                    started,
                    abandon: job.abandon,
                });
                // A panicking job must not take its worker with it: the pool would shrink
                // below its size with every bad request.
                if catch_unwind(AssertUnwindSafe(job.run)).is_err() {
                    shared.panicked.fetch_add(1, Ordering::Relaxed);
                }
                *state.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                shared.busy_ns.fetch_add(ns, Ordering::Relaxed);
                if state.written_off.load(Ordering::SeqCst) {
                    // The watchdog already answered, uncounted us and started a replacement.
                    return;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                shared.live.fetch_sub(1, Ordering::SeqCst);
                forget();
                return;
            }
        }
    }
}

/// Abandons jobs past the deadline: answers their requester, writes their worker off and
/// starts a replacement.
fn watch(shared: &Arc<Shared>) {
    let tick = (shared.deadline / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        let mut overdue = Vec::new();
        {
            let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
            workers.retain(|w| {
                let mut current = w.current.lock().unwrap_or_else(|e| e.into_inner());
                let late = current
                    .as_ref()
                    .is_some_and(|r| r.abandon.is_some() && r.started.elapsed() > shared.deadline);
                if !late {
                    return true;
                }
                w.written_off.store(true, Ordering::SeqCst);
                if let Some(abandon) = current.as_mut().and_then(|r| r.abandon.take()) {
                    overdue.push(abandon);
                }
                false
            });
        }
        for abandon in overdue {
            shared.abandoned.fetch_add(1, Ordering::Relaxed);
            shared.live.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "a job passed the {:?} item deadline; answered it and replaced its worker",
                shared.deadline
            );
            abandon();
        }
        spawn_missing(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn run_within_answers_results_panics_and_stuck_jobs() {
        // Printing a panic's backtrace takes a while in a debug build.
        let generous = Duration::from_secs(20);
        assert_eq!(run_within(generous, || 7).ok(), Some(7));
        let panicked = run_within(generous, || -> u8 { panic!("bad header") });
        assert!(
            matches!(&panicked, Err(JobFailure::Panicked(m)) if m.contains("bad header")),
            "{panicked:?}"
        );
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        let stuck = run_within(limit, || std::thread::sleep(Duration::from_secs(30)));
        assert!(matches!(stuck, Err(JobFailure::TimedOut(d)) if d == limit));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

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
        wait_until("all jobs and the shrink", || {
            done.load(Ordering::SeqCst) == 50 && pool.shared.live.load(Ordering::SeqCst) == 1
        });
        assert!(pool.busy() >= Duration::from_millis(50));
    }

    #[test]
    fn a_panicking_job_is_answered_and_its_worker_kept() {
        let pool = Pool::new(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..3 {
            let tx = tx.clone();
            pool.run(
                || -> u32 { panic!("bad input") },
                move |r| {
                    let _ = tx.send(r.map_err(|e| e.to_string()));
                },
            );
        }
        for _ in 0..3 {
            let answer = rx.recv_timeout(Duration::from_secs(5)).expect("answered");
            assert!(answer.expect_err("panicked").contains("bad input"));
        }
        let tx2 = tx.clone();
        pool.run(
            || 7u32,
            move |r| {
                let _ = tx2.send(r.map_err(|e| e.to_string()));
            },
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("ran"), Ok(7));
        assert_eq!(pool.panicked(), 3);
        assert_eq!(pool.shared.live.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stuck_job_is_abandoned_and_its_worker_replaced() {
        let pool = Pool::with_deadline(1, Duration::from_millis(100));
        let (tx, rx) = crossbeam_channel::unbounded();
        let release = Arc::new(AtomicBool::new(false));
        let stuck = Arc::clone(&release);
        let tx1 = tx.clone();
        pool.run(
            move || {
                while !stuck.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                1u32
            },
            move |r| {
                let _ = tx1.send(r.map_err(|e| e.to_string()));
            },
        );
        let started = Instant::now();
        let answer = rx.recv_timeout(Duration::from_secs(5)).expect("answered");
        assert!(answer.expect_err("timed out").contains("deadline"));
        assert!(started.elapsed() < Duration::from_secs(2));
        // The replacement serves the next job while the stuck one still runs.
        let tx2 = tx.clone();
        pool.run(
            || 2u32,
            move |r| {
                let _ = tx2.send(r.map_err(|e| e.to_string()));
            },
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("ran"), Ok(2));
        assert_eq!(pool.abandoned(), 1);
        release.store(true, Ordering::SeqCst);
        // The stuck job's late result is dropped: its requester was already answered.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        wait_until("the written-off worker to leave", || {
            pool.shared.workers.lock().map(|w| w.len()).unwrap_or(0) == 1
        });
        assert_eq!(pool.shared.live.load(Ordering::SeqCst), 1);
    }
}
