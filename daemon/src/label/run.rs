//! Labeling a list of files: decode + features on worker threads, pieces of many files
//! batched through the model on the calling thread, results handed out in input order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use audiodecode_protocol::TranscribeOptions;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::engine::WhisperEngine;
use super::error::LabelError;
use super::model_loop::ModelLoop;
use super::prepare::{labeling_vad_options, prepare, Input, Ready};
use super::record::FileLabel;
use crate::vad::{SpeechDetector, VadOptions};

/// What the sink receives per file, in input order.
pub struct LabelEvent {
    pub index: usize,
    pub label: FileLabel,
}

/// Pieces per model call when the caller leaves it to us: enough to fill the GEMMs on a
/// CPU, more on a GPU; memory per piece is ~1 MB of features plus activations.
pub fn auto_batch_size(cuda: bool) -> usize {
    if cuda {
        16
    } else {
        8
    }
}

/// The model as a run's workers see it: possibly still loading while they decode and find
/// speech, then ready; `None` when it failed to load (the run stops).
///
/// Note [Start-up overlaps the model's load]: every `label` run pays the model's load
/// (0.3 s for `base` here, seconds for `large-v3`) and the decode and VAD of its first
/// files before the first batch. They run at once: the CLI loads the model on its own
/// thread while the workers decode and find speech; a worker waits for the model only to
/// compute features (their mel bins are the model's), and the model loop before its first
/// batch. A model that fails to load is always reported to the waiters (as `None`), so
/// no worker waits forever; the run then ends with nothing labelled and the CLI reports
/// why.
pub type LoadingEngine<'a, 'e> = &'a (dyn Fn() -> Option<&'e WhisperEngine> + Sync);

/// How a labeling run spreads its work.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Decode and feature threads.
    pub workers: usize,
    /// Windows per model call.
    pub batch_size: usize,
    /// Short clips share 30 s windows (see [`super::pack`]).
    pub pack: bool,
    /// Files taken into one block at most. A block is labelled to the end before the next
    /// starts, so its windows and batches depend only on its files: a run resumed at a block
    /// boundary gives the results an uninterrupted run would. Its audio is what is held.
    pub block_files: usize,
    /// Fail damaged or truncated inputs instead of labelling what decodes around the
    /// damage (recorded in the label's `damage`). See Note [Damage rule].
    pub strict: bool,
    /// A file's decode is abandoned past this and the file labelled as an error.
    pub item_deadline: Duration,
}

/// Files in one block unless the caller says otherwise (see [`Schedule::block_files`] and
/// Note [Deterministic labeling blocks]).
pub const DEFAULT_BLOCK_FILES: usize = 64;
/// Pieces in one block at most, in batches (bounds memory on long recordings).
const BLOCK_BATCHES: usize = 8;

/// The speech detector `options` ask for: `None` with VAD off; an error naming what is
/// missing when it cannot run (checked before any audio is decoded).
pub fn speech_detector(
    options: &TranscribeOptions,
) -> Result<Option<&'static SpeechDetector>, LabelError> {
    if !options.vad_filter {
        return Ok(None);
    }
    crate::vad::check_options(&options.vad)?;
    Ok(Some(SpeechDetector::shared()?))
}

/// Labels `files`, handing results to `sink` in input order, a block of files at a time
/// (one call per block, so a writer can append a block at once). Per-file problems become
/// error records. With `vad`, only the speech it finds is transcribed (see Note [VAD in
/// labeling]). `engine` may still be loading: workers decode the first files meanwhile.
/// When it fails to load, nothing is labelled (the caller reports why).
pub fn label_files(
    engine: LoadingEngine,
    vad: Option<&SpeechDetector>,
    files: &[String],
    options: &TranscribeOptions,
    schedule: Schedule,
    cancel: &AtomicBool,
    sink: &mut dyn FnMut(Vec<LabelEvent>),
) {
    let Schedule {
        workers,
        batch_size,
        pack,
        block_files,
        ..
    } = schedule;
    let batch_size = batch_size.max(1);
    let next_file = AtomicUsize::new(0);
    let (tx, rx) = bounded::<Ready>(batch_size * 2);
    let speech = vad.map(|detector| (detector, labeling_vad_options(&options.vad)));
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let next_file = &next_file;
            let speech = speech.as_ref();
            scope.spawn(move || {
                prepare_files(engine, speech, files, schedule, next_file, cancel, tx)
            });
        }
        drop(tx);

        // No model: returning drops the receiver, which stops the workers.
        let Some(engine) = engine() else {
            return;
        };
        let mut state = ModelLoop::new(engine, options.clone(), pack);
        let mut intake = InOrder {
            rx,
            early: BTreeMap::new(),
            next_in: 0,
            total: files.len(),
        };
        while intake.next_in < files.len() && !cancel.load(Ordering::Relaxed) {
            let first = intake.next_in;
            let taken =
                intake.take_block(&mut state, block_files.max(1), BLOCK_BATCHES * batch_size);
            // Note [Deterministic labeling blocks]: the block samples as if it were first.
            if let Err(e) = engine.reseed(block_seed(&files[first])) {
                log::error!("{e}");
            }
            state.run_queue(batch_size, cancel);
            state.flush(sink);
            // The block's audio, features and the model's activations are freed now, but
            // with `keep_large_allocations` glibc keeps all of it in each thread's heap:
            // without this a run over real files sat at 1.4-2.0 GB for `tiny.en`.
            crate::sys::residency::return_free_heap();
            if taken == 0 {
                break;
            }
        }
        // Unblock workers still sending, then let the scope join them.
        drop(intake);
    });
}

/// The sampling seed of the block that starts with `first_file`: a function of the file
/// alone (FNV-1a of its name), so an uninterrupted run, a resumed one and a daemon asked
/// again all draw the same.
fn block_seed(first_file: &str) -> u32 {
    first_file.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// A worker thread: prepares the next file not yet taken until none is left, the run is
/// cancelled, or the model loop stops listening.
fn prepare_files(
    engine: LoadingEngine,
    vad: Option<&(&SpeechDetector, VadOptions)>,
    files: &[String],
    schedule: Schedule,
    next_file: &AtomicUsize,
    cancel: &AtomicBool,
    tx: Sender<Ready>,
) {
    loop {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let index = next_file.fetch_add(1, Ordering::Relaxed);
        let Some(path) = files.get(index) else { break };
        let input = Input {
            path: Path::new(path),
            name: path,
            max_seconds: None,
            strict: schedule.strict,
            deadline: schedule.item_deadline,
        };
        if tx.send(prepare(engine, vad, index, input)).is_err() {
            break;
        }
    }
}

/// Prepared files in input order. Workers finish files out of order; blocks take them in
/// order.
struct InOrder {
    rx: Receiver<Ready>,
    /// Files that arrived before their turn.
    early: BTreeMap<usize, Ready>,
    /// The next file to take.
    next_in: usize,
    /// Files in the run.
    total: usize,
}

impl InOrder {
    /// The next file in input order, waiting for it; `None` when the workers stopped.
    fn next_ready(&mut self) -> Option<Ready> {
        loop {
            if let Some(ready) = self.early.remove(&self.next_in) {
                self.next_in += 1;
                return Some(ready);
            }
            // Workers stop only when cancelled.
            let ready = self.rx.recv().ok()?;
            self.early.insert(ready.index(), ready);
        }
    }

    /// Takes files in input order into `state` until the block is full: `block_files`
    /// files, or `max_queued` windows queued. Returns how many it took.
    fn take_block(
        &mut self,
        state: &mut ModelLoop,
        block_files: usize,
        max_queued: usize,
    ) -> usize {
        let mut taken = 0usize;
        while self.next_in < self.total && taken < block_files && state.queued() < max_queued {
            let Some(ready) = self.next_ready() else {
                break;
            };
            state.accept(ready);
            taken += 1;
        }
        taken
    }
}
