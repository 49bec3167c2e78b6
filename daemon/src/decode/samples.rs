//! Samples in contract: what leaves the decoder is finite, and float PCM is in [-1, 1].
//!
//! A float WAV can hold NaN, ±Inf or 1e30; those made the resampler panic and, without
//! resampling, reached training batches. Float PCM is clamped (what soundfile's integer
//! conversion and FFmpeg's s16 output do); NaN becomes silence. Lossy decoders may
//! legitimately overshoot 1.0 a little (inter-sample peaks, as FFmpeg's float output does),
//! so their output keeps anything within ±[`MAX_CODEC_SAMPLE`]; beyond that it is garbage
//! (a fuzzed float WAV through FFmpeg gave 1e30, which overflowed the resampler's FFT).

/// NaN → 0, everything else clamped to [-1, 1] (±Inf → ±1).
pub fn clamp_float_pcm(samples: &mut [f32]) {
    for s in samples {
        *s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
    }
}

/// Largest magnitude kept from a codec (+30 dBFS): far above any real overshoot, far
/// below what could overflow an FFT of the longest resampler block.
pub const MAX_CODEC_SAMPLE: f32 = 32.0;

/// NaN → 0, ±Inf → ±1, and values beyond ±[`MAX_CODEC_SAMPLE`] clamped to it; anything
/// else is kept.
pub fn bound_codec_output(samples: &mut [f32]) {
    for s in samples {
        if !s.is_finite() {
            *s = if s.is_nan() { 0.0 } else { s.signum() };
        } else if s.abs() > MAX_CODEC_SAMPLE {
            *s = s.clamp(-MAX_CODEC_SAMPLE, MAX_CODEC_SAMPLE);
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
        let mut x = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.05,
            -0.5,
            1e30,
            -40.0,
        ];
        bound_codec_output(&mut x);
        assert_eq!(x, [0.0, 1.0, -1.0, 1.05, -0.5, 32.0, -32.0]);
    }
}
