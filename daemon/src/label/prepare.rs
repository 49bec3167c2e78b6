//! Preparing one input for the model: decode to 16 kHz mono, keep its speech (with VAD),
//! cut it into ≤30 s pieces and compute their features. Runs on worker threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use super::engine::PieceInput;
use super::mel::{SAMPLE_RATE, WINDOW_SAMPLES};
use super::model_loop::judged_voiced_seconds;
use super::pieces::{cut_pieces_within, sound_span};
use super::record::FileLabel;
use super::run::LoadingEngine;
use crate::decode::{load, LoadRequest};
use crate::feed::pool::run_within;
use crate::vad::{speech_ranges, SpeechDetector, SpeechMap, VadOptions};
use crate::{ChannelMode, Quality};
/// A decoded file cut into pieces with their features.
pub(super) struct Prepared {
    pub index: usize,
    /// What results and errors call it.
    pub name: String,
    pub duration: f64,
    pub pieces: Vec<(f64, PieceInput)>,
    /// The 16 kHz audio, kept to re-decode stretches of speech the model skipped; with VAD,
    /// only its speech, back to back.
    pub samples: Vec<f32>,
    /// With VAD: where `samples` lie in the recording.
    pub speech: Option<SpeechMap>,
    /// What lenient decoding met (see Note [Damage rule]); recorded in the label.
    pub damage: Option<String>,
}

/// Why an input could not be prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Not audio we can decode, or damaged: the input's fault.
    Unreadable,
    /// Longer than [`Input::max_seconds`].
    TooLong,
    /// Speech detection or features failed: ours.
    Internal,
}

pub(super) enum Ready {
    File(Prepared),
    Failed {
        index: usize,
        failure: Failure,
        label: FileLabel,
    },
}

impl Ready {
    pub(super) fn index(&self) -> usize {
        match self {
            Ready::File(prepared) => prepared.index,
            Ready::Failed { index, .. } => *index,
        }
    }
}

/// The options labeling detects speech with: a piece of speech never exceeds the model's
/// window (as faster-whisper's batched pipeline forces `max_speech_duration_s` to 30 s).
pub(super) fn labeling_vad_options(options: &VadOptions) -> VadOptions {
    let window = WINDOW_SAMPLES as f32 / SAMPLE_RATE as f32;
    VadOptions {
        max_speech_duration_s: Some(
            options
                .max_speech_duration_s
                .map_or(window, |s| s.min(window)),
        ),
        ..options.clone()
    }
}

/// One input to prepare: where its audio is read from and the name its results and errors
/// carry (the same for files; an upload read from memory has its client's file name).
#[derive(Clone, Copy, Debug)]
pub(super) struct Input<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    /// Longer audio is refused (only what is needed to tell is decoded).
    pub max_seconds: Option<f64>,
    /// Refuse damaged or truncated audio instead of labelling what decodes around it.
    pub strict: bool,
    /// The decode is abandoned past this, as a loader item's is (the item deadline).
    pub deadline: Duration,
}

/// The request labeling decodes with: 16 kHz mono, Whisper's and Silero's rate.
pub fn speech_request() -> LoadRequest {
    LoadRequest {
        sample_rate: Some(SAMPLE_RATE),
        channels: ChannelMode::Mono,
        quality: Quality::Hq,
        ..LoadRequest::default()
    }
}

/// Decodes `input`, finds its speech with `vad`, cuts it into pieces and computes their
/// features (waiting for `engine`, whose front end computes them, only then).
pub(super) fn prepare(
    engine: LoadingEngine,
    vad: Option<&(&SpeechDetector, VadOptions)>,
    index: usize,
    input: Input,
) -> Ready {
    let Input {
        path,
        name,
        max_seconds,
        strict,
        deadline,
    } = input;
    let failed = |failure, duration, message: String| Ready::Failed {
        index,
        failure,
        label: FileLabel::failed(name, duration, message),
    };
    let request = LoadRequest {
        // A little past the limit, to tell a too long input from one exactly at it.
        duration: max_seconds.map(|s| s + 1.0),
        lenient: !strict,
        ..speech_request()
    };
    let owned = path.to_path_buf();
    let decoded = run_within(deadline, move || load(&owned, &request, 1))
        .unwrap_or_else(|failure| Err(failure.for_item(path)));
    let decoded = match decoded {
        Ok(audio) => audio,
        Err(e) => {
            let message = e.to_string().replace(&*path.to_string_lossy(), name);
            return failed(Failure::Unreadable, None, message);
        }
    };
    if let Some(limit) = max_seconds.filter(|&s| decoded.duration() > s) {
        return failed(
            Failure::TooLong,
            None,
            format!("{name}: longer than the limit of {limit} s"),
        );
    }
    let duration = decoded.duration();
    let damage = decoded
        .damage
        .as_ref()
        .map(|d| d.replace(&*path.to_string_lossy(), name));
    let samples = decoded.planes.into_iter().next().unwrap_or_default();
    let (samples, speech) = match vad {
        None => (samples, None),
        Some((detector, vad_options)) => match detector.probabilities(&samples) {
            Ok(probabilities) => {
                let ranges = speech_ranges(&probabilities, samples.len(), vad_options);
                let pad = vad_options.speech_pad_ms as usize * SAMPLE_RATE as usize / 1000;
                let (kept, map) = SpeechMap::keep(&samples, &ranges, SAMPLE_RATE, pad);
                (kept, Some(map))
            }
            Err(e) => return failed(Failure::Internal, Some(duration), format!("{name}: {e}")),
        },
    };
    log::debug!("{name}: decoded and its speech found");
    let Some(engine) = engine() else {
        return failed(
            Failure::Internal,
            Some(duration),
            format!("{name}: the model did not load"),
        );
    };
    let long = samples.len() > WINDOW_SAMPLES;
    let features = catch_unwind(AssertUnwindSafe(|| {
        let seams = speech.as_ref().map(SpeechMap::seams).unwrap_or_default();
        cut_pieces_within(&samples, WINDOW_SAMPLES, &seams)
            .into_iter()
            .filter(|range| !is_silent(&samples[range.clone()]))
            .map(|range| {
                let offset = range.start as f64 / f64::from(SAMPLE_RATE);
                let audio = &samples[range.clone()];
                let piece = PieceInput {
                    features: engine.front.window_features(audio),
                    samples: range.len(),
                    language: None,
                    group: index,
                    without_timestamps: long,
                    sound: sound_span(audio),
                    packed_clips: None,
                    judged_voiced_seconds: long.then(|| judged_voiced_seconds(audio)).flatten(),
                };
                (offset, piece)
            })
            .collect()
    }));
    match features {
        Ok(pieces) => Ready::File(Prepared {
            index,
            name: name.to_string(),
            duration,
            pieces,
            samples,
            speech,
            damage,
        }),
        Err(_) => failed(
            Failure::Internal,
            Some(duration),
            format!("{name}: feature extraction failed"),
        ),
    }
}

/// Whisper invents words ("you", "thank you") for silence; a piece that never rises above
/// −50 dBFS holds no audible speech, so it skips the model and yields no text.
pub(super) fn is_silent(samples: &[f32]) -> bool {
    const PEAK: f32 = 0.003_162; // −50 dBFS
    samples.iter().all(|x| x.abs() < PEAK)
}
