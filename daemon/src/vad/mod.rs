//! Voice activity detection: where a recording holds speech.
//!
//! [`silero`] runs Silero VAD (its ONNX model, through ONNX Runtime opened at run time) to
//! get one speech probability per 32 ms; [`segments`] turns probabilities into padded speech
//! ranges with faster-whisper's rules and options; [`speech_map`] keeps only the speech of a
//! recording for the model and maps times back to the recording. Labeling uses all three
//! (see Note [VAD in labeling]); `audiodecode vad` prints the ranges.

#![deny(unsafe_code)]

pub mod segments;
pub mod silero;
pub mod speech_map;

pub use audiodecode_protocol::VadOptions;
pub use segments::speech_ranges;
pub use silero::SpeechDetector;
pub use speech_map::SpeechMap;

/// What can keep voice activity detection from running.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    /// ONNX Runtime or the Silero model is not installed; the message says where we looked.
    #[error("{0}")]
    Missing(String),
    /// The runtime failed to load the model or to run it.
    #[error("voice activity detection failed: {0}")]
    Runtime(String),
    /// Options outside their ranges.
    #[error("{0}")]
    InvalidOptions(String),
}

/// Checks options before any audio is read.
pub fn check_options(o: &VadOptions) -> Result<(), VadError> {
    let bad = |what: &str| Err(VadError::InvalidOptions(format!("VAD option {what}")));
    if !(0.0..=1.0).contains(&o.threshold) {
        return bad("threshold must be within 0..1");
    }
    if o.neg_threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return bad("neg_threshold must be within 0..1");
    }
    if o.max_speech_duration_s
        .is_some_and(|s| s.is_nan() || s <= 0.1)
    {
        return bad("max_speech_duration_s must be above 0.1 s");
    }
    Ok(())
}
