//! The status report: the daemon, its pool and cache, and one line per stream.

use std::sync::atomic::Ordering;

use audiodecode_protocol::{GpuStatus, StatusReport, StreamStatus};

use super::Daemon;
use crate::feed::stats::StreamStats;

impl Daemon {
    pub(super) fn status(&self) -> StatusReport {
        let mut streams: Vec<StreamStatus> = self
            .streams
            .iter()
            .map(|(&id, e)| {
                let secs = e.opened.elapsed().as_secs_f64().max(1e-9);
                let slots = e.slots.counts();
                StreamStatus {
                    stream: id,
                    batches_done: slots.announced,
                    batches_total: e.total_batches,
                    items_per_second: e.stats.items.load(Ordering::Relaxed) as f64 / secs,
                    audio_seconds_per_second: e.stats.frames.load(Ordering::Relaxed) as f64
                        / f64::from(e.ring.geometry().sample_rate)
                        / secs,
                    workers: self.pool.size() as u32,
                    ring_depth: slots.depth,
                    ring_filled: (slots.announced - slots.handed_back) as u32,
                    skipped: e.stats.skipped.load(Ordering::Relaxed),
                    damaged: e.stats.damaged.load(Ordering::Relaxed),
                    padding_share: padding_share(&e.stats),
                    decode_wait_share: self.tuner.decode_wait_share(id),
                    client_wait_share: self.tuner.client_wait_share(id),
                }
            })
            .collect();
        streams.sort_by_key(|s| s.stream);
        let cache = self.cache.stats();
        StatusReport {
            daemon_pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            clients: self.conns.len() as u32,
            streams,
            cache_bytes: cache.bytes,
            cache_capacity: cache.capacity,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            decodes: crate::feed::item::DECODES.load(Ordering::Relaxed),
            workers: self.pool.size() as u32,
            min_workers: self.tuner.plan().min_workers as u32,
            max_workers: self.tuner.plan().max_workers as u32,
            worker_busy_share: self.tuner.busy_share(),
            ring_budget_bytes: self.tuner.plan().ring_budget,
            gpus: self
                .tuner
                .plan()
                .gpus
                .iter()
                .map(|g| GpuStatus {
                    name: g.name.clone(),
                    memory_bytes: g.memory,
                })
                .collect(),
            failed_jobs: self.pool.panicked(),
            abandoned_jobs: self.pool.abandoned(),
        }
    }
}

fn padding_share(stats: &StreamStats) -> f64 {
    let padded = stats.padded_frames.load(Ordering::Relaxed);
    let real = stats.frames.load(Ordering::Relaxed);
    if padded == 0 {
        0.0
    } else {
        1.0 - real as f64 / padded as f64
    }
}
