//! Samples in contract: what leaves the decoder is finite and within ±[`MAX_SAMPLE`].
//!
//! A float WAV can hold NaN, ±Inf or 1e30; those made the resampler panic and, without
//! resampling, reached training batches. NaN becomes silence and ±Inf ±1. Values past
//! 1.0 are real in float files (headroom) and from lossy decoders (inter-sample peaks);
//! FFmpeg, soundfile and librosa keep them, and so do we (hound's test files store integer
//! PCM values as floats: 16,411.0), up to ±[`MAX_SAMPLE`]: beyond that a value only
//! threatens the arithmetic (a fuzzed float WAV gave 1e30, which overflowed the
//! resampler's FFT) and is clamped.

/// Largest magnitude kept (2^20): far above anything a file means as audio, far below what
/// could overflow an FFT of the longest resampler block (2^18 frames; f32 reaches 3e38).
pub const MAX_SAMPLE: f32 = 1_048_576.0;

/// NaN → 0, ±Inf → ±1, and values beyond ±[`MAX_SAMPLE`] clamped to it; anything else is
/// kept.
pub fn bound_samples(samples: &mut [f32]) {
    for s in samples {
        if !s.is_finite() {
            *s = if s.is_nan() { 0.0 } else { s.signum() };
        } else if s.abs() > MAX_SAMPLE {
            *s = s.clamp(-MAX_SAMPLE, MAX_SAMPLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_kept_and_garbage_bounded() {
        let mut x = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.05,
            -16411.0,
            1e30,
            -1e7,
        ];
        bound_samples(&mut x);
        let m = MAX_SAMPLE;
        assert_eq!(x, [0.0, 1.0, -1.0, 1.05, -16411.0, m, -m]);
    }
}
