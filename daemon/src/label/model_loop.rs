//! The model side of labeling: windows of many files packed, batched through Whisper and
//! put back together per file.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use audiodecode_protocol::TranscribeOptions;

use super::engine::{PieceInput, WhisperEngine};
use super::error::LabelError;
use super::mel::{SAMPLE_RATE, WINDOW_SAMPLES};
use super::pack::{clip_sounds, split_window, Packer, Slot, MIN_CLIP_LANGUAGE_PROBABILITY};
use super::pieces::{cut_pieces, cut_pieces_within, sound_span};
use super::prepare::{is_silent, Ready};
use super::record::FileLabel;
use super::run::LabelEvent;
use super::spoken::word_units;
use super::types::PieceOutput;
use crate::vad::SpeechMap;

/// A piece decoded again in parts must be long enough to split: each part at least 5 s.
const MIN_REDO_PART: usize = SAMPLE_RATE as usize * 5;
/// Lets the cut search a little past the middle for a pause.
const HALF_SLACK: usize = SAMPLE_RATE as usize * 2;
/// Pieces with less voiced audio than this are not judged (too little to count words on).
const MIN_REDO_VOICED_SECONDS: f64 = 6.0;
/// A piece whose words per voiced second fall below this share of the file's fullest
/// piece's lost words: Whisper stopped early or jumped. Speakers' paces differ, so only a
/// loss this large is judged from the pace alone; a false alarm costs two or three
/// shorter windows, never words.
const SPARSE_SHARE_OF_FULLEST: f64 = 0.5;
/// Whisper drops repetitions of a phrase said several times in one window: a piece whose
/// text is repetitive (compression ratio above the threshold) and slower than this share
/// of the fullest piece's pace is decoded again in parts too.
const REPETITIVE_SHARE_OF_FULLEST: f64 = 0.9;
/// Below this many words per voiced second a piece is sparse whatever the file's pace
/// (speech runs at 2–4 words a second; voiced frames are most of it).
const MIN_WORDS_PER_VOICED_SECOND: f64 = 0.8;
/// Note [Sparse pieces read through]: judged by its pace alone, a slow speaker's piece (a
/// list of keywords, a lecture with pauses) looks like one Whisper stopped early on, and
/// was decoded again in parts for nothing (one of 12 pieces of the 352 s real mix: 35
/// words whole, 26 in parts, 9 % of the run). A slow piece's words are therefore aligned
/// (in its batch, on its encoder output), and it is sparse only if some stretch between
/// its words, or one word's span, holds more voiced audio than this: DTW leaves speech
/// Whisper skipped between words or gives it to a neighbouring word. Measured with
/// faster-whisper's alignment on a 28 s piece of real news audio: its full reading leaves
/// at most 1.3 s unread (past a 2.7 s jingle), dropping any sentence of 6 words or more
/// leaves 2.3–5.8 s, stopping halfway 12.8 s. A piece slow enough to be judged sparse
/// has lost about half its words, far more than one sentence. Repetitive pieces keep
/// the pace rule alone: dropped repeats sound like the kept ones, and how DTW places
/// them was not measured.
const MAX_UNREAD_VOICED_SECONDS: f64 = 2.0;
/// Pieces judged by their pace are word-aligned when they decode slower than this (a cost
/// bar, not a rule: a piece can only be sparse at half the file's fullest pace, and real
/// speech runs at up to about 4 words per voiced second).
pub(super) const ALIGN_BELOW_WORDS_PER_VOICED_SECOND: f64 = 2.0;

/// The order clips are packed in: 0, k, 2k, …, 1, k+1, … with k = n / 3 rounded up, so
/// that clips next to each other in the input do not share a window. Datasets cut from
/// one recording (audiobooks such as LJSpeech, LibriSpeech chapters) hold consecutive
/// clips that continue each other's sentences; packed side by side, Whisper reads them
/// as one text and its segments straddle the gap, and those clips had to be decoded again
/// alone (15–20 of 46 packed real clips). Depends only on the block: resumable.
fn interleaved(n: usize) -> impl Iterator<Item = usize> {
    let stride = n.div_ceil(3).max(1);
    (0..stride).flat_map(move |r| (r..n).step_by(stride))
}

/// Words in a piece's output, characters of Chinese, Japanese or Thai counted by what they
/// say (`spoken::word_units`).
pub(super) fn word_count(output: &PieceOutput) -> f64 {
    output.segments.iter().map(|s| word_units(&s.text)).sum()
}

/// Seconds of 10 ms frames above −50 dBFS RMS.
fn voiced_seconds(samples: &[f32]) -> f64 {
    const FRAME: usize = 160;
    let loud = samples
        .chunks(FRAME)
        .filter(|c| c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 > 1e-5)
        .count();
    (loud * FRAME) as f64 / f64::from(SAMPLE_RATE)
}

/// For each piece decoded again in parts, keeps the reading with more words (the piece's,
/// or its parts' together) and empties the other.
fn keep_the_fuller_reading(p: &mut Partial) {
    for (piece, parts) in std::mem::take(&mut p.redone) {
        for k in losing_reading(p, piece, parts) {
            if let Some(Some(output)) = p.outputs.get_mut(k) {
                output.segments.clear();
            }
        }
    }
}

/// The pieces of the reading with fewer words: `piece`'s own, or its `parts`' together (a
/// tie keeps the piece).
fn losing_reading(p: &Partial, piece: usize, parts: std::ops::Range<usize>) -> Vec<usize> {
    let words = |k: usize| {
        p.outputs
            .get(k)
            .and_then(Option::as_ref)
            .map_or(0.0, word_count)
    };
    let whole = words(piece);
    let in_parts: f64 = parts.clone().map(words).sum();
    log::debug!(
        "{}: piece {piece} read as {whole} words whole, {in_parts} in parts; the {} kept",
        p.name,
        if in_parts > whole { "parts" } else { "piece" }
    );
    if in_parts > whole {
        vec![piece]
    } else {
        parts.collect()
    }
}

/// The text of these pieces' outputs, in order, as a label joins it.
fn text_of(p: &Partial, pieces: impl Iterator<Item = usize>) -> String {
    let mut texts = Vec::new();
    for k in pieces {
        let segments = p
            .outputs
            .get(k)
            .and_then(Option::as_ref)
            .map(|o| &o.segments);
        for segment in segments.into_iter().flatten() {
            let text = segment.text.trim();
            if !text.is_empty() {
                texts.push(text);
            }
        }
    }
    texts.join(" ")
}

/// Parts of an uncovered stretch worth decoding again: at least 1 s long, holding at
/// least 0.5 s of sound, and not a whole piece that already gave nothing (the same input
/// would give the same nothing).
fn speech_holes(
    samples: &[f32],
    gap: std::ops::Range<usize>,
    pieces: &[std::ops::Range<usize>],
) -> Vec<std::ops::Range<usize>> {
    // A second holds the two or three words Whisper drops at the end of a clip (at 1.5 s,
    // "Gothic and Roman", the last 1.36 s of an LJSpeech clip, was lost); a shorter gap is
    // mostly the tail of the last word after its segment's end.
    const MIN_GAP: usize = SAMPLE_RATE as usize;
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

/// How fully a piece decoded without timestamps was read: its words per voiced second,
/// whether its text is repetitive, and whether its aligned words leave no voiced stretch
/// unread.
#[derive(Clone, Copy)]
struct Pace {
    words_per_voiced_second: f64,
    repetitive: bool,
    read_through: bool,
}

impl Pace {
    /// Whisper stopped early, jumped, or dropped repetitions, judged against the pace of
    /// the file's fullest piece; a slow piece whose words account for all its voiced audio
    /// is a slow speaker, not a skip (Note [Sparse pieces read through]).
    fn is_sparse(&self, fullest: f64) -> bool {
        let floor = (fullest * SPARSE_SHARE_OF_FULLEST).max(MIN_WORDS_PER_VOICED_SECOND);
        let pace = self.words_per_voiced_second;
        if self.repetitive {
            return pace < floor || pace < fullest * REPETITIVE_SHARE_OF_FULLEST;
        }
        pace < floor && !self.read_through
    }
}

/// Voiced seconds of a piece whose pace is judged: long enough to split and voiced enough
/// to count words on; `None` for any other.
pub(super) fn judged_voiced_seconds(audio: &[f32]) -> Option<f64> {
    if audio.len() < 2 * MIN_REDO_PART {
        return None;
    }
    let voiced = voiced_seconds(audio);
    (voiced >= MIN_REDO_VOICED_SECONDS).then_some(voiced)
}

/// The pace of piece `i` of `p`, when it is decoded and long and voiced enough to judge.
fn pace_of(p: &Partial, i: usize, repetition: Option<f32>) -> Option<Pace> {
    let audio = p.samples.get(p.ranges.get(i)?.clone())?;
    let output = p.outputs.get(i)?.as_ref()?;
    let voiced = judged_voiced_seconds(audio)?;
    let repetitive = output
        .segments
        .iter()
        .any(|s| repetition.is_some_and(|t| s.compression_ratio > t));
    Some(Pace {
        words_per_voiced_second: word_count(output) / voiced,
        repetitive,
        read_through: reads_through(output, audio),
    })
}

/// Whether the piece's aligned words leave no stretch of its voiced audio unread: no
/// word's span and no stretch between words (or before the first, after the last) holds
/// over `MAX_UNREAD_VOICED_SECONDS` of it. DTW gives speech Whisper skipped to a
/// neighbouring word or leaves it between words, either way a long voiced stretch. A piece
/// without aligned words does not read through.
fn reads_through(output: &PieceOutput, audio: &[f32]) -> bool {
    let rate = f64::from(SAMPLE_RATE);
    let mut bounds = vec![0.0];
    for word in output
        .segments
        .iter()
        .flat_map(|s| s.words.iter().flatten())
    {
        bounds.extend([word.start, word.end]);
    }
    if bounds.len() == 1 {
        return false;
    }
    bounds.push(audio.len() as f64 / rate);
    let at = |t: f64| ((t.max(0.0) * rate) as usize).min(audio.len());
    let mut from = 0;
    bounds[1..].iter().all(|&t| {
        let to = at(t).max(from);
        let unread = voiced_seconds(&audio[from..to]);
        from = to;
        unread <= MAX_UNREAD_VOICED_SECONDS
    })
}

/// The fullest pace: pieces that lost words would drag a median down.
fn fullest_pace<'p>(paces: impl Iterator<Item = &'p Pace>) -> f64 {
    paces.map(|p| p.words_per_voiced_second).fold(0.0, f64::max)
}

/// Queues `piece` of `p` to be decoded again in parts of about half of it, cut at pauses.
fn redo_in_parts(
    engine: &WhisperEngine,
    file: usize,
    p: &mut Partial,
    piece: usize,
    language: &Option<String>,
    queue: &mut Vec<QueuedPiece>,
) {
    let Some(range) = p.ranges.get(piece).cloned() else {
        return;
    };
    let first_part = p.ranges.len();
    let parts = cut_pieces_within(
        &p.samples[range.clone()],
        (range.len() / 2).max(MIN_REDO_PART) + HALF_SLACK,
        &[],
    );
    for part in parts {
        let again = Again {
            file,
            range: range.start + part.start..range.start + part.end,
            language: language.clone(),
            without_timestamps: true,
        };
        again.queue(engine, p, queue);
    }
    log::debug!(
        "{}: piece at {:.1} s too sparse; decoding it again in {} parts",
        p.name,
        range.start as f64 / f64::from(SAMPLE_RATE),
        p.ranges.len() - first_part
    );
    p.redone.push((piece, first_part..p.ranges.len()));
}

/// A stretch of a file decoded again as a window of its own (skipped speech, or part of a
/// sparse piece).
struct Again {
    file: usize,
    range: std::ops::Range<usize>,
    language: Option<String>,
    without_timestamps: bool,
}

impl Again {
    /// Adds the stretch to the file's pieces and queues its window.
    fn queue(self, engine: &WhisperEngine, p: &mut Partial, queue: &mut Vec<QueuedPiece>) {
        let Some(audio) = p.samples.get(self.range.clone()) else {
            return;
        };
        let input = PieceInput {
            features: engine.front.window_features(audio),
            samples: self.range.len(),
            language: self.language,
            group: self.file,
            without_timestamps: self.without_timestamps,
            sound: sound_span(audio),
            packed_clips: None,
            judged_voiced_seconds: None,
        };
        let piece = p.ranges.len();
        p.ranges.push(self.range);
        p.outputs.push(None);
        queue.push(QueuedPiece::alone(self.file, piece, input));
    }
}

/// One window for the model and whose audio is in it.
struct QueuedPiece {
    input: PieceInput,
    /// The files' pieces in the window: one, or several packed short clips.
    members: Vec<Member>,
    /// The language its packed clips were detected in, which the window's own detection
    /// must confirm.
    expected_language: Option<String>,
}

struct Member {
    piece: usize,
    /// The file, and where its clip lies in a packed window (offset 0 for a window of its
    /// own).
    slot: Slot,
}

impl QueuedPiece {
    fn alone(file: usize, piece: usize, input: PieceInput) -> Self {
        let slot = Slot {
            file,
            offset: 0,
            samples: input.samples,
            sound: input.sound.clone(),
        };
        Self {
            input,
            members: vec![Member { piece, slot }],
            expected_language: None,
        }
    }
}

/// A file whose pieces are in flight.
struct Partial {
    /// What results and errors call it.
    name: String,
    duration: f64,
    /// (start, end) of each piece in samples.
    ranges: Vec<std::ops::Range<usize>>,
    outputs: Vec<Option<PieceOutput>>,
    error: Option<String>,
    samples: Vec<f32>,
    speech: Option<SpeechMap>,
    damage: Option<String>,
    /// Skipped speech has been looked for (once per file).
    holes_checked: bool,
    /// Pieces decoded again in parts because their text was too sparse for their speech:
    /// (the piece, its parts), and whether that check ran (once per file).
    redone: Vec<(usize, std::ops::Range<usize>)>,
    sparse_checked: bool,
    /// A short clip's own window, kept while it is packed with others in case its share of
    /// the packed result cannot be told apart.
    own_window: Option<PieceInput>,
    /// A short clip's language detected from its own frames, and its probability.
    detected: Option<(String, f32)>,
    /// Where the text of a streamed file goes as its pieces become final.
    stream: Option<PieceStream>,
}

impl Partial {
    /// Whether the pieces are decoded without timestamps (long recordings, or as asked):
    /// their skipped speech shows as sparse text, not as holes between segments.
    fn is_plain(&self, without_timestamps: bool) -> bool {
        self.samples.len() > WINDOW_SAMPLES || without_timestamps
    }
}

/// Receives a streamed file's text, a piece at a time, in order.
pub(super) type TextSink = Box<dyn FnMut(String)>;

/// A file whose text is streamed as its pieces finish (Note [Streamed pieces]).
struct PieceStream {
    sink: TextSink,
    /// The file's pieces as first cut (parts decoded again come after them).
    originals: usize,
    /// Pieces whose text has gone out.
    sent: usize,
    /// Whether any text has gone out (the next is preceded by a space).
    spoken: bool,
    /// Each decoded original piece's pace, measured once (it scans the piece's samples).
    paces: HashMap<usize, Option<Pace>>,
}

/// Windows of many files through the model: packs short clips, batches windows, decodes
/// again what Whisper skipped, and assembles each file's label once all its pieces are in.
/// `run::label_files` drives it a block at a time; `live` drives it a batch at a time.
pub(super) struct ModelLoop<'a> {
    engine: &'a WhisperEngine,
    options: TranscribeOptions,
    /// Short clips waiting to share a window, by the language the window is decoded in
    /// (`""` when it is given or the model is English-only); `None` when packing is off.
    pack: Option<BTreeMap<String, Packer>>,
    /// Short clips of this block waiting to be packed (their language detected from their
    /// own frames first, when it is to be detected).
    to_pack: Vec<usize>,
    queue: Vec<QueuedPiece>,
    partial: HashMap<usize, Partial>,
    /// Language detected on a file's first piece, used for its later pieces.
    languages: HashMap<usize, String>,
    finished: BTreeMap<usize, FileLabel>,
    next_out: usize,
    /// Windows each file has had in fair batches: the more a file has had, the later its
    /// next window goes.
    served: HashMap<usize, usize>,
}

impl<'a> ModelLoop<'a> {
    pub(super) fn new(engine: &'a WhisperEngine, options: TranscribeOptions, pack: bool) -> Self {
        ModelLoop {
            engine,
            // Per-piece language detection cannot be shared by a window of several files.
            pack: pack.then(BTreeMap::new).filter(|_| !options.multilingual),
            options,
            to_pack: Vec::new(),
            queue: Vec::new(),
            partial: HashMap::new(),
            languages: HashMap::new(),
            finished: BTreeMap::new(),
            next_out: 0,
            served: HashMap::new(),
        }
    }

    /// Windows waiting for the model.
    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether anything waits for the model: windows, or clips still to be packed.
    pub(super) fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.to_pack.is_empty()
    }

    /// Packs the block's short clips and runs every queued window through the model, a
    /// batch at a time.
    pub(super) fn run_queue(&mut self, batch_size: usize, cancel: &AtomicBool) {
        self.detect_and_pack();
        self.close_windows();
        // Note [One prompt kind per batch].
        self.queue.sort_by_key(|q| !q.input.without_timestamps);
        while !self.queue.is_empty() && !cancel.load(Ordering::Relaxed) {
            let plain = self.queue[0].input.without_timestamps;
            let take = self
                .queue
                .iter()
                .take(batch_size)
                .take_while(|q| q.input.without_timestamps == plain)
                .count();
            let batch: Vec<QueuedPiece> = self.queue.drain(..take).collect();
            self.run_batch(batch);
        }
    }

    /// Packs what arrived and runs one batch, chosen fairly: windows go in the order of
    /// how many windows their file has had (run before, or ahead of them in the queue),
    /// earlier files first among equals, so a short request never waits for a long one to
    /// finish. Returns the batch's windows and files, if one ran.
    pub(super) fn run_fair_batch(&mut self, batch_size: usize) -> Option<(usize, usize)> {
        self.detect_and_pack();
        self.close_windows();
        if self.queue.is_empty() {
            return None;
        }
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let mut order: Vec<(usize, usize, usize)> = self
            .queue
            .iter()
            .enumerate()
            .map(|(k, q)| {
                let file = q.members.iter().map(|m| m.slot.file).min().unwrap_or(0);
                let rank = seen.entry(file).or_default();
                *rank += 1;
                let had = self.served.get(&file).copied().unwrap_or(0);
                (had + *rank, file, k)
            })
            .collect();
        order.sort_unstable();
        // Note [One prompt kind per batch]: the most deserving window sets the kind.
        let plain = self.queue[order[0].2].input.without_timestamps;
        let mut chosen: Vec<usize> = order
            .into_iter()
            .map(|(_, _, k)| k)
            .filter(|&k| self.queue[k].input.without_timestamps == plain)
            .take(batch_size)
            .collect();
        chosen.sort_unstable();
        let mut batch = Vec::with_capacity(chosen.len());
        for k in chosen.into_iter().rev() {
            batch.push(self.queue.remove(k));
        }
        batch.reverse();
        let mut files: Vec<usize> = batch
            .iter()
            .flat_map(|q| q.members.iter().map(|m| m.slot.file))
            .collect();
        files.sort_unstable();
        files.dedup();
        for q in &batch {
            for m in &q.members {
                *self.served.entry(m.slot.file).or_default() += 1;
            }
        }
        let shape = (batch.len(), files.len());
        self.run_batch(batch);
        Some(shape)
    }

    /// Drops a file nobody waits for any more: its state and its windows of its own (a
    /// packed window it shares still runs for the others).
    pub(super) fn forget(&mut self, file: usize) {
        self.partial.remove(&file);
        self.languages.remove(&file);
        self.served.remove(&file);
        self.finished.remove(&file);
        self.to_pack.retain(|&f| f != file);
        self.queue
            .retain(|q| q.members.iter().any(|m| m.slot.file != file));
    }

    /// Takes a prepared file (or its failure) in.
    pub(super) fn accept(&mut self, ready: Ready) {
        match ready {
            Ready::Failed { index, label, .. } => {
                self.finished.insert(index, label);
            }
            Ready::File(prepared) => {
                if prepared.pieces.is_empty() {
                    let label = FileLabel::from_pieces(
                        &prepared.name,
                        prepared.duration,
                        Vec::new(),
                        &[],
                        self.options.multilingual,
                    )
                    .in_recording(prepared.speech.as_ref())
                    .with_damage(prepared.damage);
                    self.finished.insert(prepared.index, label);
                    return;
                }
                let index = prepared.index;
                let count = prepared.pieces.len();
                let mut ranges = Vec::with_capacity(count);
                let mut own_window = None;
                let packable = count == 1
                    && self.pack.is_some()
                    && Packer::packable(prepared.pieces[0].1.samples);
                for (piece, (offset, mut input)) in prepared.pieces.into_iter().enumerate() {
                    let start = (offset * f64::from(SAMPLE_RATE)).round() as usize;
                    ranges.push(start..start + input.samples);
                    input.language = self.options.language.clone();
                    if packable {
                        own_window = Some(input);
                    } else {
                        self.queue.push(QueuedPiece::alone(index, piece, input));
                    }
                }
                self.partial.insert(
                    index,
                    Partial {
                        name: prepared.name,
                        duration: prepared.duration,
                        ranges,
                        outputs: (0..count).map(|_| None).collect(),
                        error: None,
                        samples: prepared.samples,
                        speech: prepared.speech,
                        damage: prepared.damage,
                        holes_checked: false,
                        redone: Vec::new(),
                        sparse_checked: false,
                        own_window,
                        detected: None,
                        stream: None,
                    },
                );
                if packable {
                    self.to_pack.push(index);
                }
            }
        }
    }

    /// Packs the block's short clips, each with clips of its language (detected first when
    /// it is to be detected; a clip whose detection is unsure is decoded alone), in an
    /// interleaved order (see `interleaved`).
    fn detect_and_pack(&mut self) {
        let files = std::mem::take(&mut self.to_pack);
        if files.is_empty() {
            return;
        }
        let detect = self.options.language.is_none() && self.engine.is_multilingual();
        let languages: Vec<(usize, String)> = if detect {
            self.detect_clips(files)
        } else {
            files.into_iter().map(|f| (f, String::new())).collect()
        };
        for k in interleaved(languages.len()) {
            let (file, language) = languages[k].clone();
            self.pack_clip(file, language);
        }
    }

    /// The clips' languages from their own frames; clips whose detection failed or is
    /// unsure are queued alone and left out.
    fn detect_clips(&mut self, files: Vec<usize>) -> Vec<(usize, String)> {
        let clips: Vec<&PieceInput> = files
            .iter()
            .filter_map(|f| self.partial.get(f).and_then(|p| p.own_window.as_ref()))
            .collect();
        let detected = if clips.len() == files.len() {
            catch_unwind(AssertUnwindSafe(|| {
                self.engine.detect_clip_languages(&clips)
            }))
            .unwrap_or_else(|_| Err(LabelError::Inference("the model panicked".into())))
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        if detected.len() != files.len() {
            // Decoding alone detects again and reports a model failure per file.
            for file in files {
                self.queue_alone(file);
            }
            return Vec::new();
        }
        let mut sure = Vec::new();
        for (file, (language, probability)) in files.into_iter().zip(detected) {
            if probability < MIN_CLIP_LANGUAGE_PROBABILITY {
                log::debug!(
                    "{}: language unsure ({probability:.2}); decoded alone",
                    self.name(file)
                );
                self.queue_alone(file);
                continue;
            }
            if let Some(p) = self.partial.get_mut(&file) {
                p.detected = Some((language.clone(), probability));
            }
            sure.push((file, language));
        }
        sure
    }

    /// Adds a short clip to the open window of its language, closing that window first
    /// when the clip does not fit.
    fn pack_clip(&mut self, file: usize, language: String) {
        let Some(p) = self.partial.get(&file) else {
            return;
        };
        let Some(range) = p.ranges.first().cloned() else {
            return;
        };
        let full = self
            .pack
            .as_ref()
            .and_then(|packs| packs.get(&language))
            .is_some_and(|packer| !packer.fits(range.len()));
        if full {
            self.close_window(&language);
        }
        if let (Some(packs), Some(p)) = (&mut self.pack, self.partial.get(&file)) {
            packs
                .entry(language)
                .or_default()
                .push(file, &p.samples[range]);
        }
    }

    /// Queues every open window of packed clips.
    fn close_windows(&mut self) {
        let languages: Vec<String> = self
            .pack
            .as_ref()
            .map(|packs| packs.keys().cloned().collect())
            .unwrap_or_default();
        for language in languages {
            self.close_window(&language);
        }
    }

    /// Queues the open window of `language` (a lone clip goes as its own window).
    fn close_window(&mut self, language: &str) {
        let Some(packer) = self
            .pack
            .as_mut()
            .and_then(|packs| packs.get_mut(language))
            .filter(|p| !p.is_empty())
        else {
            return;
        };
        let (audio, slots) = packer.take();
        if let [slot] = slots.as_slice() {
            self.queue_alone(slot.file);
            return;
        }
        // Clips grouped by detected language: the window detects again, to confirm.
        let expected_language = (!language.is_empty()).then(|| language.to_string());
        let input = PieceInput {
            features: self.engine.front.window_features(&audio),
            samples: audio.len(),
            language: if expected_language.is_some() {
                None
            } else {
                self.options.language.clone()
            },
            group: slots[0].file,
            without_timestamps: false,
            sound: 0..audio.len(),
            packed_clips: Some(clip_sounds(&slots)),
            judged_voiced_seconds: None,
        };
        let members = slots
            .into_iter()
            .map(|slot| Member { piece: 0, slot })
            .collect();
        self.queue.push(QueuedPiece {
            input,
            members,
            expected_language,
        });
    }

    /// Queues a short clip's own window: it was packed alone, or its packed result was
    /// unclear.
    fn queue_alone(&mut self, file: usize) {
        if let Some(input) = self
            .partial
            .get_mut(&file)
            .and_then(|p| p.own_window.take())
        {
            self.queue.push(QueuedPiece::alone(file, 0, input));
        }
    }

    fn run_batch(&mut self, batch: Vec<QueuedPiece>) {
        let mut members: Vec<(Vec<Member>, Option<String>)> = Vec::with_capacity(batch.len());
        let mut inputs: Vec<PieceInput> = Vec::with_capacity(batch.len());
        for mut q in batch {
            if let [only] = q.members.as_slice() {
                if !self.options.multilingual && q.input.language.is_none() {
                    q.input.language = self.languages.get(&only.slot.file).cloned();
                }
            }
            members.push((q.members, q.expected_language));
            inputs.push(q.input);
        }
        log::debug!(
            "batch of {} windows: {} packed clips, {} plain pieces",
            members.len(),
            members
                .iter()
                .filter(|(m, _)| m.len() > 1)
                .map(|(m, _)| m.len())
                .sum::<usize>(),
            inputs.iter().filter(|i| i.without_timestamps).count()
        );
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.transcribe(&inputs, &self.options)
        }))
        .unwrap_or_else(|_| Err(LabelError::Inference("the model panicked".into())));
        match result {
            Ok(outputs) => {
                for ((members, expected), output) in members.into_iter().zip(outputs) {
                    match members.as_slice() {
                        [only] => self.store(only.slot.file, only.piece, output),
                        _ => self.unpack(&members, &output, expected.as_deref()),
                    }
                }
            }
            Err(message) => self.fail_members(&members, &message),
        }
        self.stream_final_pieces();
        self.finish_complete_files();
    }

    /// Marks every file with a piece in a failed batch as failed.
    fn fail_members(&mut self, members: &[(Vec<Member>, Option<String>)], message: &LabelError) {
        for member in members.iter().flat_map(|(m, _)| m) {
            if let Some(p) = self.partial.get_mut(&member.slot.file) {
                p.error = Some(format!("{}: transcription failed: {message}", p.name));
                p.outputs[member.piece] = Some(PieceOutput {
                    language: String::new(),
                    language_probability: 0.0,
                    segments: Vec::new(),
                });
            }
        }
    }

    /// Labels the files whose pieces all have outputs, unless skipped speech was queued
    /// for them again.
    fn finish_complete_files(&mut self) {
        let complete: Vec<usize> = self
            .partial
            .iter()
            .filter(|(_, p)| p.outputs.iter().all(Option::is_some))
            .map(|(&i, _)| i)
            .collect();
        for index in complete {
            if self.queue_holes(index) || self.queue_sparse_pieces(index) {
                continue;
            }
            let Some(mut p) = self.partial.remove(&index) else {
                continue;
            };
            keep_the_fuller_reading(&mut p);
            if !self.options.word_timestamps {
                // Aligned only to judge the pieces (Note [Sparse pieces read through]).
                for output in p.outputs.iter_mut().flatten() {
                    for segment in &mut output.segments {
                        segment.words = None;
                    }
                }
            }
            self.languages.remove(&index);
            self.served.remove(&index);
            let path = &p.name;
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
                )
                .in_recording(p.speech.as_ref())
                .with_damage(p.damage),
            };
            self.finished.insert(index, label);
        }
    }

    fn store(&mut self, file: usize, piece: usize, output: PieceOutput) {
        self.languages
            .entry(file)
            .or_insert_with(|| output.language.clone());
        if let Some(p) = self.partial.get_mut(&file) {
            p.own_window = None;
            p.outputs[piece] = Some(output);
        }
    }

    /// Gives each clip of a packed window its segments, or queues it alone when its share
    /// is unclear or the window was heard in another language than its clips were detected
    /// in. A clip's language probability is its own detection's.
    fn unpack(&mut self, members: &[Member], output: &PieceOutput, expected: Option<&str>) {
        let shares = if expected.is_none_or(|l| l == output.language) {
            let slots: Vec<Slot> = members.iter().map(|m| m.slot.clone()).collect();
            split_window(output, &slots, self.options.word_timestamps)
        } else {
            vec![None; members.len()]
        };
        for (member, share) in members.iter().zip(shares) {
            match share {
                Some(mut share) => {
                    let detected = self
                        .partial
                        .get(&member.slot.file)
                        .and_then(|p| p.detected.clone());
                    if let Some((_, probability)) = detected {
                        share.language_probability = probability;
                    }
                    self.store(member.slot.file, member.piece, share)
                }
                None => {
                    log::debug!(
                        "{}: share of a packed window unclear; decoded alone",
                        self.name(member.slot.file)
                    );
                    self.queue_alone(member.slot.file)
                }
            }
        }
    }

    /// Whisper sometimes jumps over a sentence inside a window (its next timestamp lands past
    /// it) or stops before the window ends. Stretches of speech that no segment covers are
    /// decoded again as pieces of their own, once. Returns whether any were queued.
    fn queue_holes(&mut self, index: usize) -> bool {
        let language = self.redo_language(index);
        let Some(p) = self.partial.get_mut(&index) else {
            return false;
        };
        // Long recordings are decoded without timestamps: each piece is covered whole.
        let long = p.samples.len() > WINDOW_SAMPLES;
        if p.holes_checked || p.error.is_some() || self.options.without_timestamps || long {
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
        log::debug!(
            "{}: {} stretch(es) of sound no segment covers; decoding them again",
            p.name,
            holes.len()
        );
        for hole in holes {
            let again = Again {
                file: index,
                range: hole,
                language: language.clone(),
                without_timestamps: false,
            };
            again.queue(self.engine, p, &mut self.queue);
        }
        true
    }

    /// The language a stretch decoded again is decoded in: the file's, unless every piece
    /// detects its own.
    fn redo_language(&self, file: usize) -> Option<String> {
        if self.options.multilingual {
            None
        } else {
            self.languages.get(&file).cloned()
        }
    }

    /// Whisper, decoding a long piece without timestamps, sometimes stops early or skips
    /// repeated phrases: the piece's text is far shorter than its speech, or repetitive.
    /// Such pieces are decoded again in parts of about half the piece, cut at pauses, and
    /// the reading with more words is kept (see `keep_the_fuller_reading`). Returns
    /// whether any were queued. A streamed file's pieces were judged as they came in
    /// (`stream_final_pieces`).
    fn queue_sparse_pieces(&mut self, index: usize) -> bool {
        let language = self.redo_language(index);
        let repetition = self.options.compression_ratio_threshold;
        let without_timestamps = self.options.without_timestamps;
        let Some(p) = self.partial.get_mut(&index) else {
            return false;
        };
        if p.sparse_checked || p.error.is_some() || !p.is_plain(without_timestamps) {
            return false;
        }
        p.sparse_checked = true;
        let paces: Vec<(usize, Pace)> = (0..p.ranges.len())
            .filter_map(|i| Some((i, pace_of(p, i, repetition)?)))
            .collect();
        let fullest = fullest_pace(paces.iter().map(|(_, pace)| pace));
        let sparse: Vec<usize> = paces
            .iter()
            .filter(|(_, pace)| pace.is_sparse(fullest))
            .map(|&(i, _)| i)
            .collect();
        for &piece in &sparse {
            redo_in_parts(self.engine, index, p, piece, &language, &mut self.queue);
        }
        !sparse.is_empty()
    }

    /// Streams `file`'s text to `sink` as its pieces become final, rather than all at once
    /// when it is labelled; a file of one window (whose skipped speech is only found once
    /// it is done) sends its text when it is labelled.
    pub(super) fn stream(&mut self, file: usize, sink: TextSink) {
        let Some(p) = self.partial.get_mut(&file) else {
            return;
        };
        let originals = p.ranges.len();
        p.stream = Some(PieceStream {
            sink,
            originals,
            sent: 0,
            spoken: false,
            paces: HashMap::new(),
        });
    }

    /// Note [Streamed pieces]: a streamed long file's pieces are judged for sparseness as
    /// they come in, against the fullest piece so far, rather than all at once against the
    /// file's fullest; each piece's text goes out once it and every piece before it are
    /// final (judged, and a sparse piece's parts decoded and the fuller reading chosen).
    /// Then `queue_sparse_pieces` does not judge the file again, so the label is the text
    /// streamed. A file that fits one batch is judged exactly as unstreamed.
    fn stream_final_pieces(&mut self) {
        let repetition = self.options.compression_ratio_threshold;
        let streamed: Vec<usize> = self
            .partial
            .iter()
            .filter(|(_, p)| p.stream.is_some() && p.error.is_none())
            .map(|(&i, _)| i)
            .collect();
        for index in streamed {
            let language = self.redo_language(index);
            let without_timestamps = self.options.without_timestamps;
            let Some(p) = self.partial.get_mut(&index) else {
                continue;
            };
            if !p.is_plain(without_timestamps) {
                continue;
            }
            p.sparse_checked = true;
            let originals = p.stream.as_ref().map_or(0, |s| s.originals);
            let measured: Vec<(usize, Option<Pace>)> = (0..originals)
                .filter(|&i| p.outputs[i].is_some())
                .filter(|i| p.stream.as_ref().is_some_and(|s| !s.paces.contains_key(i)))
                .map(|i| (i, pace_of(p, i, repetition)))
                .collect();
            let Some(stream) = p.stream.as_mut() else {
                continue;
            };
            stream.paces.extend(measured);
            let fullest = fullest_pace(stream.paces.values().flatten());
            while let Some(piece) = p.stream.as_ref().map(|s| s.sent).filter(|&i| i < originals) {
                if p.outputs[piece].is_none() {
                    break;
                }
                let redone = p.redone.iter().find(|(k, _)| *k == piece).cloned();
                let winner: Vec<usize> = match redone {
                    Some((_, parts)) => {
                        if parts.clone().any(|k| p.outputs[k].is_none()) {
                            break;
                        }
                        let losers = losing_reading(p, piece, parts.clone());
                        std::iter::once(piece)
                            .chain(parts)
                            .filter(|k| !losers.contains(k))
                            .collect()
                    }
                    None => {
                        let pace = p.stream.as_ref().and_then(|s| s.paces.get(&piece).copied());
                        if pace.flatten().is_some_and(|pace| pace.is_sparse(fullest)) {
                            redo_in_parts(self.engine, index, p, piece, &language, &mut self.queue);
                            break;
                        }
                        vec![piece]
                    }
                };
                let text = text_of(p, winner.into_iter());
                if let Some(stream) = p.stream.as_mut() {
                    if !text.is_empty() {
                        let delta = if stream.spoken {
                            format!(" {text}")
                        } else {
                            text
                        };
                        stream.spoken = true;
                        (stream.sink)(delta);
                    }
                    stream.sent += 1;
                }
            }
        }
    }

    /// A file's name, for logs.
    fn name(&self, file: usize) -> &str {
        self.partial.get(&file).map_or("?", |p| p.name.as_str())
    }

    /// Hands out every finished file, in any order.
    pub(super) fn take_finished(&mut self) -> BTreeMap<usize, FileLabel> {
        std::mem::take(&mut self.finished)
    }

    /// Hands out finished files that are next in input order, together.
    pub(super) fn flush(&mut self, sink: &mut dyn FnMut(Vec<LabelEvent>)) {
        let mut events = Vec::new();
        while let Some(label) = self.finished.remove(&self.next_out) {
            events.push(LabelEvent {
                index: self.next_out,
                label,
            });
            self.next_out += 1;
        }
        if !events.is_empty() {
            sink(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::types::test_segment;

    fn output(language: &str, texts: &[&str]) -> PieceOutput {
        PieceOutput {
            language: language.into(),
            language_probability: 1.0,
            segments: texts
                .iter()
                .enumerate()
                .map(|(k, t)| test_segment(k as f64, k as f64 + 1.0, t))
                .collect(),
        }
    }

    #[test]
    fn speech_written_without_spaces_keeps_its_pace() {
        // 20 voiced seconds of Chinese at three characters a second, one clause a segment:
        // by whitespace it was 2 words (0.1 a second, "sparse"), so every Chinese or
        // Japanese piece was decoded again in parts.
        let clause = "我们今天一起去公园散步，天气非常好。";
        let chinese = output("zh", &[&clause.repeat(2), &clause.repeat(2)]);
        let pace = Pace {
            words_per_voiced_second: word_count(&chinese) / 20.0,
            repetitive: false,
            read_through: false,
        };
        assert!((word_count(&chinese) - 64.0).abs() < 1e-9);
        assert!(!pace.is_sparse(pace.words_per_voiced_second));
        // An English piece of the same file at its speaker's pace is not sparse beside it.
        let english = output("en", &["And so, my fellow Americans, ask not"; 8]);
        let english_pace = word_count(&english) / 20.0;
        assert!(!Pace {
            words_per_voiced_second: english_pace,
            repetitive: false,
            read_through: false,
        }
        .is_sparse(pace.words_per_voiced_second));
    }

    /// A piece's output with one word per (start, end).
    fn with_words(spans: &[(f64, f64)]) -> PieceOutput {
        let mut out = output("en", &["words"]);
        out.segments[0].words = Some(
            spans
                .iter()
                .map(|&(start, end)| crate::label::types::Word {
                    start,
                    end,
                    word: " w".into(),
                    probability: 0.9,
                    tokens: 1,
                })
                .collect(),
        );
        out
    }

    /// `seconds` of audio, loud except in the `quiet` spans.
    fn audio(seconds: f64, quiet: &[(f64, f64)]) -> Vec<f32> {
        let rate = f64::from(SAMPLE_RATE);
        (0..(seconds * rate) as usize)
            .map(|i| {
                let t = i as f64 / rate;
                if quiet.iter().any(|&(a, b)| t >= a && t < b) {
                    0.0
                } else {
                    0.1 * (i as f32 * 0.05).sin()
                }
            })
            .collect()
    }

    #[test]
    fn a_slow_piece_is_sparse_only_where_its_words_leave_speech_unread() {
        // Note [Sparse pieces read through]. 20 s of sound, a word every second: read.
        let sound = audio(20.0, &[]);
        let every_second: Vec<(f64, f64)> = (0..20).map(|k| (k as f64, k as f64 + 0.6)).collect();
        assert!(reads_through(&with_words(&every_second), &sound));
        // The same words over the first 10 s only: Whisper stopped early.
        assert!(!reads_through(&with_words(&every_second[..10]), &sound));
        // One word stretched over 5 s of sound: DTW gave it a skipped sentence.
        let mut stretched = every_second.clone();
        stretched.drain(5..10);
        stretched[4].1 = 10.0;
        assert!(!reads_through(&with_words(&stretched), &sound));
        // A long pause between words is silence, not unread speech.
        let paused = audio(20.0, &[(5.0, 10.0)]);
        assert!(reads_through(&with_words(&stretched), &paused));
        // No aligned words: nothing tells, so it does not read through.
        assert!(!reads_through(&output("en", &["words"]), &sound));

        let slow = |read_through, repetitive| Pace {
            words_per_voiced_second: 1.0,
            repetitive,
            read_through,
        };
        assert!(slow(false, false).is_sparse(3.0));
        assert!(!slow(true, false).is_sparse(3.0));
        // Repeats Whisper dropped are judged by the pace alone (the words read through).
        assert!(slow(true, true).is_sparse(3.0));
    }

    #[test]
    fn the_fuller_reading_is_chosen_by_what_it_says() {
        // The piece read as one unspaced sentence, its parts as two spaced halves of it:
        // by whitespace the parts "won" 2 to 1 with less text.
        let whole = output("ja", &["客観的実在の判断的知識が整理するのである"]);
        let parts = output("ja", &["客観的 実在の"]);
        assert!(word_count(&whole) > word_count(&parts));
    }
}
