//! Sizing the daemon from the machine: cores, memory (cgroup limits included) and GPUs.
//!
//! `detect` reads the machine; `plan` turns facts into defaults and is a pure function, so
//! tests can feed it a faked small or large machine. Every default can be overridden by a
//! flag, an environment variable (see `audiodecode serve --help`) or the Python API.
//! At run time the [`Tuner`] moves the pool size and ring depths within the plan's bounds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::feed::stats::StreamStats;

/// What the machine offers this process.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub logical_cores: usize,
    pub physical_cores: usize,
    pub available_memory: u64,
    pub gpus: Vec<Gpu>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub name: String,
    pub memory: u64,
}

/// The daemon's sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Decode workers at start.
    pub workers: usize,
    /// Bounds the run-time tuner moves the pool within.
    pub min_workers: usize,
    pub max_workers: usize,
    pub cache_bytes: u64,
    /// Memory all rings together may take; a stream's depth follows from its slot size.
    pub ring_budget: u64,
    /// The GPUs the plan was made for (shown by `status`).
    pub gpus: Vec<Gpu>,
}

/// Ring depth bounds: two slots let decoding overlap training; past eight, more depth only
/// holds memory.
pub const MIN_DEPTH: u32 = 2;
pub const MAX_DEPTH: u32 = 8;
/// The depth a client-bound stream shrinks to, where its ring has the slots: a waiting
/// driver asks the client to ring once half the slots in circulation are back
/// (`slots.rs`), so four make that one system call per two batches; two would make it one
/// per batch.
pub const SETTLED_DEPTH: u32 = 4;

impl Resources {
    pub fn detect() -> Self {
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            logical_cores: logical,
            physical_cores: physical_cores().unwrap_or(logical).clamp(1, logical),
            available_memory: available_memory(),
            gpus: gpus(),
        }
    }
}

/// Defaults from the facts. With GPUs, each training rank needs about a core to drive its
/// GPU, so the workers get the rest. The pool starts at its ceiling, since a first epoch
/// is decode-bound, and the tuner shrinks it when the trainer (say, a CPU-only model that
/// needs the cores itself) is the slower side.
pub fn plan(r: &Resources) -> Plan {
    let cores = r.logical_cores.max(1);
    let max_workers = if r.gpus.is_empty() {
        cores
    } else {
        cores.saturating_sub(r.gpus.len()).max(1)
    };
    let workers = max_workers;
    Plan {
        workers,
        min_workers: 1,
        max_workers,
        // A quarter of the memory for decoded audio, a tenth for the rings: the training
        // job needs the rest.
        cache_bytes: r.available_memory / 4,
        ring_budget: (r.available_memory / 10).max(64 << 20),
        gpus: r.gpus.clone(),
    }
}

/// Ring depth for a stream whose slots take `slot_bytes`, with `streams` streams sharing
/// the budget.
pub fn ring_depth(plan: &Plan, slot_bytes: u64, streams: usize) -> u32 {
    let share = plan.ring_budget / streams.max(1) as u64;
    let fits = share / slot_bytes.max(1);
    (fits.min(u64::from(MAX_DEPTH)) as u32).max(MIN_DEPTH)
}

/// How often the tuner looks: long enough to average over a few batches, short enough to
/// react within a fraction of an epoch.
const TICK: Duration = Duration::from_millis(500);
/// A stream whose driver waited on decoding this share of the tick is starved.
const STARVED: f64 = 0.3;
/// A stream whose driver waited on the client this share of the tick is client-bound.
const CLIENT_BOUND: f64 = 0.5;

/// What the tuner decided for the next interval.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub workers: usize,
    /// Streams whose ring depth should grow (true) or shrink (false) by one slot.
    pub depth: Vec<(u32, bool)>,
}

/// Watches who waits, each stream's driver on the decoders or on the client, and moves the
/// pool size (and ring depths) within the plan's bounds.
pub struct Tuner {
    plan: Plan,
    last_tick: Instant,
    last_busy: Duration,
    busy_share: f64,
    /// Per stream: counters at the last tick, and the shares measured over it.
    last: HashMap<u32, (u64, u64)>,
    shares: HashMap<u32, (f64, f64)>,
}

impl Tuner {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            last_tick: Instant::now(),
            last_busy: Duration::ZERO,
            busy_share: 0.0,
            last: HashMap::new(),
            shares: HashMap::new(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn busy_share(&self) -> f64 {
        self.busy_share
    }

    /// Share of the last interval the stream waited for decoding (the client may starve).
    pub fn decode_wait_share(&self, stream: u32) -> f64 {
        self.shares.get(&stream).map_or(0.0, |s| s.0)
    }

    /// Share of the last interval the stream waited for the client to release a slot.
    pub fn client_wait_share(&self, stream: u32) -> f64 {
        self.shares.get(&stream).map_or(0.0, |s| s.1)
    }

    /// Called often; acts once per interval.
    pub fn tick(
        &mut self,
        streams: &[(u32, &StreamStats)],
        workers: usize,
        busy: Duration,
    ) -> Option<Decision> {
        let elapsed = self.last_tick.elapsed();
        if elapsed < TICK {
            return None;
        }
        self.last_tick = Instant::now();
        let secs = elapsed.as_secs_f64();
        let busy_delta = busy.saturating_sub(self.last_busy).as_secs_f64();
        self.last_busy = busy;
        self.busy_share = (busy_delta / (secs * workers.max(1) as f64)).min(1.0);

        let mut shares = HashMap::new();
        let mut last = HashMap::new();
        for (id, stats) in streams {
            let now = (
                stats.decode_wait_ns.load(Ordering::Relaxed),
                stats.slot_wait_ns.load(Ordering::Relaxed),
            );
            // A new stream's counters started at zero when it opened, within this interval,
            // so its shares are over its own lifetime (short epochs would look idle otherwise).
            let before = self.last.get(id).copied().unwrap_or((0, 0));
            let span = secs.min(stats.opened.elapsed().as_secs_f64()).max(1e-3);
            let share = |a: u64, b: u64| (a.saturating_sub(b) as f64 / 1e9 / span).min(1.0);
            shares.insert(*id, (share(now.0, before.0), share(now.1, before.1)));
            last.insert(*id, now);
        }
        self.last = last;
        self.shares = shares;
        Some(self.decide(workers))
    }

    fn decide(&self, workers: usize) -> Decision {
        let starved: Vec<u32> = self
            .shares
            .iter()
            .filter(|(_, s)| s.0 > STARVED)
            .map(|(id, _)| *id)
            .collect();
        let client_bound = !self.shares.is_empty()
            && self
                .shares
                .values()
                .all(|s| s.1 > CLIENT_BOUND && s.0 < STARVED);
        let mut decision = Decision {
            workers,
            depth: Vec::new(),
        };
        if !starved.is_empty() {
            if workers < self.plan.max_workers {
                decision.workers = workers + 1;
            } else {
                // No more cores to give: a deeper ring at least absorbs slow files.
                decision.depth = starved.iter().map(|id| (*id, true)).collect();
            }
        } else if client_bound {
            decision.workers = workers.saturating_sub(1).max(self.plan.min_workers);
            decision.depth = self.shares.keys().map(|id| (*id, false)).collect();
        }
        decision.depth.sort_unstable();
        decision
    }
}

fn physical_cores() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let mut package = String::new();
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("physical id") {
            package = v.trim_start_matches([' ', '\t', ':']).to_string();
        } else if let Some(v) = line.strip_prefix("core id") {
            cores.insert((
                package.clone(),
                v.trim_start_matches([' ', '\t', ':']).to_string(),
            ));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Memory available to this process: `MemAvailable`, lowered to what the cgroup (v2 or v1)
/// still allows when a container limit is set.
pub fn available_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let host = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(4 << 30, |kb| kb * 1024);
    let cgroup_room = read_u64("/sys/fs/cgroup/memory.max")
        .zip(read_u64("/sys/fs/cgroup/memory.current"))
        .or_else(|| {
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                .zip(read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        })
        .map(|(limit, used)| limit.saturating_sub(used));
    cgroup_room.map_or(host, |room| room.min(host))
}

/// GPUs through NVML, loaded at run time: no driver (or no GPU) means CPU mode, never an
/// error.
fn gpus() -> Vec<Gpu> {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let device = nvml.device_by_index(i).ok()?;
            Some(Gpu {
                name: device.name().unwrap_or_else(|_| "GPU".into()),
                memory: device.memory_info().map_or(0, |m| m.total),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(cores: usize, memory_gb: u64, gpus: usize) -> Resources {
        Resources {
            logical_cores: cores,
            physical_cores: cores / 2,
            available_memory: memory_gb << 30,
            gpus: (0..gpus)
                .map(|_| Gpu {
                    name: "H100".into(),
                    memory: 80 << 30,
                })
                .collect(),
        }
    }

    #[test]
    fn small_cpu_machine() {
        let p = plan(&machine(2, 4, 0));
        assert_eq!((p.workers, p.min_workers, p.max_workers), (2, 1, 2));
        assert_eq!(p.cache_bytes, 1 << 30);
        // 32 x 4 s x 16 kHz mono f32 = 8 MB slots: the 409 MB budget holds the maximum.
        assert_eq!(ring_depth(&p, 8 << 20, 1), MAX_DEPTH);
        // Huge slots still get double buffering.
        assert_eq!(ring_depth(&p, 1 << 30, 1), MIN_DEPTH);
    }

    #[test]
    fn large_gpu_machine() {
        let p = plan(&machine(64, 512, 8));
        assert_eq!((p.workers, p.max_workers), (56, 56));
        assert_eq!(p.cache_bytes, 128 << 30);
        // Eight ranks share the ring budget.
        assert_eq!(ring_depth(&p, 2 << 30, 8), 3);
    }

    fn stats(decode_ms: u64, slot_ms: u64) -> StreamStats {
        let s = StreamStats {
            opened: Instant::now() - TICK * 2,
            ..StreamStats::default()
        };
        s.decode_wait_ns
            .store(decode_ms * 1_000_000, Ordering::Relaxed);
        s.slot_wait_ns.store(slot_ms * 1_000_000, Ordering::Relaxed);
        s
    }

    /// Feed the tuner two ticks (the first only records counters).
    fn decide(plan: Plan, workers: usize, decode_ms: u64, slot_ms: u64) -> Decision {
        let mut tuner = Tuner::new(plan);
        tuner.last_tick -= TICK;
        let zero = stats(0, 0);
        tuner.tick(&[(1, &zero)], workers, Duration::ZERO);
        tuner.last_tick -= TICK;
        let later = stats(decode_ms, slot_ms);
        tuner
            .tick(&[(1, &later)], workers, Duration::ZERO)
            .expect("a tick")
    }

    #[test]
    fn the_tuner_grows_when_decoding_starves_and_shrinks_when_the_client_is_slow() {
        let plan = plan(&machine(8, 16, 0)); // 1..=8 workers
        assert_eq!(decide(plan.clone(), 2, 800, 0).workers, 3);
        assert_eq!(decide(plan.clone(), 2, 0, 900).workers, 1);
        let quiet = decide(plan.clone(), 2, 100, 100);
        assert_eq!(
            quiet,
            Decision {
                workers: 2,
                depth: vec![]
            }
        );
        // At the ceiling, a starved stream gets a deeper ring instead.
        assert_eq!(
            decide(plan, 8, 900, 0),
            Decision {
                workers: 8,
                depth: vec![(1, true)]
            }
        );
    }

    #[test]
    fn this_machine_is_detected() {
        let r = Resources::detect();
        assert!(r.logical_cores >= 1 && r.physical_cores >= 1);
        assert!(r.available_memory > 16 << 20);
        let p = plan(&r);
        assert!(p.min_workers <= p.workers && p.workers <= p.max_workers);
    }
}
