//! One loaded Whisper model and batched decoding of ≤30 s pieces: encode once, detect the
//! language, beam search with temperature fallback, split at timestamp tokens, and align
//! words. Faithful to faster-whisper's decoding rules so results are comparable.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use audiodecode_protocol::TranscribeOptions;
use ct2rs::sys::{
    ComputeType, DetectionResult, Device, StorageView, Whisper, WhisperGenerationResult,
    WhisperOptions,
};

use super::align::{align_words, split_sentences, AlignInput};
use super::error::LabelError;
use super::mel::{MelFrontEnd, HOP, WINDOW_FRAMES};
use super::model::{resolve_model, ModelConfig};
use super::model_loop::{word_count, ALIGN_BELOW_WORDS_PER_VOICED_SECOND};
use super::repetition::{compression_ratio, loop_run};
use super::replicas::Models;
use super::types::{PieceOutput, Segment};
use super::vocab::{Vocab, TIME_PRECISION};

/// Seed of CTranslate2's sampling generator (see `WhisperEngine::load`).
const SAMPLING_SEED: u32 = 0x5eed;

/// Whisper's decoder context; prompt plus output must fit.
const MAX_LENGTH: usize = 448;
/// Clips per language-detection call.
const DETECTION_BATCH: usize = 8;
/// Faster than any speech: text tokens per second of a piece's sound. Fast English runs at
/// ~5 words (~6.5 tokens) a second; a hallucination loop fills the 448-token context,
/// ~15 tokens a second over a 30 s window. See `looks_like_a_loop`.
const MAX_TOKENS_PER_SECOND: f32 = 10.0;
/// The same for text holding one short phrase said over and over: faster than fast speech.
const MAX_LOOPING_TOKENS_PER_SECOND: f32 = 5.0;
/// More tokens than any speech of a piece's length holds: tokens (timestamps included) per
/// second of the piece, plus a few. The fastest speech runs at 7–8 syllables a second and
/// a rare Chinese character takes two or three tokens; a hallucination loop on a 0.5 s clip
/// wrote 443 tokens. See `token_budget`.
const MAX_SPEECH_TOKENS_PER_SECOND: f32 = 25.0;
const SPEECH_TOKEN_SLACK: usize = 32;

/// What selects a loaded model: the same key reuses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub dir: PathBuf,
    pub cuda: bool,
    pub compute_type: String,
    pub threads: usize,
    /// Parts a batch runs in at once (Note [Batches split across CPU replicas]); 1 on GPU.
    pub split: usize,
}

impl ModelKey {
    pub fn from_options(
        options: &TranscribeOptions,
        default_threads: usize,
    ) -> Result<Self, LabelError> {
        let dir = resolve_model(&options.model)?;
        let cuda = match options.device.as_str() {
            "auto" => cuda_devices() > 0,
            "cpu" => false,
            "cuda" => {
                if cuda_devices() == 0 {
                    return Err(LabelError::InvalidOptions(if cfg!(feature = "cuda") {
                        "--device cuda: no CUDA device found".into()
                    } else {
                        "--device cuda: this build has no CUDA support (build with --features cuda)"
                            .into()
                    }));
                }
                true
            }
            other => {
                return Err(LabelError::InvalidOptions(format!(
                    "unknown device '{other}' (auto, cpu or cuda)"
                )))
            }
        };
        let compute_type = match options.compute_type.as_str() {
            "auto" | "default" if cuda => "float16".to_string(),
            "auto" | "default" => "int8".to_string(),
            other => other.to_string(),
        };
        parse_compute_type(&compute_type)?;
        let threads = match options.threads {
            0 => default_threads.max(1),
            n => n as usize,
        };
        Ok(Self {
            split: super::replicas::split_for(cuda, threads),
            dir,
            cuda,
            compute_type,
            threads,
        })
    }
}

fn cuda_devices() -> i32 {
    if cfg!(feature = "cuda") {
        ct2rs::sys::get_device_count(Device::CUDA)
    } else {
        0
    }
}

pub(super) fn parse_compute_type(name: &str) -> Result<ComputeType, LabelError> {
    Ok(match name {
        "int8" => ComputeType::INT8,
        "int8_float32" => ComputeType::INT8_FLOAT32,
        "int8_float16" => ComputeType::INT8_FLOAT16,
        "int8_bfloat16" => ComputeType::INT8_BFLOAT16,
        "int16" => ComputeType::INT16,
        "float16" => ComputeType::FLOAT16,
        "bfloat16" => ComputeType::BFLOAT16,
        "float32" => ComputeType::FLOAT32,
        other => {
            return Err(LabelError::InvalidOptions(format!(
                "unknown compute type '{other}' (auto, int8, int8_float16, float16, float32, …)"
            )))
        }
    })
}

/// One ≤30 s piece ready for the model.
pub struct PieceInput {
    /// `[n_mels, 3000]` log-mel features.
    pub features: Vec<f32>,
    /// Samples of real audio in the piece (the rest of the 30 s window is padding).
    pub samples: usize,
    /// Language to decode in; `None` detects it (once per `group` in a batch).
    pub language: Option<String>,
    /// Pieces of one file share a group, so they share one detected language.
    pub group: usize,
    /// Decode without timestamp tokens: the piece becomes one segment over `sound`.
    /// Pieces of long recordings are decoded this way: fewer tokens, and Whisper does not
    /// jump over sentences as it can when it predicts timestamps.
    pub without_timestamps: bool,
    /// Samples from the first to the last audible moment of the piece.
    pub sound: std::ops::Range<usize>,
    /// A packed window's clips, as their sounds in seconds of the window
    /// (`pack::clip_sounds`): its words are aligned, even when the options do not ask for
    /// word timestamps, when a segment runs across a gap between them, to be cut there
    /// (Note [Packed windows cut between words]).
    pub packed_clips: Option<Vec<(f64, f64)>>,
    /// Voiced seconds of a long file's piece whose pace is judged
    /// (`model_loop::judged_voiced_seconds`): its words are aligned when it decodes slowly,
    /// to tell a slow speaker from skipped speech (Note [Sparse pieces read through]).
    pub judged_voiced_seconds: Option<f64>,
}

impl PieceInput {
    /// Whether its decoded `output` needs word timings.
    fn wants_words(&self, output: &PieceOutput, options: &TranscribeOptions) -> bool {
        !output.segments.is_empty()
            && (options.word_timestamps
                || self
                    .packed_clips
                    .as_deref()
                    .is_some_and(|sounds| super::pack::crosses_a_gap(output, sounds))
                || self.judged_voiced_seconds.is_some_and(|voiced| {
                    word_count(output) / voiced < ALIGN_BELOW_WORDS_PER_VOICED_SECOND
                }))
    }
}

/// What a failed word alignment means for a batch: an error when the user asked for word
/// timestamps; otherwise the words were wanted only to cut packed windows or judge slow
/// pieces, and the text stands without them (those clips are decoded alone, those pieces
/// judged by their pace, as before).
fn text_without_words(
    aligned: Result<(), LabelError>,
    options: &TranscribeOptions,
) -> Result<(), LabelError> {
    match aligned {
        Err(e) if options.word_timestamps => Err(e),
        Err(e) => {
            log::warn!("{e}; the batch's text is kept without words");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

pub struct WhisperEngine {
    /// Its whole model is replaced by `reseed` between blocks (Note [Batches split across CPU replicas]).
    models: Models,
    multilingual: bool,
    /// A call sampled (temperature above 0) since the model was loaded.
    sampled: AtomicBool,
    pub vocab: Vocab,
    pub front: MelFrontEnd,
    config: ModelConfig,
    pub key: ModelKey,
    /// Pieces decoded again at a fallback temperature, since loading (profiling, tests).
    fallback_decodes: std::sync::atomic::AtomicUsize,
}

/// One decoding attempt for one piece.
struct Attempt {
    tokens: Vec<u32>,
    avg_logprob: f32,
    no_speech_prob: f32,
    compression_ratio: f32,
    /// Tokens of text (timestamps and end-of-text left out).
    text_tokens: usize,
    /// The output ran to the decoder's length limit without ending.
    filled_context: bool,
    /// Its text holds one short phrase said over and over (`repetition::loop_run`).
    loops: bool,
    /// It holds more tokens than speech of the piece's length can (`token_budget`).
    outran_speech: bool,
}

impl WhisperEngine {
    pub fn load(key: &ModelKey) -> Result<Self, LabelError> {
        crate::sys::keep_large_allocations();
        // Temperature fallback samples; a fixed seed makes two runs over the same inputs
        // give the same labels (`reseed` makes each block's draws its own).
        ct2rs::set_random_seed(SAMPLING_SEED);
        let config = ModelConfig::read(&key.dir)?;
        let vocab = Vocab::load(&key.dir, &config.lang_ids)?;
        let models = Models::load(key)?;
        let (n_mels, multilingual) =
            models.with_whole(|m| Ok((m.n_mels(), m.is_multilingual())))?;
        let front = MelFrontEnd::new(n_mels);
        Ok(Self {
            multilingual,
            models,
            sampled: AtomicBool::new(false),
            vocab,
            front,
            config,
            key: key.clone(),
            fallback_decodes: Default::default(),
        })
    }

    /// Makes the sampling draws that follow depend only on `seed`, whatever was sampled
    /// before: see Note [Deterministic labeling blocks]. CTranslate2 seeds each of its
    /// worker threads' generators once, from the process-wide seed, at that thread's first
    /// sampling call; a thread that has sampled never takes a new seed. So when the model
    /// has sampled since it was loaded, it is loaded again (fresh threads; about a second
    /// for `base`, paid only after a block that fell back to sampling).
    pub fn reseed(&self, seed: u32) -> Result<(), LabelError> {
        ct2rs::set_random_seed(seed);
        if self.sampled.swap(false, Ordering::SeqCst) || !self.models.is_loaded() {
            self.models.reload_whole(&self.key)?;
        }
        Ok(())
    }

    /// Runs `f` on the whole model (all the threads).
    fn with_model<T>(
        &self,
        f: impl FnOnce(&Whisper) -> Result<T, LabelError>,
    ) -> Result<T, LabelError> {
        self.models.with_whole(f).map_err(|e| match e {
            LabelError::Model(m) => LabelError::Model(format!("{}: {m}", self.key.dir.display())),
            other => other,
        })
    }

    /// Pieces decoded again at a fallback temperature since the model was loaded.
    pub fn fallback_decodes(&self) -> usize {
        self.fallback_decodes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// Checks options against this model before any audio is decoded.
    pub fn check_options(&self, options: &TranscribeOptions) -> Result<(), LabelError> {
        if let Some(lang) = &options.language {
            if self.is_multilingual() && self.vocab.language_token(lang).is_none() {
                return Err(LabelError::InvalidOptions(format!(
                    "unknown language code '{lang}'"
                )));
            }
            if !self.is_multilingual() && lang != "en" {
                return Err(LabelError::InvalidOptions(format!(
                    "the model {} is English-only; it cannot transcribe '{lang}'",
                    self.key.dir.display()
                )));
            }
        }
        match options.task.as_str() {
            "transcribe" => {}
            "translate" if self.is_multilingual() => {}
            "translate" => {
                return Err(LabelError::InvalidOptions(
                    "an English-only model cannot translate".into(),
                ))
            }
            other => {
                return Err(LabelError::InvalidOptions(format!(
                    "unknown task '{other}' (transcribe or translate)"
                )))
            }
        }
        if options.beam_size == 0 || options.temperatures.is_empty() {
            return Err(LabelError::InvalidOptions(
                "beam size must be ≥ 1 and at least one temperature is needed".into(),
            ));
        }
        Ok(())
    }

    /// Decodes a batch of pieces. An error here concerns the whole batch (the model failed).
    /// The batch runs in parts (Note [Batches split across CPU replicas]): each part's pieces are encoded
    /// and beam-searched on their own replica, at once.
    pub fn transcribe(
        &self,
        pieces: &[PieceInput],
        options: &TranscribeOptions,
    ) -> Result<Vec<PieceOutput>, LabelError> {
        if pieces.is_empty() {
            return Ok(Vec::new());
        }
        let parts = self.models.parts(pieces.len());
        let detect = self.needs_detection(pieces, options);
        let t0 = std::time::Instant::now();
        let no_inputs = || vec![(); parts.len()];
        let (encoded, detected): (Vec<StorageView>, Vec<Vec<Vec<DetectionResult>>>) = self
            .models
            .on_parts(&parts, no_inputs(), true, |_, range, (), model| {
                let mut features = stack_features(&pieces[range]);
                let view = self.input_view(&mut features)?;
                let encoded = model
                    .encode(&view, false)
                    .map_err(|e| LabelError::Inference(format!("encoder: {e}")))?;
                let detected = if detect {
                    model
                        .detect_language(&encoded)
                        .map_err(|e| LabelError::Inference(format!("language detection: {e}")))?
                } else {
                    Vec::new()
                };
                Ok((encoded, detected))
            })?
            .into_iter()
            .unzip();
        let detected: Vec<Vec<DetectionResult>> = detected.into_iter().flatten().collect();
        let languages = self.languages(pieces, options, &detected);
        let t1 = std::time::Instant::now();

        let prompts: Vec<Vec<u32>> = languages
            .iter()
            .zip(pieces)
            .map(|((lang, _), piece)| self.prompt(lang, options, plain(piece, options)))
            .collect();
        let attempts = self.decode_with_fallback(pieces, &prompts, &parts, &encoded, options)?;
        let mut outputs = self.piece_outputs(pieces, attempts, &languages, options);
        let t2 = std::time::Instant::now();
        let wanted: Vec<bool> = pieces
            .iter()
            .zip(&outputs)
            .map(|(piece, output)| piece.wants_words(output, options))
            .collect();
        if wanted.contains(&true) {
            let mut rest = outputs.into_iter();
            let per_part: Vec<Vec<PieceOutput>> = parts
                .iter()
                .map(|r| rest.by_ref().take(r.len()).collect())
                .collect();
            outputs = self
                .models
                .on_parts(
                    &parts,
                    per_part,
                    true,
                    |k, range, mut part_outputs, model| {
                        let aligned = self.add_words(
                            model,
                            &pieces[range.clone()],
                            &wanted[range],
                            &mut part_outputs,
                            &encoded[k],
                            options,
                        );
                        text_without_words(aligned, options)?;
                        Ok(part_outputs)
                    },
                )?
                .into_iter()
                .flatten()
                .collect();
            if options.word_timestamps {
                for (output, piece) in outputs.iter_mut().zip(pieces) {
                    if piece.without_timestamps {
                        output.segments = split_sentences(std::mem::take(&mut output.segments));
                    }
                }
            }
        }
        // Per-batch timings: AUDIODECODE_LOG=audiodecode::label=debug.
        log::debug!(
            "batch {} in {} part(s): encode and language {:.3} s, decode {:.3} s, align {:.3} s",
            pieces.len(),
            parts.len(),
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            t2.elapsed().as_secs_f64()
        );
        Ok(outputs)
    }

    /// One attempt per piece: decoded at the first temperature, and again at the next for
    /// the pieces whose attempt failed the thresholds, until one passes or none is left.
    fn decode_with_fallback(
        &self,
        pieces: &[PieceInput],
        prompts: &[Vec<u32>],
        parts: &[Range<usize>],
        encoded: &[StorageView],
        options: &TranscribeOptions,
    ) -> Result<Vec<Option<Attempt>>, LabelError> {
        let mut attempts: Vec<Option<Attempt>> = (0..pieces.len()).map(|_| None).collect();
        let mut fallback_pool: Vec<Vec<Attempt>> = (0..pieces.len()).map(|_| Vec::new()).collect();
        let mut pending: Vec<usize> = (0..pieces.len()).collect();
        for (round, &temperature) in options.temperatures.iter().enumerate() {
            if pending.is_empty() {
                break;
            }
            let results = if round == 0 {
                // Beam search has no draws, so its parts may run at once; sampling may not.
                let parallel = temperature <= 0.0;
                let no_inputs = vec![(); parts.len()];
                self.models
                    .on_parts(parts, no_inputs, parallel, |k, range, (), model| {
                        let budget = batch_budget(&pieces[range.clone()]);
                        let prompts = &prompts[range];
                        self.generate(model, &encoded[k], prompts, budget, temperature, options)
                    })?
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                self.fallback_decodes
                    .fetch_add(pending.len(), std::sync::atomic::Ordering::Relaxed);
                self.generate_again(pieces, prompts, &pending, temperature, options)?
            };
            let batch_ids: Vec<usize> = if round == 0 {
                (0..pieces.len()).collect()
            } else {
                pending.clone()
            };
            let mut still = Vec::new();
            for (mut attempt, piece) in results.into_iter().zip(batch_ids) {
                attempt.outran_speech = attempt.tokens.len() >= token_budget(&pieces[piece]);
                if needs_fallback(&attempt, &pieces[piece], options) {
                    log::debug!(
                        "piece {piece} of the batch fails at temperature {temperature}: \
                         compression ratio {:.2}, mean log prob {:.2}, {} text tokens over \
                         {:.1} s of sound, short-phrase loop {}, past any speech {}",
                        attempt.compression_ratio,
                        attempt.avg_logprob,
                        attempt.text_tokens,
                        pieces[piece].sound.len() as f32 / super::mel::SAMPLE_RATE as f32,
                        attempt.loops,
                        attempt.outran_speech
                    );
                    fallback_pool[piece].push(attempt);
                    still.push(piece);
                } else {
                    attempts[piece] = Some(attempt);
                }
            }
            pending = still;
        }
        for piece in pending {
            attempts[piece] =
                best_failed_attempt(std::mem::take(&mut fallback_pool[piece]), options);
        }
        Ok(attempts)
    }

    /// Decodes the `pending` pieces again at `temperature`.
    fn generate_again(
        &self,
        pieces: &[PieceInput],
        prompts: &[Vec<u32>],
        pending: &[usize],
        temperature: f32,
        options: &TranscribeOptions,
    ) -> Result<Vec<Attempt>, LabelError> {
        // Re-encode only the pieces that need another try (rare).
        let mut sub_features = stack_features(pending.iter().map(|&i| &pieces[i]));
        let sub_view = self.input_view(&mut sub_features)?;
        let sub_prompts: Vec<Vec<u32>> = pending.iter().map(|&i| prompts[i].clone()).collect();
        let budget = batch_budget(pending.iter().map(|&i| &pieces[i]));
        self.with_model(|model| {
            self.generate(model, &sub_view, &sub_prompts, budget, temperature, options)
        })
    }

    /// Each piece's language and segments; a piece without an attempt, or heard as
    /// silence, has none.
    fn piece_outputs(
        &self,
        pieces: &[PieceInput],
        attempts: Vec<Option<Attempt>>,
        languages: &[(String, f32)],
        options: &TranscribeOptions,
    ) -> Vec<PieceOutput> {
        let mut outputs = Vec::with_capacity(pieces.len());
        for (i, attempt) in attempts.into_iter().enumerate() {
            let (language, language_probability) = languages[i].clone();
            let segments = match attempt {
                Some(a) if !self.is_no_speech(&a, options) => {
                    self.segments(&a, &pieces[i], options)
                }
                _ => Vec::new(),
            };
            outputs.push(PieceOutput {
                language,
                language_probability,
                segments,
            });
        }
        outputs
    }

    /// Language and probability of each clip, from an encoder pass over the clip's own
    /// frames rather than a padded 30 s window (CTranslate2 accepts shorter inputs): clips
    /// of 2–15 s cost a fraction of a window each, so they can be detected one by one and
    /// then packed with clips of their language. Clips of similar length share a call,
    /// padded with 0.0 features as faster-whisper pads.
    pub fn detect_clip_languages(
        &self,
        clips: &[&PieceInput],
    ) -> Result<Vec<(String, f32)>, LabelError> {
        let n_mels = self.front.n_mels();
        let frames_of = |p: &PieceInput| p.samples.div_ceil(HOP).clamp(2, WINDOW_FRAMES);
        let mut order: Vec<usize> = (0..clips.len()).collect();
        order.sort_by_key(|&i| frames_of(clips[i]));
        let mut found = vec![("en".to_string(), 0.0f32); clips.len()];
        for group in order.chunks(DETECTION_BATCH) {
            let frames = group
                .iter()
                .map(|&i| frames_of(clips[i]))
                .max()
                .unwrap_or(2);
            let frames = frames.next_multiple_of(2);
            // The group's parts on the split replicas at once (Note [Batches split across
            // CPU replicas]); every part padded to the group's length, as one call would.
            let parts = self.models.parts(group.len());
            let no_inputs = vec![(); parts.len()];
            let detected: Vec<_> = self
                .models
                .on_parts(&parts, no_inputs, true, |_, range, (), model| {
                    let part = &group[range];
                    let mut features = vec![0.0f32; part.len() * n_mels * frames];
                    for (k, &i) in part.iter().enumerate() {
                        let own = frames_of(clips[i]);
                        for m in 0..n_mels {
                            let src =
                                &clips[i].features[m * WINDOW_FRAMES..m * WINDOW_FRAMES + own];
                            let at = (k * n_mels + m) * frames;
                            features[at..at + own].copy_from_slice(src);
                        }
                    }
                    let shape = [part.len(), n_mels, frames];
                    let view = StorageView::new(&shape, &mut features, Device::CPU)
                        .map_err(|e| LabelError::Inference(format!("model input: {e}")))?;
                    model
                        .detect_language(&view)
                        .map_err(|e| LabelError::Inference(format!("language detection: {e}")))
                })?
                .into_iter()
                .flatten()
                .collect();
            for (&i, d) in group.iter().zip(detected) {
                if let Some(best) = d.first() {
                    if let Some(code) = self.vocab.language_of_token(&best.language) {
                        found[i] = (code.to_string(), best.probability);
                    }
                }
            }
        }
        Ok(found)
    }

    /// A window whose no-speech probability is high and whose text is unlikely is silence.
    fn is_no_speech(&self, a: &Attempt, options: &TranscribeOptions) -> bool {
        let quiet = options
            .no_speech_threshold
            .is_some_and(|t| a.no_speech_prob > t);
        let unlikely = options.log_prob_threshold.is_none_or(|t| a.avg_logprob < t);
        quiet && unlikely
    }

    /// Whether the batch's languages are detected from its encoder output.
    fn needs_detection(&self, pieces: &[PieceInput], options: &TranscribeOptions) -> bool {
        self.is_multilingual()
            && (options.multilingual
                || (options.language.is_none() && pieces.iter().any(|p| p.language.is_none())))
    }

    /// Language and probability per piece: given, English-only, or detected once per group
    /// (`detected`: each piece's detection results, empty when not detected).
    fn languages(
        &self,
        pieces: &[PieceInput],
        options: &TranscribeOptions,
        detected: &[Vec<DetectionResult>],
    ) -> Vec<(String, f32)> {
        if !self.is_multilingual() {
            return vec![("en".to_string(), 1.0); pieces.len()];
        }
        if let (Some(lang), false) = (&options.language, options.multilingual) {
            return vec![(lang.clone(), 1.0); pieces.len()];
        }
        let best = |i: usize| -> (String, f32) {
            detected
                .get(i)
                .and_then(|d| d.first())
                .and_then(|d| {
                    let code = self.vocab.language_of_token(&d.language)?;
                    Some((code.to_string(), d.probability))
                })
                .unwrap_or_else(|| ("en".to_string(), 0.0))
        };
        let mut group_first: std::collections::HashMap<usize, usize> = Default::default();
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                if options.multilingual {
                    return best(i);
                }
                match &piece.language {
                    Some(lang) => (lang.clone(), 1.0),
                    None => best(*group_first.entry(piece.group).or_insert(i)),
                }
            })
            .collect()
    }

    fn prompt(&self, language: &str, options: &TranscribeOptions, plain: bool) -> Vec<u32> {
        let v = &self.vocab;
        let mut prompt = Vec::new();
        let previous: Vec<u32> = options
            .initial_prompt
            .as_deref()
            .map(|p| v.encode(&format!(" {}", p.trim())))
            .unwrap_or_default();
        let hotwords: Vec<u32> = options
            .hotwords
            .as_deref()
            .map(|h| v.encode(&format!(" {}", h.trim())))
            .unwrap_or_default();
        if !previous.is_empty() || !hotwords.is_empty() {
            prompt.push(v.sot_prev);
            let half = MAX_LENGTH / 2 - 1;
            prompt.extend(hotwords.iter().take(half));
            let skip = previous.len().saturating_sub(half);
            prompt.extend(&previous[skip..]);
        }
        prompt.extend(self.sot_sequence(language, options));
        if plain {
            prompt.push(v.no_timestamps);
        }
        prompt
    }

    /// Start of transcript, then language and task on multilingual models.
    fn sot_sequence(&self, language: &str, options: &TranscribeOptions) -> Vec<u32> {
        let v = &self.vocab;
        let mut seq = vec![v.sot];
        if self.is_multilingual() {
            seq.extend(v.language_token(language));
            let task = if options.task == "translate" {
                v.translate
            } else {
                v.transcribe
            };
            seq.extend(task);
        }
        seq
    }

    /// A `[batch, n_mels, 3000]` model input over stacked features.
    fn input_view<'a>(&self, features: &'a mut [f32]) -> Result<StorageView<'a>, LabelError> {
        let per_piece = self.front.n_mels() * WINDOW_FRAMES;
        let shape = [
            features.len() / per_piece,
            self.front.n_mels(),
            WINDOW_FRAMES,
        ];
        StorageView::new(&shape, features, Device::CPU)
            .map_err(|e| LabelError::Inference(format!("model input: {e}")))
    }

    fn suppress_tokens(&self, options: &TranscribeOptions) -> Vec<i32> {
        let mut tokens: Vec<i32> = Vec::new();
        for &t in &options.suppress_tokens {
            if t == -1 {
                tokens.extend(&self.config.suppress_ids);
            } else if t >= 0 {
                tokens.push(t);
            }
        }
        let v = &self.vocab;
        let specials = [
            v.transcribe,
            v.translate,
            Some(v.sot),
            Some(v.sot_prev),
            v.sot_lm,
            v.no_speech,
        ];
        tokens.extend(specials.into_iter().flatten().map(|t| t as i32));
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    /// Decodes a batch; `budget` bounds the tokens generated after each prompt (the most
    /// any of the batch's pieces can hold, `token_budget`).
    fn generate(
        &self,
        model: &Whisper,
        features: &StorageView,
        prompts: &[Vec<u32>],
        budget: usize,
        temperature: f32,
        options: &TranscribeOptions,
    ) -> Result<Vec<Attempt>, LabelError> {
        let longest_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let ct2_options = self.whisper_options(temperature, longest_prompt, budget, options);
        let token_prompts: Vec<Vec<String>> = prompts
            .iter()
            .map(|p| p.iter().map(|&t| self.vocab.token_string(t)).collect())
            .collect();
        if temperature > 0.0 {
            self.sampled.store(true, Ordering::SeqCst);
        }
        let results = model
            .generate(features, &token_prompts, &ct2_options)
            .map_err(|e| LabelError::Inference(format!("decoder: {e}")))?;
        let room = ct2_options.max_length.saturating_sub(longest_prompt + 1);
        Ok(results
            .into_iter()
            .map(|r| self.attempt_from(r, room, options))
            .collect())
    }

    /// CTranslate2's decoding options: beam search at temperature 0, sampling above it.
    fn whisper_options(
        &self,
        temperature: f32,
        longest_prompt: usize,
        budget: usize,
        options: &TranscribeOptions,
    ) -> WhisperOptions {
        let context = MAX_LENGTH.max(longest_prompt + 1);
        let sampling = temperature > 0.0;
        WhisperOptions {
            beam_size: if sampling {
                1
            } else {
                options.beam_size as usize
            },
            patience: options.patience,
            length_penalty: options.length_penalty,
            repetition_penalty: options.repetition_penalty,
            no_repeat_ngram_size: options.no_repeat_ngram_size as usize,
            max_length: (longest_prompt + 1 + budget).min(context),
            sampling_topk: if sampling { 0 } else { 1 },
            sampling_temperature: if sampling { temperature } else { 1.0 },
            num_hypotheses: if sampling {
                options.best_of.max(1) as usize
            } else {
                1
            },
            return_scores: true,
            return_logits_vocab: false,
            return_no_speech_prob: true,
            max_initial_timestamp_index: (f64::from(options.max_initial_timestamp) / TIME_PRECISION)
                .round() as usize,
            suppress_blank: options.suppress_blank,
            suppress_tokens: self.suppress_tokens(options),
        }
    }

    /// The best hypothesis of one result with the scores the fallback rules judge; `room`
    /// is how many tokens the decoder could produce after the prompt.
    fn attempt_from(
        &self,
        r: WhisperGenerationResult,
        room: usize,
        options: &TranscribeOptions,
    ) -> Attempt {
        let tokens: Vec<u32> = r
            .sequences_ids
            .first()
            .map(|s| s.iter().map(|&t| t as u32).collect())
            .unwrap_or_default();
        let score = r.scores.first().copied().unwrap_or(f32::NEG_INFINITY);
        // CTranslate2 returns the length-normalised score; recover the mean log
        // probability over tokens plus end-of-text, as faster-whisper does.
        let len = tokens.len() as f32;
        let cumulative = score * len.powf(options.length_penalty);
        let avg_logprob = cumulative / (len + 1.0);
        let text = self.vocab.decode(&tokens);
        let text_only: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.vocab.eot)
            .collect();
        Attempt {
            compression_ratio: compression_ratio(text.trim()),
            text_tokens: text_only.len(),
            loops: loop_run(&text_only) > 0,
            filled_context: tokens.len() >= room,
            outran_speech: false,
            tokens,
            avg_logprob,
            no_speech_prob: r.no_speech_prob,
        }
    }

    /// Splits a piece's tokens into segments at consecutive timestamp tokens.
    fn segments(
        &self,
        a: &Attempt,
        piece: &PieceInput,
        options: &TranscribeOptions,
    ) -> Vec<Segment> {
        let v = &self.vocab;
        let duration = piece.samples as f64 / f64::from(super::mel::SAMPLE_RATE);
        let mut segments = Vec::new();
        let mut last_end = 0.0f64;
        for (start, end, tokens) in self.spans(a, piece, options) {
            let text = v.decode(&tokens);
            if text.trim().is_empty() {
                continue;
            }
            // Never backwards, never past the audio.
            let start = start.max(last_end).min(duration);
            let end = end.min(duration).max(start);
            last_end = end;
            segments.push(Segment {
                start,
                end,
                text,
                tokens,
                avg_logprob: a.avg_logprob,
                no_speech_prob: a.no_speech_prob,
                compression_ratio: a.compression_ratio,
                language: None,
                words: None,
            });
        }
        segments
    }

    /// (start, end, text tokens) of each span between timestamp tokens, in seconds; one
    /// span over the piece's sound when it was decoded without timestamps.
    fn spans(
        &self,
        a: &Attempt,
        piece: &PieceInput,
        options: &TranscribeOptions,
    ) -> Vec<(f64, f64, Vec<u32>)> {
        let v = &self.vocab;
        let rate = f64::from(super::mel::SAMPLE_RATE);
        let duration = piece.samples as f64 / rate;
        let ts = |t: u32| f64::from(t - v.timestamp_begin()) * TIME_PRECISION;
        let mut spans: Vec<(f64, f64, Vec<u32>)> = Vec::new();
        if plain(piece, options) || !a.tokens.iter().any(|&t| v.is_timestamp(t)) {
            let text: Vec<u32> = a.tokens.iter().copied().filter(|&t| t < v.eot).collect();
            let (start, end) = (
                piece.sound.start as f64 / rate,
                piece.sound.end as f64 / rate,
            );
            spans.push((start, end.max(start), text));
        } else {
            let mut start: Option<f64> = None;
            let mut text: Vec<u32> = Vec::new();
            for &t in &a.tokens {
                if v.is_timestamp(t) {
                    match start {
                        None => start = Some(ts(t)),
                        Some(s) if !text.is_empty() => {
                            spans.push((s, ts(t), std::mem::take(&mut text)));
                            start = None;
                        }
                        // Two timestamps with nothing between: the later one opens.
                        Some(_) => start = Some(ts(t)),
                    }
                } else if t < v.eot {
                    text.push(t);
                }
            }
            if !text.is_empty() {
                // Text after the last timestamp runs to the end of the piece.
                spans.push((start.unwrap_or(0.0), duration, text));
            }
        }
        spans
    }

    /// Word timings from the decoder's cross-attention, aligned by CTranslate2 (DTW), for
    /// the pieces `wanted` marks (`PieceInput::wants_words`). Every call takes the whole
    /// batch, so the batch's encoder output is used as it is (a subset would have to be
    /// encoded again); a piece outside the call's start sequence gets a one-token
    /// placeholder, not read.
    fn add_words(
        &self,
        model: &Whisper,
        pieces: &[PieceInput],
        wanted: &[bool],
        outputs: &mut [PieceOutput],
        encoded: &StorageView,
        options: &TranscribeOptions,
    ) -> Result<(), LabelError> {
        let with_text: Vec<usize> = (0..outputs.len()).filter(|&i| wanted[i]).collect();
        if with_text.is_empty() {
            return Ok(());
        }
        let frames: Vec<usize> = pieces
            .iter()
            .map(|p| p.samples.div_ceil(HOP).clamp(1, WINDOW_FRAMES))
            .collect();
        let by_sequence = self.group_by_start_sequence(&with_text, outputs, options);
        for (sequence, members) in by_sequence {
            let mut text_tokens = vec![vec![self.vocab.eot as usize]; pieces.len()];
            for &k in &members {
                let i = with_text[k];
                text_tokens[i] = outputs[i]
                    .segments
                    .iter()
                    .flat_map(|s| s.tokens.iter().map(|&t| t as usize))
                    .collect();
            }
            let results = model
                .align(encoded, &sequence, &text_tokens, &frames, 7)
                .map_err(|e| LabelError::Inference(format!("word alignment: {e}")))?;
            for &k in &members {
                let i = with_text[k];
                let Some(result) = results.get(i) else {
                    continue;
                };
                let input = AlignInput {
                    alignments: result
                        .alignments
                        .iter()
                        .map(|a| (a.token_x, a.frame_x))
                        .collect(),
                    token_probs: &result.text_token_probs,
                };
                align_words(&self.vocab, &mut outputs[i], input);
            }
        }
        Ok(())
    }

    /// Indices into `with_text` grouped by their start sequence: alignment uses one start
    /// sequence per call, so it is called once per language/task.
    fn group_by_start_sequence(
        &self,
        with_text: &[usize],
        outputs: &[PieceOutput],
        options: &TranscribeOptions,
    ) -> std::collections::BTreeMap<Vec<usize>, Vec<usize>> {
        let mut by_sequence: std::collections::BTreeMap<Vec<usize>, Vec<usize>> =
            Default::default();
        for (k, &i) in with_text.iter().enumerate() {
            by_sequence
                .entry(
                    self.sot_sequence(&outputs[i].language, options)
                        .into_iter()
                        .map(|t| t as usize)
                        .collect(),
                )
                .or_default()
                .push(k);
        }
        by_sequence
    }
}

/// Whether an attempt is too repetitive or too unlikely to keep, unless it is silence.
/// Repetitive text is a failure only when it is a loop (see `looks_like_a_loop`): speech
/// that repeats itself (a chorus, a list, a looped announcement) compresses as well as a
/// hallucination, and falling back on it ran every temperature with best-of-5 sampling on
/// every piece (Note [Fallback without a storm]).
fn needs_fallback(attempt: &Attempt, piece: &PieceInput, options: &TranscribeOptions) -> bool {
    let too_repetitive = options.compression_ratio_threshold.is_some_and(|t| {
        attempt.outran_speech
            || (attempt.compression_ratio > t || attempt.loops) && looks_like_a_loop(attempt, piece)
    });
    let too_unlikely = options
        .log_prob_threshold
        .is_some_and(|t| attempt.avg_logprob < t);
    let silence = options
        .no_speech_threshold
        .is_some_and(|t| attempt.no_speech_prob > t)
        && too_unlikely;
    (too_repetitive || too_unlikely) && !silence
}

/// The most tokens speech of `piece`'s length can take (`MAX_SPEECH_TOKENS_PER_SECOND`):
/// an attempt that reaches it is no reading of speech, so generating past it only spends
/// time, most on the short clips hallucinations loop on (a loop on a 0.5 s clip costs a
/// full context at each of six temperatures, five samples each).
fn token_budget(piece: &PieceInput) -> usize {
    let seconds = piece.samples as f32 / super::mel::SAMPLE_RATE as f32;
    (seconds * MAX_SPEECH_TOKENS_PER_SECOND).ceil() as usize + SPEECH_TOKEN_SLACK
}

/// The budget of a batch: its longest piece's.
fn batch_budget<'a>(pieces: impl IntoIterator<Item = &'a PieceInput>) -> usize {
    pieces.into_iter().map(token_budget).max().unwrap_or(0)
}

/// A hallucination loop repeats until the decoder's length limit, or at least faster than
/// anyone speaks; repeated speech keeps the pace of speech. A loop of one short phrase
/// (`Attempt::loops`) can stay under that pace ("yeah," a hundred times over 26 s is ~7
/// tokens a second), so with one the bar is the pace of fast speech; a phrase really said
/// over and over ("thank you" twelve times, "no" twenty-five) runs at 2–3.
fn looks_like_a_loop(attempt: &Attempt, piece: &PieceInput) -> bool {
    let sound_seconds = (piece.sound.len() as f32 / super::mel::SAMPLE_RATE as f32).max(1.0);
    let pace = attempt.text_tokens as f32 / sound_seconds;
    attempt.filled_context
        || pace > MAX_TOKENS_PER_SECOND
        || attempt.loops && pace > MAX_LOOPING_TOKENS_PER_SECOND
}

/// Every temperature failed: keep the most likely attempt, preferring ones that are not
/// repetitive.
fn best_failed_attempt(pool: Vec<Attempt>, options: &TranscribeOptions) -> Option<Attempt> {
    let not_repetitive = |a: &Attempt| {
        !a.outran_speech
            && options
                .compression_ratio_threshold
                .is_none_or(|t| a.compression_ratio <= t && !a.loops)
    };
    let any_ok = pool.iter().any(not_repetitive);
    pool.into_iter()
        .filter(|a| !any_ok || not_repetitive(a))
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
}

/// Whether a piece is decoded without timestamp tokens (one segment over its sound).
fn plain(piece: &PieceInput, options: &TranscribeOptions) -> bool {
    piece.without_timestamps || options.without_timestamps
}

/// The features of several pieces back to back, `[batch, n_mels, 3000]`.
fn stack_features<'a>(pieces: impl IntoIterator<Item = &'a PieceInput>) -> Vec<f32> {
    let mut all = Vec::new();
    for p in pieces {
        all.extend_from_slice(&p.features);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_alignment_fails_the_batch_only_when_words_were_asked_for() {
        let failed = || Err(LabelError::Inference("word alignment: bad shape".into()));
        let mut options = TranscribeOptions::default();
        assert!(text_without_words(failed(), &options).is_ok());
        options.word_timestamps = true;
        assert!(text_without_words(failed(), &options).is_err());
        assert!(text_without_words(Ok(()), &options).is_ok());
    }

    fn piece(seconds: usize) -> PieceInput {
        let samples = seconds * super::super::mel::SAMPLE_RATE as usize;
        PieceInput {
            features: Vec::new(),
            samples,
            language: None,
            group: 0,
            without_timestamps: false,
            sound: 0..samples,
            packed_clips: None,
            judged_voiced_seconds: None,
        }
    }

    fn attempt(compression_ratio: f32, text_tokens: usize, loops: bool) -> Attempt {
        Attempt {
            tokens: Vec::new(),
            avg_logprob: -0.3,
            no_speech_prob: 0.01,
            compression_ratio,
            text_tokens,
            filled_context: false,
            loops,
            outran_speech: false,
        }
    }

    #[test]
    fn a_short_phrase_looping_falls_back_and_repeated_speech_does_not() {
        let checked = TranscribeOptions::default();
        // Without the repetition check, a loop is kept as the user asked.
        let unchecked = TranscribeOptions {
            compression_ratio_threshold: None,
            ..TranscribeOptions::default()
        };
        // (ratio, text tokens, short-phrase loop, seconds, options, falls back)
        let cases = [
            // A sentence read five times over a 30 s piece: repetitive, at speech's pace.
            (3.1, 90, false, 30, &checked, false),
            // "yeah," a hundred times: a loop at the pace of speech, caught by its phrase.
            (12.0, 215, true, 30, &checked, true),
            // "Thank you." said twelve times over 13 s: repeated at a speaker's pace.
            (6.0, 36, true, 13, &checked, false),
            // Faster than anyone speaks.
            (3.1, 400, false, 30, &checked, true),
            (12.0, 215, true, 30, &unchecked, false),
        ];
        for (ratio, tokens, loops, seconds, options, falls_back) in cases {
            let a = attempt(ratio, tokens, loops);
            assert_eq!(
                needs_fallback(&a, &piece(seconds), options),
                falls_back,
                "ratio {ratio}, {tokens} tokens over {seconds} s, loop {loops}"
            );
        }
    }

    #[test]
    fn generation_stops_where_no_speech_of_the_pieces_length_could_reach() {
        // A window of 30 s keeps Whisper's whole context; a 0.5 s clip gets tens of tokens.
        assert!(token_budget(&piece(30)) + 4 >= MAX_LENGTH);
        let half_second = PieceInput {
            samples: 8_000,
            ..piece(1)
        };
        assert!(token_budget(&half_second) < 50);
        // Fast Chinese of 8 s, 8 characters a second at two tokens each, with a timestamp
        // pair a second, stays under the budget.
        assert!(8 * (16 + 2) < token_budget(&piece(8)));
        assert_eq!(
            batch_budget(&[half_second, piece(8)]),
            token_budget(&piece(8))
        );

        let mut past = attempt(1.2, 40, false);
        past.outran_speech = true;
        let checked = TranscribeOptions::default();
        assert!(needs_fallback(&past, &piece(1), &checked));
        let unchecked = TranscribeOptions {
            compression_ratio_threshold: None,
            ..TranscribeOptions::default()
        };
        assert!(!needs_fallback(&past, &piece(1), &unchecked));
        // After every temperature, a reading that stayed within speech is kept over it.
        past.avg_logprob = -0.1;
        let mut within = attempt(1.0, 3, false);
        within.avg_logprob = -1.5;
        let kept = best_failed_attempt(vec![past, within], &checked).unwrap();
        assert!(!kept.outran_speech);
    }

    #[test]
    fn the_kept_attempt_after_every_fallback_is_not_a_loop_if_one_is_not() {
        let options = TranscribeOptions::default();
        let mut looping = attempt(2.0, 200, true);
        looping.avg_logprob = -0.1;
        let mut plain = attempt(1.5, 60, false);
        plain.avg_logprob = -0.9;
        let kept = best_failed_attempt(vec![looping, plain], &options).unwrap();
        assert!(!kept.loops);
    }
}
