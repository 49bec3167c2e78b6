//! Samples in contract: what leaves the decoder is finite, and float PCM is in [-1, 1].
//!
//! A float WAV can hold NaN, ±Inf or 1e30; those made the resampler panic and, without
//! resampling, reached training batches. Float PCM is clamped (what soundfile's integer
//! conversion and FFmpeg's s16 output do); NaN becomes silence. Lossy decoders may
//! legitimately overshoot 1.0 a little (inter-sample peaks, as FFmpeg's float output does),
//! so their output only has non-finite values replaced.

/// NaN → 0, everything else clamped to [-1, 1] (±Inf → ±1).
pub fn clamp_float_pcm(samples: &mut [f32]) {
    for s in samples {
        *s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
    }
}

/// NaN → 0 and ±Inf → ±1; finite values are kept.
pub fn replace_non_finite(samples: &mut [f32]) {
    for s in samples {
        if !s.is_finite() {
            *s = if s.is_nan() { 0.0 } else { s.signum() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_pcm_is_clamped_and_nan_silenced() {
        let mut x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -2.0, 0.5];
        clamp_float_pcm(&mut x);
        assert_eq!(x, [0.0, 1.0, -1.0, 1.0, -1.0, 0.5]);
    }

    #[test]
    fn codec_output_keeps_small_overshoots() {
        let mut x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.05, -0.5];
        replace_non_finite(&mut x);
        assert_eq!(x, [0.0, 1.0, -1.0, 1.05, -0.5]);
    }
}
