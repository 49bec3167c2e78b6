//! A stream: one epoch of batches for one client, decoded by the shared worker pool and
//! written into the stream's ring.
//!
//! The driver thread keeps up to `depth` batches decoding ahead (items are pool jobs, so a
//! batch's items decode in parallel), then waits for a free slot, assembles the batch into
//! it and announces it. It blocks only on channels, never on the event loop.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use audiodecode_protocol::ring::{RingGeometry, SlotHeader, MAX_SLOTS};
use audiodecode_protocol::{
    ErrorInfo, ErrorKind, ItemInfo, OnError, Response, SkippedItem, StreamSpec,
};
use crossbeam_channel::Receiver;

use crate::decode::probe_info;
use crate::error::DecodeError;
use crate::feed::augment::Step;
use crate::feed::cache::{AudioCache, DurationCache};
use crate::feed::item::{augment_steps, decode_item, ItemAudio, ItemResult};
use crate::feed::pool::Pool;
use crate::feed::ring::{RingMemory, SlotWriter};
use crate::feed::slots::SlotLedger;
use crate::feed::stats::StreamStats;

/// Everything a driver needs; built by the server when a stream opens.
pub struct StreamJob {
    pub id: u32,
    pub spec: StreamSpec,
    pub items: Arc<Vec<ItemInfo>>,
    pub batches: Vec<Vec<u64>>,
    pub ring: Arc<RingMemory>,
    pub slots: Arc<SlotLedger>,
    pub cancel: Arc<AtomicBool>,
    pub stats: Arc<StreamStats>,
    pub pool: Pool,
    pub cache: Arc<AudioCache>,
    pub augment: Arc<Vec<Step>>,
    /// Messages for the client, delivered by the event loop in order.
    pub notify: Box<dyn Fn(Response) + Send>,
}

struct InFlight {
    seq: u64,
    indices: Vec<u64>,
    results: Receiver<(usize, ItemResult)>,
}

/// Run the stream to the end of its epoch (or until cancelled).
pub fn drive(job: StreamJob) {
    let start_batch = job.spec.start_batch as usize;
    let depth = job.ring.geometry().slots as usize;
    let mut next = start_batch;
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut skipped: Vec<SkippedItem> = Vec::new();

    let submit = |seq: usize| -> InFlight {
        let indices = job.batches[seq].clone();
        let (tx, rx) = crossbeam_channel::bounded(indices.len().max(1));
        for (pos, &index) in indices.iter().enumerate() {
            let tx = tx.clone();
            let items = Arc::clone(&job.items);
            let spec = job.spec.clone();
            let cancel = Arc::clone(&job.cancel);
            let max_frames = job.ring.geometry().max_frames;
            let cache = Arc::clone(&job.cache);
            let steps = Arc::clone(&job.augment);
            let path = items[index as usize].path.clone();
            job.pool.run(
                move || {
                    if cancel.load(Ordering::Relaxed) {
                        return None;
                    }
                    let item = &items[index as usize];
                    Some(decode_item(
                        &spec,
                        item,
                        index,
                        max_frames,
                        Some(&cache),
                        &steps,
                    ))
                },
                move |result| {
                    let result = match result {
                        Ok(None) => return,
                        Ok(Some(result)) => result,
                        Err(panicked) => Err(DecodeError::Panic {
                            path: path.into(),
                            message: panicked.0,
                        }),
                    };
                    let _ = tx.send((pos, result));
                },
            );
        }
        InFlight {
            seq: seq as u64,
            indices,
            results: rx,
        }
    };

    loop {
        while inflight.len() < depth && next < job.batches.len() {
            inflight.push_back(submit(next));
            next += 1;
        }
        let Some(batch) = inflight.pop_front() else {
            break;
        };
        let mut decoded: Vec<Option<ItemResult>> = (0..batch.indices.len()).map(|_| None).collect();
        let waiting = Instant::now();
        for _ in 0..batch.indices.len() {
            match batch.results.recv() {
                Ok((pos, result)) => decoded[pos] = Some(result),
                Err(_) => return, // cancelled: jobs dropped their senders
            }
        }
        add_elapsed(&job.stats.decode_wait_ns, waiting);
        if job.cancel.load(Ordering::Relaxed) {
            return;
        }
        let mut rows: Vec<(u64, i64, ItemAudio)> = Vec::with_capacity(decoded.len());
        for (index, result) in batch.indices.iter().zip(decoded) {
            let item = &job.items[*index as usize];
            match result {
                Some(Ok(audio)) => rows.push((*index, item.label, audio)),
                Some(Err(err)) => {
                    if job.spec.on_error == OnError::Raise {
                        (job.notify)(Response::StreamFailed {
                            stream: job.id,
                            error: ErrorInfo::from(&err),
                        });
                        return;
                    }
                    job.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    skipped.push(SkippedItem {
                        index: *index,
                        path: item.path.clone(),
                        message: err.to_string(),
                    });
                }
                None => return,
            }
        }
        if rows.is_empty() {
            // Every item of this batch failed and was skipped; there is nothing to deliver.
            continue;
        }
        // Wait for the client to hand back a slot: the only place the driver waits on it.
        let waiting = Instant::now();
        let Some(slot) = job.slots.take() else {
            return;
        };
        add_elapsed(&job.stats.slot_wait_ns, waiting);
        if job.cancel.load(Ordering::Relaxed) {
            return;
        }
        let padded = write_batch(&job.ring, slot, &job.spec, batch.seq, &rows);
        job.stats.padded_frames.fetch_add(padded, Ordering::Relaxed);
        job.stats
            .items
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let frames: u64 = rows.iter().map(|r| r.2.frames() as u64).sum();
        job.stats.frames.fetch_add(frames, Ordering::Relaxed);
        job.slots.announce(batch.seq, slot);
        (job.notify)(Response::BatchReady {
            stream: job.id,
            slot,
            seq: batch.seq,
        });
        drop(rows);
        if batch.seq % TRIM_EVERY_BATCHES == 0 {
            crate::sys::residency::return_free_heap();
        }
    }
    (job.notify)(Response::EndOfEpoch {
        stream: job.id,
        skipped,
    });
}

fn add_elapsed(counter: &AtomicU64, since: Instant) {
    let ns = since.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
    counter.fetch_add(ns, Ordering::Relaxed);
}

fn write_batch(
    ring: &RingMemory,
    slot: u32,
    spec: &StreamSpec,
    seq: u64,
    rows: &[(u64, i64, ItemAudio)],
) -> u64 {
    let geometry: RingGeometry = ring.geometry();
    let longest = rows.iter().map(|r| r.2.frames()).max().unwrap_or(0) as u64;
    let frames = if spec.pad_to_max && spec.max_seconds.is_some() {
        geometry.max_frames
    } else {
        longest
    };
    let header = SlotHeader {
        seq,
        epoch: spec.epoch,
        batch: rows.len() as u32,
        channels: geometry.channels,
        frames,
        sample_rate: geometry.sample_rate,
    };
    let channels = geometry.channels as usize;
    let refs: Vec<(u64, i64, Vec<&[f32]>)> = rows
        .iter()
        .map(|(i, l, audio)| (*i, *l, audio.planes(channels)))
        .collect();
    // SAFETY: the driver took `slot` from the ledger, so it owns it until it announces the
    // batch; nothing else writes or reads it meanwhile.
    let bytes = unsafe { ring.slot_mut(slot) };
    SlotWriter { geometry, bytes }.write(header, &refs);
    rows.len() as u64 * frames
}

/// What the server keeps of an opened stream.
pub struct Opened {
    pub info: audiodecode_protocol::StreamInfo,
    pub ring: Arc<RingMemory>,
    pub slots: Arc<SlotLedger>,
    pub cancel: Arc<AtomicBool>,
    pub stats: Arc<StreamStats>,
    /// False when the client fixed the depth (`prefetch`).
    pub tunable: bool,
    /// Starts the driver. Called after `StreamOpened` is queued, so the reply reaches the
    /// client before the first `BatchReady`.
    pub start: Box<dyn FnOnce() -> std::io::Result<()> + Send>,
}

/// How often a stream returns the heap's free pages: about one batch of decoded items is
/// free at any time, so trimming after every few batches gives back nearly as much as after
/// each, and the pages that decoding faults back in are a quarter.
const TRIM_EVERY_BATCHES: u64 = 4;

/// Slot length when neither `max_seconds` nor the files' headers bound it.
const DEFAULT_MAX_SECONDS: f64 = 30.0;
/// Depth a stream starts with when the daemon chooses; the tuner moves it.
const START_DEPTH: u32 = 4;

fn validate(spec: &StreamSpec) -> Result<(), ErrorInfo> {
    if spec.sample_rate == 0 || spec.sample_rate > 768_000 {
        return Err(ErrorInfo::bad_request(format!(
            "sample rate {} Hz",
            spec.sample_rate
        )));
    }
    if spec.batch_size == 0 {
        return Err(ErrorInfo::bad_request("batch size 0"));
    }
    if spec.world_size == 0 || spec.rank >= spec.world_size {
        return Err(ErrorInfo::bad_request(format!(
            "rank {} of world size {}",
            spec.rank, spec.world_size
        )));
    }
    if !spec.mono && spec.channels == 0 {
        return Err(ErrorInfo::bad_request(
            "channels must be at least 1 when mono is off",
        ));
    }
    if let Some(s) = spec.max_seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(ErrorInfo::bad_request(format!("max_seconds {s}")));
        }
    }
    if let Some(s) = spec.max_batch_seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(ErrorInfo::bad_request(format!("max_batch_seconds {s}")));
        }
    }
    if spec.prefetch > MAX_SLOTS {
        return Err(ErrorInfo::bad_request(format!(
            "prefetch {} (a ring has at most {MAX_SLOTS} slots)",
            spec.prefetch
        )));
    }
    Ok(())
}

/// Declared durations (seconds) of `indices`, from the headers, read in parallel; `None`
/// where a file does not declare its length (or cannot be read: it fails later, per item).
fn probe_durations(
    pool: &Pool,
    durations: &Arc<DurationCache>,
    items: &Arc<Vec<ItemInfo>>,
    indices: &[u64],
) -> Vec<Option<f64>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    // A few hundred files per job: the cached case is a stat call per file.
    for (chunk_no, chunk) in indices.chunks(256).enumerate() {
        let tx = tx.clone();
        let items = Arc::clone(items);
        let durations = Arc::clone(durations);
        let chunk = chunk.to_vec();
        pool.submit(move || {
            for (k, i) in chunk.into_iter().enumerate() {
                let path = Path::new(&items[i as usize].path);
                let d = durations.get_or_probe(path, || probe_info(path).ok()?.duration);
                let _ = tx.send((chunk_no * 256 + k, d));
            }
        });
    }
    drop(tx);
    let mut out = vec![None; indices.len()];
    for (slot, d) in rx {
        out[slot] = d;
    }
    out
}

/// Slot length in seconds: the crop when there is one, else the longest declared item
/// (at least the default when some files do not declare a length).
fn longest_seconds(known: f64, unknown: bool, crop: Option<f64>) -> f64 {
    if let Some(c) = crop {
        return c;
    }
    if unknown || known <= 0.0 {
        known.max(DEFAULT_MAX_SECONDS)
    } else {
        known
    }
}

/// Resolve the dataset, plan the epoch, create the ring and start the driver.
pub fn open(
    id: u32,
    spec: StreamSpec,
    pool: &Pool,
    cache: &Arc<AudioCache>,
    durations: &Arc<DurationCache>,
    (plan, streams): (&crate::feed::tune::Plan, usize),
    notify: Box<dyn Fn(Response) + Send>,
) -> Result<Opened, ErrorInfo> {
    validate(&spec)?;
    let steps = augment_steps(&spec, cache).map_err(|e| ErrorInfo::bad_request(e.to_string()))?;
    // Slowing audio down lengthens it; slots must hold the longest result.
    let stretch = 1.0 / steps.iter().map(Step::min_speed).fold(1.0, f64::min);
    let resolved = crate::feed::manifest::resolve(&spec.dataset)
        .map_err(|e| ErrorInfo::bad_request(e.to_string()))?;
    let items = Arc::new(resolved.items);
    let sampler = crate::feed::sampler::SamplerSpec {
        items: items.len() as u64,
        batch_size: u64::from(spec.batch_size),
        shuffle: spec.shuffle,
        seed: spec.seed,
        epoch: spec.epoch,
        rank: u64::from(spec.rank),
        world_size: u64::from(spec.world_size),
        drop_last: spec.drop_last,
    };
    let sr = spec.sample_rate;
    // Lengths are needed to bucket, and to size slots when nothing else bounds them.
    let (batches, longest) = match spec.max_batch_seconds {
        Some(budget) => {
            let all: Vec<u64> = (0..items.len() as u64).collect();
            let cap = spec.max_seconds.unwrap_or(f64::INFINITY);
            let declared = probe_durations(pool, durations, &items, &all);
            let known = declared.iter().flatten().copied().fold(0.0, f64::max);
            // Unknown lengths count as the longest known (or the crop) when bucketing.
            let fallback = if known > 0.0 {
                known
            } else {
                DEFAULT_MAX_SECONDS
            };
            let durations: Vec<f64> = declared
                .iter()
                .map(|d| d.unwrap_or(fallback).min(cap))
                .collect();
            let batches = crate::feed::sampler::bucketed_batches(&sampler, &durations, budget);
            let unknown = declared.iter().any(Option::is_none);
            (
                batches,
                longest_seconds(known.min(cap), unknown, spec.max_seconds),
            )
        }
        None => {
            let batches = crate::feed::sampler::epoch_batches(&sampler);
            let longest = match spec.max_seconds {
                Some(s) => s,
                None => {
                    let declared = probe_durations(pool, durations, &items, &batches.concat());
                    let known = declared.iter().flatten().copied().fold(0.0, f64::max);
                    longest_seconds(known, declared.iter().any(Option::is_none), None)
                }
            };
            (batches, longest)
        }
    };
    if spec.start_batch > batches.len() as u64 {
        return Err(ErrorInfo::bad_request(format!(
            "start_batch {} past the {} batches of the epoch",
            spec.start_batch,
            batches.len()
        )));
    }
    let max_frames = match spec.max_seconds {
        Some(s) => (s * f64::from(sr)).round().max(1.0) as u64,
        // +1: resampling rounds a length up.
        None => (longest * stretch * f64::from(sr)).ceil() as u64 + 1,
    };
    let batch_capacity = batches.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let channels = if spec.mono { 1 } else { spec.channels };
    let spec_prefetch = spec.prefetch;
    // The ring has room for the deepest the tuner may go; untouched slots cost no memory.
    // An explicit prefetch fixes the depth.
    let (slots, depth) = if spec.prefetch > 0 {
        (
            spec.prefetch.max(crate::feed::tune::MIN_DEPTH),
            spec.prefetch.max(crate::feed::tune::MIN_DEPTH),
        )
    } else {
        let slot_bytes = RingGeometry::new(1, batch_capacity, channels, max_frames, sr).slot_bytes;
        let cap = crate::feed::tune::ring_depth(plan, slot_bytes, streams);
        (cap, cap.min(START_DEPTH))
    };
    let geometry = RingGeometry::new(slots, batch_capacity, channels, max_frames, sr);
    if let Some(free) = crate::sys::available_bytes("/dev/shm") {
        if geometry.total_bytes() > free {
            return Err(ErrorInfo::bad_request(format!(
                "the batch ring needs {} MB but /dev/shm has {} MB free; set max_seconds or \
                 a smaller batch size or prefetch",
                geometry.total_bytes() >> 20,
                free >> 20
            )));
        }
    }
    let ring = RingMemory::create(geometry, u64::from(id))
        .map_err(|e| ErrorInfo::new(ErrorKind::Io, format!("cannot create shared memory: {e}")))?;
    let ring = Arc::new(ring);
    // The ring's other slots are parked for the tuner.
    let ledger = Arc::new(SlotLedger::new(Arc::clone(&ring), depth));
    let cancel = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(StreamStats::default());
    let info = audiodecode_protocol::StreamInfo {
        stream: id,
        shm_name: ring.shm_name(),
        ring: geometry,
        batches_per_epoch: batches.len() as u64,
        items: items.as_ref().clone(),
        classes: resolved.classes,
    };
    let job = StreamJob {
        id,
        spec,
        items,
        batches,
        ring: Arc::clone(&ring),
        slots: Arc::clone(&ledger),
        cancel: Arc::clone(&cancel),
        stats: Arc::clone(&stats),
        pool: pool.clone(),
        cache: Arc::clone(cache),
        augment: Arc::new(steps),
        notify,
    };
    let start = Box::new(move || {
        std::thread::Builder::new()
            .name(format!("stream-{id}"))
            .spawn(move || drive(job))
            .map(|_| ())
    });
    Ok(Opened {
        info,
        ring,
        slots: ledger,
        cancel,
        stats,
        tunable: spec_prefetch == 0,
        start,
    })
}
