//! A stream: one epoch of batches for one client, decoded by the shared worker pool and
//! written into the stream's ring.
//!
//! `open` plans the epoch and the ring (`plan`, pure), creates the ring's shared memory and
//! hands back a start function for the driver thread (`driver`): it keeps up to `depth`
//! batches decoding ahead (items are pool jobs, so a batch's items decode in parallel), then
//! waits for a free slot, assembles the batch into it and announces it. It blocks only on
//! channels, never on the event loop.

mod driver;
mod plan;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use audiodecode_protocol::{ErrorInfo, ErrorKind, ItemInfo, Response, StreamSpec};

use crate::decode::probe_info;
use crate::feed::augment::Step;
use crate::feed::cache::{AudioCache, FileFacts};
use crate::feed::item::{augment_steps, ItemRange};
use crate::feed::pool::Pool;
use crate::feed::ring::RingMemory;
use crate::feed::slots::SlotLedger;
use crate::feed::stats::StreamStats;
use crate::store::tar::ShardFailures;

pub use driver::drive;

/// Everything a driver needs; built by the server when a stream opens.
pub struct StreamJob {
    pub id: u32,
    pub spec: StreamSpec,
    pub items: Arc<Vec<ItemInfo>>,
    /// Each item's part of its file, when the dataset says (Shar cuts, NeMo offsets).
    pub ranges: Option<Arc<Vec<ItemRange>>>,
    pub batches: Vec<Vec<u64>>,
    pub ring: Arc<RingMemory>,
    pub slots: Arc<SlotLedger>,
    pub cancel: Arc<AtomicBool>,
    pub stats: Arc<StreamStats>,
    pub pool: Pool,
    pub cache: Arc<AudioCache>,
    pub facts: Arc<FileFacts>,
    pub augment: Arc<Vec<Step>>,
    /// Shards that failed in this epoch (Note [Failed shards]).
    pub failures: Arc<ShardFailures>,
    /// Messages for the client, delivered by the event loop in order.
    pub notify: Box<dyn Fn(Response) + Send>,
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

/// Declared durations (seconds) of `indices`, from the headers, read in parallel; `None`
/// where a file does not declare its length (or cannot be read: it fails later, per item).
fn probe_durations(
    pool: &Pool,
    facts: &Arc<FileFacts>,
    failures: &Arc<ShardFailures>,
    items: &Arc<Vec<ItemInfo>>,
    indices: &[u64],
) -> Vec<Option<f64>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    // A few hundred files per job: the cached case is a stat call per file.
    for (chunk_no, chunk) in indices.chunks(256).enumerate() {
        let tx = tx.clone();
        let items = Arc::clone(items);
        let facts = Arc::clone(facts);
        let failures = Arc::clone(failures);
        let chunk = chunk.to_vec();
        // Results go out in `deliver`, not from the job: a probe abandoned at the item
        // deadline then leaves its files' lengths unknown instead of stalling the open.
        pool.run(
            move || {
                ShardFailures::within(&failures, || {
                    chunk
                        .into_iter()
                        .map(|i| {
                            let path = Path::new(&items[i as usize].path);
                            facts
                                .durations
                                .get_or_learn(path, || probe_info(path).ok()?.duration)
                                .flatten()
                        })
                        .collect::<Vec<_>>()
                })
            },
            move |probed| {
                for (k, d) in probed.into_iter().flatten().enumerate() {
                    let _ = tx.send((chunk_no * 256 + k, d));
                }
            },
        );
    }
    drop(tx);
    let mut out = vec![None; indices.len()];
    for (slot, d) in rx {
        out[slot] = d;
    }
    out
}

/// Resolve the dataset, plan the epoch, create the ring and start the driver.
pub fn open(
    id: u32,
    spec: StreamSpec,
    pool: &Pool,
    cache: &Arc<AudioCache>,
    facts: &Arc<FileFacts>,
    budget: (&crate::feed::tune::Plan, usize),
    notify: Box<dyn Fn(Response) + Send>,
) -> Result<Opened, ErrorInfo> {
    plan::validate(&spec)?;
    let steps = augment_steps(&spec, cache).map_err(|e| ErrorInfo::bad_request(e.to_string()))?;
    let stretch = plan::stretch(&steps);
    // This epoch's failed shards (Note [Failed shards]), from its resolve to its last item.
    let failures = Arc::new(ShardFailures::default());
    let resolved =
        ShardFailures::within(&failures, || crate::feed::manifest::resolve(&spec.dataset))
            .map_err(|e| ErrorInfo::bad_request(e.to_string()))?;
    let items = Arc::new(resolved.items);
    let sampler = plan::sampler_spec(&spec, items.len() as u64);
    let declared = resolved.durations;
    let epoch = plan::epoch(&spec, &sampler, resolved.groups.as_deref(), |indices| {
        // Durations the dataset states (Shar, NeMo) are used instead of reading audio.
        match &declared {
            Some(d) => indices.iter().map(|&i| d[i as usize]).collect(),
            None => probe_durations(pool, facts, &failures, &items, indices),
        }
    });
    plan::check_start(&spec, epoch.batches.len())?;
    let ring_plan = plan::ring(&spec, &epoch, stretch, budget);
    let geometry = ring_plan.geometry;
    plan::check_fits(&geometry, crate::sys::available_bytes("/dev/shm"))?;
    let ring = RingMemory::create(geometry, u64::from(id))
        .map_err(|e| ErrorInfo::new(ErrorKind::Io, format!("cannot create shared memory: {e}")))?;
    let ring = Arc::new(ring);
    // The ring's other slots are parked for the tuner.
    let ledger = Arc::new(SlotLedger::new(Arc::clone(&ring), ring_plan.depth));
    let cancel = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(StreamStats::default());
    let info = audiodecode_protocol::StreamInfo {
        stream: id,
        shm_name: ring.shm_name(),
        ring: geometry,
        batches_per_epoch: epoch.batches.len() as u64,
        items: items.as_ref().clone(),
        classes: resolved.classes,
    };
    let tunable = spec.prefetch == 0;
    let job = StreamJob {
        id,
        spec,
        items,
        ranges: resolved.ranges.map(Arc::new),
        batches: epoch.batches,
        ring: Arc::clone(&ring),
        slots: Arc::clone(&ledger),
        cancel: Arc::clone(&cancel),
        stats: Arc::clone(&stats),
        pool: pool.clone(),
        cache: Arc::clone(cache),
        facts: Arc::clone(facts),
        augment: Arc::new(steps),
        failures,
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
        tunable,
        start,
    })
}
