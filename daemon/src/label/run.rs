//! Labeling a list of files: decode + features on worker threads, pieces of many files
//! batched through the model on the calling thread, results handed out in input order.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use audiodecode_protocol::TranscribeOptions;
use crossbeam_channel::bounded;

use super::engine::{PieceInput, PieceOutput, WhisperEngine};
use super::mel::SAMPLE_RATE;
use super::pieces::cut_pieces;
use super::record::FileLabel;
use crate::error::DecodeError;
use crate::pipeline::{load, LoadRequest};
use crate::{ChannelMode, Quality};

/// What the sink receives per file, in input order.
pub struct LabelEvent {
    pub index: usize,
    pub label: FileLabel,
}

/// A decoded file cut into pieces with their features.
struct Prepared {
    index: usize,
    duration: f64,
    pieces: Vec<(f64, PieceInput)>,
    /// The 16 kHz audio, kept to re-decode stretches of speech the model skipped.
    samples: Vec<f32>,
}

enum Ready {
    File(Prepared),
    Failed(usize, FileLabel),
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

/// Labels `files`, calling `sink` once per file in input order. Per-file problems become
/// error records; `Err` only when the model itself fails to run at all.
pub fn label_files(
    engine: &WhisperEngine,
    files: &[String],
    options: &TranscribeOptions,
    workers: usize,
    batch_size: usize,
    cancel: &AtomicBool,
    sink: &mut dyn FnMut(LabelEvent),
) {
    let batch_size = batch_size.max(1);
    let next_file = AtomicUsize::new(0);
    let (tx, rx) = bounded::<Ready>(batch_size * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let next_file = &next_file;
            scope.spawn(move || loop {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let index = next_file.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(index) else { break };
                if tx.send(prepare(engine, index, path)).is_err() {
                    break;
                }
            });
        }
        drop(tx);

        let mut state = ModelLoop {
            engine,
            options,
            files,
            queue: Vec::new(),
            partial: HashMap::new(),
            languages: HashMap::new(),
            finished: BTreeMap::new(),
            next_out: 0,
        };
        let mut channel_open = true;
        while channel_open || !state.queue.is_empty() {
            // Fill a batch; block only while the workers can still deliver.
            while state.queue.len() < batch_size && channel_open {
                match rx.recv() {
                    Ok(ready) => state.accept(ready),
                    Err(_) => channel_open = false,
                }
            }
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let take = state.queue.len().min(batch_size);
            let batch: Vec<QueuedPiece> = state.queue.drain(..take).collect();
            state.run_batch(batch);
            state.flush(sink);
        }
        state.flush(sink);
        // Unblock workers still sending, then let the scope join them.
        drop(rx);
    });
}

fn prepare(engine: &WhisperEngine, index: usize, path: &str) -> Ready {
    let request = LoadRequest {
        sample_rate: Some(SAMPLE_RATE),
        channels: ChannelMode::Mono,
        quality: Quality::Hq,
        ..LoadRequest::default()
    };
    let decoded = match load(Path::new(path), &request, 1) {
        Ok(audio) => audio,
        // A file with no samples has nothing to say; it is not an error.
        Err(DecodeError::Empty { .. }) => {
            return Ready::File(Prepared {
                index,
                duration: 0.0,
                pieces: Vec::new(),
                samples: Vec::new(),
            })
        }
        Err(e) => return Ready::Failed(index, FileLabel::failed(path, None, e.to_string())),
    };
    let duration = decoded.duration();
    let samples = decoded.planes.into_iter().next().unwrap_or_default();
    let features = catch_unwind(AssertUnwindSafe(|| {
        cut_pieces(&samples)
            .into_iter()
            .filter(|range| !is_silent(&samples[range.clone()]))
            .map(|range| {
                let offset = range.start as f64 / f64::from(SAMPLE_RATE);
                let piece = PieceInput {
                    features: engine.front.window_features(&samples[range.clone()]),
                    samples: range.len(),
                    language: None,
                    group: index,
                };
                (offset, piece)
            })
            .collect()
    }));
    match features {
        Ok(pieces) => Ready::File(Prepared {
            index,
            duration,
            pieces,
            samples,
        }),
        Err(_) => Ready::Failed(
            index,
            FileLabel::failed(
                path,
                Some(duration),
                format!("{path}: feature extraction failed"),
            ),
        ),
    }
}

/// Whisper invents words ("you", "thank you") for silence; a piece that never rises above
/// −50 dBFS holds no audible speech, so it skips the model and yields no text.
fn is_silent(samples: &[f32]) -> bool {
    const PEAK: f32 = 0.003_162; // −50 dBFS
    samples.iter().all(|x| x.abs() < PEAK)
}

/// Parts of an uncovered stretch worth decoding again: at least 1.5 s long, holding at
/// least 0.5 s of sound, and not a whole piece that already gave nothing (the same input
/// would give the same nothing).
fn speech_holes(
    samples: &[f32],
    gap: std::ops::Range<usize>,
    pieces: &[std::ops::Range<usize>],
) -> Vec<std::ops::Range<usize>> {
    const MIN_GAP: usize = SAMPLE_RATE as usize * 3 / 2;
    const MIN_SOUND: usize = SAMPLE_RATE as usize / 2;
    const FRAME: usize = 160;
    if gap.len() < MIN_GAP {
        return Vec::new();
    }
    let Some(audio) = samples.get(gap.clone()) else {
        return Vec::new();
    };
    // 10 ms frames above −50 dBFS RMS count as sound.
    let loud = audio
        .chunks(FRAME)
        .filter(|c| c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 > 1e-5)
        .count();
    if loud * FRAME < MIN_SOUND {
        return Vec::new();
    }
    let mostly_a_piece = pieces.iter().any(|p| {
        let overlap = gap.end.min(p.end).saturating_sub(gap.start.max(p.start));
        overlap * 10 >= p.len() * 9
    });
    if mostly_a_piece {
        return Vec::new();
    }
    cut_pieces(audio)
        .into_iter()
        .map(|r| gap.start + r.start..gap.start + r.end)
        .filter(|r| !is_silent(&samples[r.clone()]))
        .collect()
}

struct QueuedPiece {
    file: usize,
    piece: usize,
    input: PieceInput,
}

/// A file whose pieces are in flight.
struct Partial {
    duration: f64,
    /// (start, end) of each piece in samples.
    ranges: Vec<std::ops::Range<usize>>,
    outputs: Vec<Option<PieceOutput>>,
    error: Option<String>,
    samples: Vec<f32>,
    /// Skipped speech has been looked for (once per file).
    holes_checked: bool,
}

struct ModelLoop<'a> {
    engine: &'a WhisperEngine,
    options: &'a TranscribeOptions,
    files: &'a [String],
    queue: Vec<QueuedPiece>,
    partial: HashMap<usize, Partial>,
    /// Language detected on a file's first piece, used for its later pieces.
    languages: HashMap<usize, String>,
    finished: BTreeMap<usize, FileLabel>,
    next_out: usize,
}

impl ModelLoop<'_> {
    fn accept(&mut self, ready: Ready) {
        match ready {
            Ready::Failed(index, label) => {
                self.finished.insert(index, label);
            }
            Ready::File(prepared) => {
                if prepared.pieces.is_empty() {
                    let label = FileLabel::from_pieces(
                        &self.files[prepared.index],
                        prepared.duration,
                        Vec::new(),
                        &[],
                        self.options.multilingual,
                    );
                    self.finished.insert(prepared.index, label);
                    return;
                }
                let count = prepared.pieces.len();
                let mut ranges = Vec::with_capacity(count);
                for (piece, (offset, mut input)) in prepared.pieces.into_iter().enumerate() {
                    let start = (offset * f64::from(SAMPLE_RATE)).round() as usize;
                    ranges.push(start..start + input.samples);
                    input.language = self.options.language.clone();
                    self.queue.push(QueuedPiece {
                        file: prepared.index,
                        piece,
                        input,
                    });
                }
                self.partial.insert(
                    prepared.index,
                    Partial {
                        duration: prepared.duration,
                        ranges,
                        outputs: (0..count).map(|_| None).collect(),
                        error: None,
                        samples: prepared.samples,
                        holes_checked: false,
                    },
                );
            }
        }
    }

    fn run_batch(&mut self, batch: Vec<QueuedPiece>) {
        let (ids, inputs): (Vec<(usize, usize)>, Vec<PieceInput>) = batch
            .into_iter()
            .map(|mut q| {
                if !self.options.multilingual && q.input.language.is_none() {
                    q.input.language = self.languages.get(&q.file).cloned();
                }
                ((q.file, q.piece), q.input)
            })
            .unzip();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.transcribe(&inputs, self.options)
        }))
        .unwrap_or_else(|_| Err("the model panicked".to_string()));
        match result {
            Ok(outputs) => {
                for (&(file, piece), output) in ids.iter().zip(outputs) {
                    self.languages
                        .entry(file)
                        .or_insert_with(|| output.language.clone());
                    if let Some(p) = self.partial.get_mut(&file) {
                        p.outputs[piece] = Some(output);
                    }
                }
            }
            Err(message) => {
                for &(file, piece) in &ids {
                    if let Some(p) = self.partial.get_mut(&file) {
                        p.error = Some(format!(
                            "{}: transcription failed: {message}",
                            self.files[file]
                        ));
                        p.outputs[piece] = Some(PieceOutput {
                            language: String::new(),
                            language_probability: 0.0,
                            segments: Vec::new(),
                        });
                    }
                }
            }
        }
        let complete: Vec<usize> = self
            .partial
            .iter()
            .filter(|(_, p)| p.outputs.iter().all(Option::is_some))
            .map(|(&i, _)| i)
            .collect();
        for index in complete {
            if self.queue_holes(index) {
                continue;
            }
            let Some(p) = self.partial.remove(&index) else {
                continue;
            };
            self.languages.remove(&index);
            let path = &self.files[index];
            let offsets: Vec<f64> = p
                .ranges
                .iter()
                .map(|r| r.start as f64 / f64::from(SAMPLE_RATE))
                .collect();
            let label = match p.error {
                Some(error) => FileLabel::failed(path, Some(p.duration), error),
                None => FileLabel::from_pieces(
                    path,
                    p.duration,
                    p.outputs.into_iter().flatten().collect(),
                    &offsets,
                    self.options.multilingual,
                ),
            };
            self.finished.insert(index, label);
        }
    }

    /// Whisper sometimes jumps over a sentence inside a window (its next timestamp lands past
    /// it) or stops before the window ends. Stretches of speech that no segment covers are
    /// decoded again as pieces of their own, once. Returns whether any were queued.
    fn queue_holes(&mut self, index: usize) -> bool {
        let Some(p) = self.partial.get_mut(&index) else {
            return false;
        };
        if p.holes_checked || p.error.is_some() || self.options.without_timestamps {
            return false;
        }
        p.holes_checked = true;
        let rate = f64::from(SAMPLE_RATE);
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for (range, output) in p.ranges.iter().zip(&p.outputs) {
            for s in output.iter().flat_map(|o| &o.segments) {
                let a = range.start + (s.start * rate) as usize;
                let b = range.start + (s.end * rate) as usize;
                covered.push((a, b.max(a)));
            }
        }
        covered.sort_unstable();
        let mut holes = Vec::new();
        let mut cursor = 0usize;
        for &(a, b) in covered
            .iter()
            .chain(std::iter::once(&(p.samples.len(), p.samples.len())))
        {
            if a > cursor {
                holes.extend(speech_holes(&p.samples, cursor..a, &p.ranges));
            }
            cursor = cursor.max(b);
        }
        if holes.is_empty() {
            return false;
        }
        let language = if self.options.multilingual {
            None
        } else {
            self.languages.get(&index).cloned()
        };
        for hole in holes {
            let piece = p.ranges.len();
            let input = PieceInput {
                features: self.engine.front.window_features(&p.samples[hole.clone()]),
                samples: hole.len(),
                language: language.clone(),
                group: index,
            };
            p.ranges.push(hole);
            p.outputs.push(None);
            self.queue.push(QueuedPiece {
                file: index,
                piece,
                input,
            });
        }
        true
    }

    /// Hands out finished files while they are next in input order.
    fn flush(&mut self, sink: &mut dyn FnMut(LabelEvent)) {
        while let Some(label) = self.finished.remove(&self.next_out) {
            sink(LabelEvent {
                index: self.next_out,
                label,
            });
            self.next_out += 1;
        }
    }
}
