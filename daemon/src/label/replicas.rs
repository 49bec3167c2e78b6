//! The loaded model as the engine runs it: one replica with all the threads, and on CPU a
//! second pool of replicas that run the parts of a batch at once.
//!
//! Note [Batches split across CPU replicas]: on CPU one CTranslate2 replica with two
//! threads splits each operation between them; Whisper's small matrices (`base`: 512 wide, a beam of 5 over a batch of 8) leave the
//! threads waiting on each other. Two replicas of one thread each, each running half of
//! the batch, keep both cores busy instead: 12 windows of real speech took 13 % less model
//! time (benches/README.md, "Batches split across CPU replicas"). So a batch of two or more
//! pieces is cut into contiguous *parts*, one per split replica, run at once; a single piece
//! (the HTTP service's lone request) keeps the whole model and all its threads.
//!
//! Sampling (temperature fallback) never runs on the split pool: CTranslate2 seeds each
//! worker thread's generator once, and which of a pool's replicas takes a call is a race,
//! so draws there would depend on timing. Sampling runs on the whole model, one part
//! after another, as Note [Deterministic labeling blocks] needs. Beam search has no
//! draws; its results do not depend on the replica (a test checks texts and word times).
//!
//! The split replicas share one copy of the weights (CTranslate2 copies a model to the same
//! device by reference); the whole model is a second copy (`base` int8: ~80 MB).

use std::ops::Range;
use std::sync::RwLock;

use ct2rs::sys::{Config, Device, Whisper};

use super::engine::{parse_compute_type, ModelKey};
use super::error::LabelError;

/// Parts on CPU with two threads or more (a batch of 8 cut four ways would leave each
/// replica little work; more than two was not measured).
const CPU_SPLIT: usize = 2;

/// Overrides the number of parts (1 turns the split off; for measuring).
const SPLIT_ENV: &str = "AUDIODECODE_MODEL_SPLIT";

pub(super) struct Models {
    /// All the threads; reloaded by `reseed`, `None` only if that reload failed.
    whole: RwLock<Option<Whisper>>,
    /// `parts` replicas of `threads / parts` threads each; `None` on GPU or one thread.
    split: Option<Whisper>,
    parts: usize,
}

/// How many parts a model on `threads` CPU threads (or a GPU) runs a batch in.
pub(super) fn split_for(cuda: bool, threads: usize) -> usize {
    if cuda {
        return 1;
    }
    let automatic = if threads < 2 { 1 } else { CPU_SPLIT };
    let parts = std::env::var(SPLIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(automatic);
    parts.clamp(1, threads.max(1))
}

/// Loads the CTranslate2 model `key` names as `replicas` replicas of `threads` threads.
fn load(key: &ModelKey, replicas: usize, threads: usize) -> Result<Whisper, LabelError> {
    let config = Config {
        device: if key.cuda { Device::CUDA } else { Device::CPU },
        compute_type: parse_compute_type(&key.compute_type)?,
        device_indices: vec![0; replicas],
        num_threads_per_replica: threads,
        ..Config::default()
    };
    Whisper::new(&key.dir, config).map_err(|e| {
        LabelError::Model(format!("{}: cannot load the model: {e}", key.dir.display()))
    })
}

impl Models {
    pub(super) fn load(key: &ModelKey) -> Result<Self, LabelError> {
        let parts = key.split.clamp(1, key.threads.max(1));
        // The two pools load at once (each mostly reads and converts the weights).
        let (whole, split) = std::thread::scope(|scope| {
            let split = scope.spawn(|| (parts > 1).then(|| load(key, parts, key.threads / parts)));
            let whole = load(key, 1, key.threads);
            let split = split.join().unwrap_or_else(|_| {
                Some(Err(LabelError::Model("loading the model panicked".into())))
            });
            (whole, split)
        });
        let (whole, split) = (whole?, split.transpose()?);
        Ok(Self {
            whole: RwLock::new(Some(whole)),
            split,
            parts,
        })
    }

    /// Loads the whole model again (fresh CTranslate2 threads, so fresh generators).
    pub(super) fn reload_whole(&self, key: &ModelKey) -> Result<(), LabelError> {
        let mut whole = self.whole.write().unwrap_or_else(|e| e.into_inner());
        // The old model goes first: two at once would double the memory.
        *whole = None;
        *whole = Some(load(key, 1, key.threads)?);
        Ok(())
    }

    /// Whether the whole model is loaded (a failed reload leaves it out).
    pub(super) fn is_loaded(&self) -> bool {
        self.whole
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Runs `f` on the whole model.
    pub(super) fn with_whole<T>(
        &self,
        f: impl FnOnce(&Whisper) -> Result<T, LabelError>,
    ) -> Result<T, LabelError> {
        let whole = self.whole.read().unwrap_or_else(|e| e.into_inner());
        match whole.as_ref() {
            Some(model) => f(model),
            None => Err(LabelError::Model(
                "the model could not be loaded again".into(),
            )),
        }
    }

    /// The parts a batch of `n` pieces runs in: contiguous ranges of sizes differing by at
    /// most one; a single range when there is no split pool or one piece.
    pub(super) fn parts(&self, n: usize) -> Vec<Range<usize>> {
        let count = if self.split.is_some() { self.parts } else { 1 };
        contiguous_ranges(n, count)
    }

    /// `f(part, range, input, model)` for each part: at once on the split pool when
    /// `parallel` and there are several parts, else one after another on the whole model.
    /// Results in part order; the first error wins.
    pub(super) fn on_parts<I: Send, T: Send>(
        &self,
        parts: &[Range<usize>],
        inputs: Vec<I>,
        parallel: bool,
        f: impl Fn(usize, Range<usize>, I, &Whisper) -> Result<T, LabelError> + Sync,
    ) -> Result<Vec<T>, LabelError> {
        match (&self.split, parallel && parts.len() > 1) {
            (Some(split), true) => std::thread::scope(|scope| {
                let f = &f;
                let handles: Vec<_> = parts
                    .iter()
                    .cloned()
                    .zip(inputs)
                    .enumerate()
                    .map(|(k, (range, input))| scope.spawn(move || f(k, range, input, split)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(LabelError::Inference(
                                "a model replica's part panicked".into(),
                            ))
                        })
                    })
                    .collect()
            }),
            _ => self.with_whole(|model| {
                parts
                    .iter()
                    .cloned()
                    .zip(inputs)
                    .enumerate()
                    .map(|(k, (range, input))| f(k, range, input, model))
                    .collect()
            }),
        }
    }
}

/// `0..n` cut into `count` contiguous ranges (fewer if `n` is smaller) whose sizes differ
/// by at most one.
fn contiguous_ranges(n: usize, count: usize) -> Vec<Range<usize>> {
    let count = count.min(n).max(1);
    let (base, extra) = (n / count, n % count);
    let mut start = 0;
    (0..count)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        assert_eq!(contiguous_ranges(8, 2), vec![0..4, 4..8]);
        assert_eq!(contiguous_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(contiguous_ranges(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(contiguous_ranges(1, 2), vec![0..1]);
        assert_eq!(contiguous_ranges(8, 1), vec![0..8]);
    }
}
