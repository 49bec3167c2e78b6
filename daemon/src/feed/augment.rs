//! Augmentations, applied by the workers after the cache and the crop, each drawn from a
//! per-item RNG seeded by (seed, epoch, item): the same run twice gives the same audio.

use std::sync::Arc;

use audiodecode_protocol::Augment;
use realfft::RealFftPlanner;

/// A bad augmentation request, a noise/RIR clip that cannot be loaded, or a step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    Clip(String),
    #[error("{0}")]
    Apply(String),
}

use crate::decode::resample::{Quality, StreamResampler};
use crate::decode::DecodedAudio;
use crate::feed::sampler::SplitMix64;

/// Salt for the augmentation RNG, so that it is independent of the crop's.
const AUGMENT_SALT: u64 = 0xa076_1d64_78bd_642f;

/// Mono clips an augmentation draws from (noise recordings, room impulse responses),
/// decoded at the stream's rate by the caller.
pub trait ClipSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Clip `index` as mono audio at the stream rate, or an error message.
    fn clip(&self, index: usize) -> Result<Arc<DecodedAudio>, AugmentError>;
}

/// Resolves a dataset (of noise clips or impulse responses) into a clip source.
pub type ResolveClips<'a> =
    dyn Fn(&audiodecode_protocol::Dataset) -> Result<Arc<dyn ClipSource>, AugmentError> + 'a;

/// An augmentation with its clip source resolved.
pub enum Step {
    Gain {
        min_db: f64,
        max_db: f64,
        p: f64,
    },
    Noise {
        min_snr_db: f64,
        max_snr_db: f64,
        clips: Option<Arc<dyn ClipSource>>,
        p: f64,
    },
    Speed {
        factors: Vec<f64>,
        p: f64,
    },
    Shift {
        max_frames: usize,
        p: f64,
    },
    Reverb {
        rirs: Arc<dyn ClipSource>,
        p: f64,
    },
}

impl Step {
    /// Build from the wire form; `clips` resolves a dataset of noise clips or RIRs.
    pub fn from_spec(
        spec: &Augment,
        sample_rate: u32,
        clips: &ResolveClips<'_>,
    ) -> Result<Self, AugmentError> {
        let check_p = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(AugmentError::InvalidSpec(format!(
                    "probability {p} outside [0, 1]"
                )))
            }
        };
        Ok(match spec {
            Augment::Gain { min_db, max_db, p } => {
                ordered(*min_db, *max_db, "gain")?;
                Self::Gain {
                    min_db: *min_db,
                    max_db: *max_db,
                    p: check_p(*p)?,
                }
            }
            Augment::Noise {
                min_snr_db,
                max_snr_db,
                noise,
                p,
            } => {
                ordered(*min_snr_db, *max_snr_db, "SNR")?;
                let clips = noise.as_ref().map(clips).transpose()?;
                if clips.as_ref().is_some_and(|c| c.is_empty()) {
                    return Err(AugmentError::InvalidSpec(
                        "the noise dataset has no clips".into(),
                    ));
                }
                Self::Noise {
                    min_snr_db: *min_snr_db,
                    max_snr_db: *max_snr_db,
                    clips,
                    p: check_p(*p)?,
                }
            }
            Augment::Speed { factors, p } => {
                if factors.is_empty() || factors.iter().any(|f| !(0.25..=4.0).contains(f)) {
                    return Err(AugmentError::InvalidSpec(format!(
                        "speed factors {factors:?} (each in 0.25..=4)"
                    )));
                }
                Self::Speed {
                    factors: factors.clone(),
                    p: check_p(*p)?,
                }
            }
            Augment::Shift { max_seconds, p } => {
                if !(max_seconds.is_finite() && *max_seconds >= 0.0) {
                    return Err(AugmentError::InvalidSpec(format!(
                        "shift of {max_seconds} s"
                    )));
                }
                let max_frames = (max_seconds * f64::from(sample_rate)).round() as usize;
                Self::Shift {
                    max_frames,
                    p: check_p(*p)?,
                }
            }
            Augment::Reverb { rirs, p } => {
                let rirs = clips(rirs)?;
                if rirs.is_empty() {
                    return Err(AugmentError::InvalidSpec(
                        "the impulse-response dataset has no clips".into(),
                    ));
                }
                Self::Reverb {
                    rirs,
                    p: check_p(*p)?,
                }
            }
        })
    }

    /// The slowest speed factor, which lengthens audio the most.
    pub fn min_speed(&self) -> f64 {
        match self {
            Self::Speed { factors, .. } => factors.iter().copied().fold(1.0, f64::min),
            _ => 1.0,
        }
    }
}

fn ordered(lo: f64, hi: f64, what: &str) -> Result<(), AugmentError> {
    if lo.is_finite() && hi.is_finite() && lo <= hi {
        Ok(())
    } else {
        Err(AugmentError::InvalidSpec(format!(
            "{what} range {lo}..{hi}"
        )))
    }
}

/// Apply `steps` in order to `planes` (each plane one channel at `sample_rate`).
pub fn apply(
    steps: &[Step],
    planes: &mut Vec<Vec<f32>>,
    sample_rate: u32,
    seed: u64,
    epoch: u64,
    item: u64,
) -> Result<(), AugmentError> {
    let mut rng = SplitMix64::for_item(seed ^ AUGMENT_SALT, epoch, item);
    for step in steps {
        // Draw the coin and the parameters even when skipping, so that one step's
        // probability does not change the draws of the steps after it.
        let apply_it = rng.unit() < probability(step);
        let draw = rng.unit();
        let pick = rng.next_u64();
        if !apply_it {
            continue;
        }
        match step {
            Step::Gain { min_db, max_db, .. } => {
                let gain = db_to_amplitude(min_db + (max_db - min_db) * draw) as f32;
                planes.iter_mut().flatten().for_each(|s| *s *= gain);
            }
            Step::Noise {
                min_snr_db,
                max_snr_db,
                clips,
                ..
            } => {
                let snr = min_snr_db + (max_snr_db - min_snr_db) * draw;
                add_noise(planes, snr, clips.as_deref(), pick)?;
            }
            Step::Speed { factors, .. } => {
                let factor = factors[(pick % factors.len() as u64) as usize];
                change_speed(planes, factor, sample_rate)?;
            }
            Step::Shift { max_frames, .. } => {
                let k = (draw * (2 * max_frames + 1) as f64) as i64 - *max_frames as i64;
                planes.iter_mut().for_each(|p| shift(p, k));
            }
            Step::Reverb { rirs, .. } => {
                let rir = rirs.clip((pick % rirs.len() as u64) as usize)?;
                let rir = rir.planes.first().map_or(&[][..], Vec::as_slice);
                planes.iter_mut().for_each(|p| reverberate(p, rir));
            }
        }
    }
    Ok(())
}

fn probability(step: &Step) -> f64 {
    match step {
        Step::Gain { p, .. }
        | Step::Noise { p, .. }
        | Step::Speed { p, .. }
        | Step::Shift { p, .. }
        | Step::Reverb { p, .. } => *p,
    }
}

pub fn db_to_amplitude(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

pub fn power(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len() as f64
}

/// Add noise at `snr_db` relative to the signal's power: white Gaussian noise, or a clip
/// (looped and started at a random point) from `clips`.
fn add_noise(
    planes: &mut [Vec<f32>],
    snr_db: f64,
    clips: Option<&dyn ClipSource>,
    pick: u64,
) -> Result<(), AugmentError> {
    let frames = planes.first().map_or(0, Vec::len);
    let signal = planes.iter().map(|p| power(p)).sum::<f64>() / planes.len().max(1) as f64;
    if frames == 0 || signal == 0.0 {
        return Ok(()); // silence has no SNR to speak of
    }
    let mut noise_rng = SplitMix64::new(pick);
    let noise: Vec<f32> = match clips {
        None => (0..frames)
            .map(|_| gaussian(&mut noise_rng) as f32)
            .collect(),
        Some(clips) => {
            let audio = clips.clip((pick % clips.len() as u64) as usize)?;
            let clip = audio.planes.first().map_or(&[][..], Vec::as_slice);
            if clip.is_empty() {
                return Err(AugmentError::Apply("a noise clip is empty".into()));
            }
            let start = noise_rng.below(clip.len() as u64) as usize;
            (0..frames)
                .map(|i| clip[(start + i) % clip.len()])
                .collect()
        }
    };
    let noise_power = power(&noise);
    if noise_power == 0.0 {
        return Ok(());
    }
    let scale = (signal / noise_power / 10f64.powf(snr_db / 10.0)).sqrt() as f32;
    for plane in planes.iter_mut() {
        for (s, n) in plane.iter_mut().zip(&noise) {
            *s += n * scale;
        }
    }
    Ok(())
}

/// Standard normal by Box-Muller.
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u = rng.unit().max(f64::MIN_POSITIVE);
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Play the audio `factor` times faster (pitch moves with it, as in Kaldi/ESPnet speed
/// perturbation): resample from `rate * factor` to `rate`, so the length divides by it.
fn change_speed(planes: &mut Vec<Vec<f32>>, factor: f64, rate: u32) -> Result<(), AugmentError> {
    if (factor - 1.0).abs() < 1e-9 {
        return Ok(());
    }
    let from = (f64::from(rate) * factor).round() as u32;
    let mut r = StreamResampler::new(from, rate, planes.len(), Quality::Fast)
        .map_err(|e| AugmentError::Apply(e.to_string()))?;
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); planes.len()];
    let mut emit = |chunk: &[&[f32]]| {
        for (o, c) in out.iter_mut().zip(chunk) {
            o.extend_from_slice(c);
        }
    };
    let input: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    r.push(&input, &mut emit);
    r.finish(&mut emit);
    *planes = out;
    Ok(())
}

/// Move the audio by `k` frames (later when positive), filling with silence and keeping
/// the length.
fn shift(plane: &mut [f32], k: i64) {
    let n = plane.len();
    let k_abs = (k.unsigned_abs() as usize).min(n);
    if k > 0 {
        plane.copy_within(..n - k_abs, k_abs);
        plane[..k_abs].fill(0.0);
    } else if k < 0 {
        plane.copy_within(k_abs.., 0);
        plane[n - k_abs..].fill(0.0);
    }
}

/// Convolve with an impulse response (FFT convolution), aligned on the response's direct
/// path (its peak) so the audio does not move in time, and scaled to keep its power.
fn reverberate(plane: &mut Vec<f32>, rir: &[f32]) {
    let n = plane.len();
    if n == 0 || rir.is_empty() {
        return;
    }
    let before = power(plane);
    let direct = rir
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map_or(0, |(i, _)| i);
    let wet = fft_convolve(plane, rir);
    let mut out: Vec<f32> = wet[direct..direct + n].to_vec();
    let after = power(&out);
    if after > 0.0 {
        let scale = (before / after).sqrt() as f32;
        out.iter_mut().for_each(|s| *s *= scale);
    }
    *plane = out;
}

/// Full linear convolution of `a` and `b` (length a + b - 1).
pub fn fft_convolve(a: &[f32], b: &[f32]) -> Vec<f32> {
    let len = a.len() + b.len() - 1;
    let size = len.next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(size);
    let inverse = planner.plan_fft_inverse(size);
    let spectrum = |x: &[f32]| {
        let mut buf = vec![0.0f32; size];
        buf[..x.len()].copy_from_slice(x);
        let mut out = forward.make_output_vec();
        // Sizes come from the plan itself, so this cannot fail.
        let _ = forward.process(&mut buf, &mut out);
        out
    };
    let (fa, fb) = (spectrum(a), spectrum(b));
    let mut product: Vec<_> = fa.iter().zip(&fb).map(|(x, y)| x * y).collect();
    let mut out = inverse.make_output_vec();
    let _ = inverse.process(&mut product, &mut out);
    let norm = 1.0 / size as f32;
    out.truncate(len);
    out.iter_mut().for_each(|s| *s *= norm);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize) -> Vec<Vec<f32>> {
        vec![(0..n).map(|i| (i as f32 * 0.05).sin() * 0.5).collect()]
    }

    fn db(x: f64) -> f64 {
        10.0 * x.log10()
    }

    struct Clips(Vec<Vec<f32>>);

    impl ClipSource for Clips {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn clip(&self, index: usize) -> Result<Arc<DecodedAudio>, AugmentError> {
            Ok(Arc::new(DecodedAudio {
                planes: vec![self.0[index].clone()],
                sample_rate: 16000,
                damage: None,
            }))
        }
    }

    #[test]
    fn gain_moves_the_level_by_its_db() {
        let mut planes = tone(16000);
        let before = power(&planes[0]);
        let steps = [Step::Gain {
            min_db: -6.0,
            max_db: -6.0,
            p: 1.0,
        }];
        apply(&steps, &mut planes, 16000, 1, 0, 0).expect("applies");
        assert!((db(power(&planes[0]) / before) + 6.0).abs() < 1e-4);
    }

    #[test]
    fn noise_lands_at_the_requested_snr() {
        for (snr, clips) in [
            (5.0, None),
            (20.0, None),
            (
                10.0,
                Some(Clips(vec![(0..3000)
                    .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
                    .collect()])),
            ),
        ] {
            let clean = tone(32000);
            let mut planes = clean.clone();
            let clips: Option<Arc<dyn ClipSource>> = clips.map(|c| Arc::new(c) as _);
            let steps = [Step::Noise {
                min_snr_db: snr,
                max_snr_db: snr,
                clips,
                p: 1.0,
            }];
            apply(&steps, &mut planes, 16000, 3, 1, 7).expect("applies");
            let noise: Vec<f32> = planes[0]
                .iter()
                .zip(&clean[0])
                .map(|(a, b)| a - b)
                .collect();
            let measured = db(power(&clean[0]) / power(&noise));
            assert!(
                (measured - snr).abs() < 1.0,
                "SNR {measured:.2} dB, asked {snr}"
            );
        }
    }

    #[test]
    fn speed_changes_the_length_by_the_factor() {
        for factor in [0.9, 1.1, 1.5] {
            let mut planes = tone(16000);
            let steps = [Step::Speed {
                factors: vec![factor],
                p: 1.0,
            }];
            apply(&steps, &mut planes, 16000, 1, 0, 0).expect("applies");
            let expected = (16000.0 / factor).ceil() as usize;
            assert!(
                planes[0].len().abs_diff(expected) <= 1,
                "{factor}: {}",
                planes[0].len()
            );
        }
    }

    #[test]
    fn shift_moves_audio_and_keeps_the_length() {
        let mut p: Vec<f32> = (1..=6).map(|i| i as f32).collect();
        shift(&mut p, 2);
        assert_eq!(p, vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        shift(&mut p, -3);
        assert_eq!(p, vec![2.0, 3.0, 4.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn convolution_matches_the_direct_sum() {
        let a = [1.0f32, 2.0, -1.0, 0.5];
        let b = [0.5f32, -1.0, 0.25];
        let got = fft_convolve(&a, &b);
        let mut want = vec![0.0f32; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                want[i + j] += x * y;
            }
        }
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn reverb_keeps_timing_and_power() {
        let mut rir = vec![0.0f32; 800];
        rir[100] = 1.0;
        for (i, r) in rir.iter_mut().enumerate().skip(101) {
            *r = 0.3 * (-(i as f32) / 150.0).exp();
        }
        let clean = tone(8000);
        let mut planes = clean.clone();
        let steps = [Step::Reverb {
            rirs: Arc::new(Clips(vec![rir])),
            p: 1.0,
        }];
        apply(&steps, &mut planes, 16000, 1, 0, 0).expect("applies");
        assert_eq!(planes[0].len(), 8000);
        assert!((db(power(&planes[0]) / power(&clean[0]))).abs() < 0.01);
        assert_ne!(planes, clean);
    }

    #[test]
    fn the_same_seed_gives_the_same_audio_and_p_is_honoured() {
        let steps = [
            Step::Gain {
                min_db: -6.0,
                max_db: 6.0,
                p: 0.5,
            },
            Step::Noise {
                min_snr_db: 5.0,
                max_snr_db: 20.0,
                clips: None,
                p: 1.0,
            },
            Step::Shift {
                max_frames: 400,
                p: 0.5,
            },
        ];
        let run = |seed, item| {
            let mut planes = tone(4000);
            apply(&steps, &mut planes, 16000, seed, 2, item).expect("applies");
            planes
        };
        assert_eq!(run(1, 5), run(1, 5));
        assert_ne!(run(1, 5), run(2, 5));
        assert_ne!(run(1, 5), run(1, 6));
        let skipped = [Step::Gain {
            min_db: 6.0,
            max_db: 6.0,
            p: 0.0,
        }];
        let mut planes = tone(100);
        apply(&skipped, &mut planes, 16000, 1, 0, 0).expect("applies");
        assert_eq!(planes, tone(100));
    }
}
