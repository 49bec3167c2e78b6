//! The driver thread: keeps up to `depth` batches decoding ahead (items are pool jobs, so a
//! batch's items decode in parallel), then waits for a free slot, assembles the batch into
//! it and announces it. It blocks only on channels, never on the event loop.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use audiodecode_protocol::ring::{RingGeometry, SlotHeader};
use audiodecode_protocol::{ErrorInfo, OnError, Response, SkippedItem, StreamSpec};
use crossbeam_channel::Receiver;

use super::StreamJob;
use crate::feed::item::{decode_item, ItemAudio, ItemMemory, ItemResult};
use crate::feed::ring::{RingMemory, SlotWriter};
use crate::store::tar::ShardFailures;

/// How often a stream returns the heap's free pages: about one batch of decoded items is
/// free at any time, so trimming after every few batches gives back nearly as much as after
/// each, and the pages that decoding faults back in are a quarter.
const TRIM_EVERY_BATCHES: u64 = 4;

/// One decoded item ready for a slot: (dataset index, label, audio).
type Row = (u64, i64, ItemAudio);

/// A batch whose items are decoding on the pool.
struct InFlight {
    seq: u64,
    indices: Vec<u64>,
    results: Receiver<(usize, ItemResult)>,
}

/// Run the stream to the end of its epoch (or until cancelled).
pub fn drive(job: StreamJob) {
    // Cancelled, or failed with `StreamFailed` already sent: no end of epoch to report.
    let Some(report) = run_epoch(&job) else {
        return;
    };
    (job.notify)(Response::EndOfEpoch {
        stream: job.id,
        skipped: report.skipped,
        damaged: report.damaged,
    });
}

/// The items of an epoch that failed (skipped) or were used although damaged.
#[derive(Default)]
struct EpochReport {
    skipped: Vec<SkippedItem>,
    damaged: Vec<SkippedItem>,
}

/// Deliver every batch from `start_batch` on; what was skipped or damaged, or `None` when
/// the stream stopped early.
fn run_epoch(job: &StreamJob) -> Option<EpochReport> {
    let depth = job.ring.geometry().slots as usize;
    let mut next = job.spec.start_batch as usize;
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut report = EpochReport::default();
    // Note [Equal batch counts under skip]
    let stand_ins = job.spec.world_size > 1;
    let mut last_good: Option<Vec<Row>> = None;
    let mut owed: Vec<u64> = Vec::new();
    loop {
        while inflight.len() < depth && next < job.batches.len() {
            inflight.push_back(submit(job, next));
            next += 1;
        }
        let Some(batch) = inflight.pop_front() else {
            if !owed.is_empty() {
                (job.notify)(Response::StreamFailed {
                    stream: job.id,
                    error: ErrorInfo::new(
                        audiodecode_protocol::ErrorKind::BadRequest,
                        format!(
                            "rank {} of {}: every item of its last {} batches failed and no \
                             batch of it decoded to stand in for them, so the other ranks \
                             would wait for batches it cannot give (skipped: {})",
                            job.spec.rank,
                            job.spec.world_size,
                            owed.len(),
                            report.skipped.first().map_or("", |s| s.message.as_str())
                        ),
                    ),
                });
                return None;
            }
            return Some(report);
        };
        let decoded = wait_decoded(job, &batch)?;
        let rows = sort_results(job, &batch.indices, decoded, &mut report)?;
        if rows.is_empty() {
            // Every item of this batch failed and was skipped: alone, nothing to deliver;
            // among ranks, a stand-in keeps this rank's batch count.
            if stand_ins {
                match &last_good {
                    Some(good) => deliver(job, batch.seq, good.clone())?,
                    None => owed.push(batch.seq),
                }
            }
            continue;
        }
        if stand_ins {
            for seq in std::mem::take(&mut owed) {
                deliver(job, seq, rows.clone())?;
            }
            last_good = Some(rows.clone());
        }
        deliver(job, batch.seq, rows)?;
    }
}

/// Queue every item of batch `seq` on the pool; results arrive on the returned channel.
fn submit(job: &StreamJob, seq: usize) -> InFlight {
    let indices = job.batches[seq].clone();
    let (tx, rx) = crossbeam_channel::bounded(indices.len().max(1));
    for (pos, &index) in indices.iter().enumerate() {
        let tx = tx.clone();
        let items = Arc::clone(&job.items);
        let spec = job.spec.clone();
        let cancel = Arc::clone(&job.cancel);
        let max_frames = job.ring.geometry().max_frames;
        let cache = Arc::clone(&job.cache);
        let facts = Arc::clone(&job.facts);
        let steps = Arc::clone(&job.augment);
        let failures = Arc::clone(&job.failures);
        let path = items[index as usize].path.clone();
        let range = job.ranges.as_ref().map(|r| r[index as usize]);
        job.pool.run(
            move || {
                if cancel.load(Ordering::Relaxed) {
                    return None;
                }
                let item = &items[index as usize];
                Some(ShardFailures::within(&failures, || {
                    decode_item(
                        &spec,
                        item,
                        index,
                        range,
                        max_frames,
                        ItemMemory {
                            cache: spec.cache.then_some(&*cache),
                            facts: &facts,
                        },
                        &steps,
                    )
                }))
            },
            move |result| {
                let result = match result {
                    Ok(None) => return,
                    Ok(Some(result)) => result,
                    // A panic or the item deadline: the item's error, like a decode error.
                    Err(failure) => Err(failure.for_item(Path::new(&path))),
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
}

/// Wait for every item of `batch`, in batch order; `None` when the stream was cancelled.
fn wait_decoded(job: &StreamJob, batch: &InFlight) -> Option<Vec<Option<ItemResult>>> {
    let mut decoded: Vec<Option<ItemResult>> = (0..batch.indices.len()).map(|_| None).collect();
    let waiting = Instant::now();
    for _ in 0..batch.indices.len() {
        // An error means cancelled: the jobs dropped their senders.
        let (pos, result) = batch.results.recv().ok()?;
        decoded[pos] = Some(result);
    }
    add_elapsed(&job.stats.decode_wait_ns, waiting);
    if job.cancel.load(Ordering::Relaxed) {
        return None;
    }
    Some(decoded)
}

/// The batch's decoded rows, failed items skipped and damaged ones noted (in `report`)
/// or, with `on_error: raise`, the stream failed (`StreamFailed` sent) and `None`.
fn sort_results(
    job: &StreamJob,
    indices: &[u64],
    decoded: Vec<Option<ItemResult>>,
    report: &mut EpochReport,
) -> Option<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::with_capacity(decoded.len());
    for (index, result) in indices.iter().zip(decoded) {
        let item = &job.items[*index as usize];
        match result? {
            Ok(audio) => {
                if let Some(damage) = audio.damage() {
                    job.stats.damaged.fetch_add(1, Ordering::Relaxed);
                    report.damaged.push(SkippedItem {
                        index: *index,
                        path: item.path.clone(),
                        message: crate::store::redacted(damage).into_owned(),
                    });
                }
                rows.push((*index, item.label, audio));
            }
            Err(err) => {
                if job.spec.on_error == OnError::Raise {
                    (job.notify)(Response::StreamFailed {
                        stream: job.id,
                        error: ErrorInfo::from(&err),
                    });
                    return None;
                }
                job.stats.skipped.fetch_add(1, Ordering::Relaxed);
                report.skipped.push(SkippedItem {
                    index: *index,
                    path: item.path.clone(),
                    message: err.to_string(),
                });
            }
        }
    }
    Some(rows)
}

/// Write batch `seq` into a free slot and announce it; `None` when the stream was
/// cancelled or closed meanwhile.
fn deliver(job: &StreamJob, seq: u64, rows: Vec<Row>) -> Option<()> {
    // Wait for the client to hand back a slot: the only place the driver waits on it.
    let waiting = Instant::now();
    let slot = job.slots.take()?;
    add_elapsed(&job.stats.slot_wait_ns, waiting);
    if job.cancel.load(Ordering::Relaxed) {
        return None;
    }
    let padded = write_batch(&job.ring, slot, &job.spec, seq, &rows);
    job.stats.padded_frames.fetch_add(padded, Ordering::Relaxed);
    job.stats
        .items
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    let frames: u64 = rows.iter().map(|r| r.2.frames() as u64).sum();
    job.stats.frames.fetch_add(frames, Ordering::Relaxed);
    job.slots.announce(seq, slot);
    (job.notify)(Response::BatchReady {
        stream: job.id,
        slot,
        seq,
    });
    drop(rows);
    if seq.is_multiple_of(TRIM_EVERY_BATCHES) {
        crate::sys::residency::return_free_heap();
    }
    Some(())
}

/// Add the time since `since` to a nanosecond counter.
fn add_elapsed(counter: &AtomicU64, since: Instant) {
    let ns = since.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
    counter.fetch_add(ns, Ordering::Relaxed);
}

/// Assemble `rows` into `slot` of the ring; returns the padded frames written.
#[allow(unsafe_code)] // Writes a slot it owns: see the SAFETY note.
fn write_batch(ring: &RingMemory, slot: u32, spec: &StreamSpec, seq: u64, rows: &[Row]) -> u64 {
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
