//! Bounds on what a file or request may declare. See Note [Resource limits].
//!
//! Every header field that sizes an allocation or a loop is checked here before anything
//! is allocated: a corrupt 268-byte WAV declaring 4,294,967,295 Hz made the resampler ask
//! for 17 GB and aborted the daemon. Out-of-range values are typed errors naming the file
//! and the field, never a panic or an abort.

use std::path::Path;

use crate::error::DecodeError;

/// Lowest sample rate accepted, in a file or as an output rate. Real audio starts at
/// 4-8 kHz; below 1 kHz a corrupt header is far likelier than a recording.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate accepted (the highest PCM rate in common use, 768 kHz).
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// Most channels accepted: 7th-order ambisonics has 64; WAVE_FORMAT_EXTENSIBLE names 18.
pub const MAX_CHANNELS: usize = 64;
/// A declared length above this (one week) is treated as unknown rather than trusted.
pub const MAX_DECLARED_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// Largest FFT block (frames per channel) the resampler may set up for a rate pair. Real
/// rate pairs need at most a few thousand; a pair of large coprime rates would need millions.
pub const MAX_RESAMPLER_BLOCK: usize = 1 << 18;

/// The sample rate a file declares, checked.
pub fn check_file_rate(path: &Path, rate: u32) -> Result<u32, DecodeError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(DecodeError::Corrupt {
            path: path.into(),
            at_seconds: 0.0,
            reason: format!(
                "header sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
            ),
        })
    }
}

/// The channel count a file declares, checked.
pub fn check_file_channels(path: &Path, channels: usize) -> Result<usize, DecodeError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(channels)
    } else {
        Err(DecodeError::Corrupt {
            path: path.into(),
            at_seconds: 0.0,
            reason: format!("header channel count {channels} is outside 1..={MAX_CHANNELS}"),
        })
    }
}

/// A requested output rate, checked.
pub fn check_output_rate(path: &Path, rate: u32) -> Result<u32, DecodeError> {
    if (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(DecodeError::invalid(
            path,
            format!(
                "target sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
            ),
        ))
    }
}

/// Declared frames, or `None` when they would mean more than [`MAX_DECLARED_SECONDS`].
pub fn plausible_frames(frames: Option<u64>, rate: u32) -> Option<u64> {
    frames.filter(|&f| f as f64 <= MAX_DECLARED_SECONDS * f64::from(rate))
}
