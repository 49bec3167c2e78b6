//! Speech probabilities to speech ranges, with the rules of Silero VAD's
//! `get_speech_timestamps` as faster-whisper 1.2 applies them, so that the same options give
//! the same ranges: speech starts at `threshold`, ends after `min_silence_duration_ms` below
//! `neg_threshold`, is split when longer than `max_speech_duration_s` (at the last pause of
//! ≥ 98 ms when there is one), and is padded by `speech_pad_ms` on each side (half the gap
//! each when two ranges are closer than twice the pad).

use std::ops::Range;

use super::VadOptions;

/// Samples per probability (32 ms at 16 kHz).
pub const WINDOW: usize = 512;
const RATE: f64 = 16_000.0;
/// A pause this long may end a piece of speech that reached the maximum length.
const PAUSE_AT_MAX_MS: f64 = 98.0;

/// Speech in a recording of `total` samples (16 kHz) given one probability per
/// [`WINDOW`] samples: sorted, disjoint ranges inside `0..total`.
pub fn speech_ranges(probabilities: &[f32], total: usize, o: &VadOptions) -> Vec<Range<usize>> {
    let ms = |v: f64| RATE * v / 1000.0;
    let pad = ms(f64::from(o.speech_pad_ms));
    let rules = Rules {
        threshold: o.threshold,
        neg_threshold: o
            .neg_threshold
            .unwrap_or_else(|| (o.threshold - 0.15).max(0.01)),
        min_speech: ms(f64::from(o.min_speech_duration_ms)),
        max_speech: o.max_speech_duration_s.map_or(f64::INFINITY, |s| {
            RATE * f64::from(s) - WINDOW as f64 - 2.0 * pad
        }),
        min_silence: ms(f64::from(o.min_silence_duration_ms)),
        pause_at_max: ms(PAUSE_AT_MAX_MS),
    };
    let raw = rules.raw_speech(probabilities, total);
    padded(raw, pad, total)
}

struct Rules {
    threshold: f32,
    neg_threshold: f32,
    min_speech: f64,
    max_speech: f64,
    min_silence: f64,
    pause_at_max: f64,
}

impl Rules {
    /// Speech ranges before padding. Positions are window starts; `0` in `silence_from`,
    /// `pause_end` and `resume` means "none", as in the reference (no range ends at 0).
    fn raw_speech(&self, probabilities: &[f32], total: usize) -> Vec<(usize, usize)> {
        let mut speech = Vec::new();
        let mut start: Option<usize> = None;
        // Where the current silence began, the end of the last pause long enough to split
        // at, and where speech resumed after it.
        let (mut silence_from, mut pause_end, mut resume) = (0usize, 0usize, 0usize);
        for (i, &p) in probabilities.iter().enumerate() {
            let at = i * WINDOW;
            if p >= self.threshold && silence_from != 0 {
                silence_from = 0;
                if resume < pause_end {
                    resume = at;
                }
            }
            let Some(s) = start else {
                if p >= self.threshold {
                    start = Some(at);
                }
                continue;
            };
            if (at - s) as f64 > self.max_speech {
                if pause_end != 0 {
                    speech.push((s, pause_end));
                    // Still in the pause: speech starts again when probabilities rise.
                    start = (resume >= pause_end).then_some(resume);
                } else {
                    speech.push((s, at));
                    start = None;
                }
                let split_without_pause = pause_end == 0;
                (silence_from, pause_end, resume) = (0, 0, 0);
                if split_without_pause {
                    continue;
                }
            }
            let Some(s) = start else { continue };
            if p < self.neg_threshold {
                if silence_from == 0 {
                    silence_from = at;
                }
                let silent = (at - silence_from) as f64;
                if silent > self.pause_at_max {
                    pause_end = silence_from;
                }
                if silent < self.min_silence {
                    continue;
                }
                if (silence_from - s) as f64 > self.min_speech {
                    speech.push((s, silence_from));
                }
                start = None;
                (silence_from, pause_end, resume) = (0, 0, 0);
            }
        }
        if let Some(s) = start {
            if (total.saturating_sub(s)) as f64 > self.min_speech {
                speech.push((s, total));
            }
        }
        speech
    }
}

/// Pads each range by `pad` samples, splitting a shorter gap between neighbours in half.
fn padded(mut speech: Vec<(usize, usize)>, pad: f64, total: usize) -> Vec<Range<usize>> {
    let pad_samples = pad as usize;
    let n = speech.len();
    for i in 0..n {
        if i == 0 {
            speech[0].0 = speech[0].0.saturating_sub(pad_samples);
        }
        if i + 1 < n {
            let gap = speech[i + 1].0.saturating_sub(speech[i].1);
            if (gap as f64) < 2.0 * pad {
                speech[i].1 += gap / 2;
                speech[i + 1].0 = speech[i + 1].0.saturating_sub(gap / 2);
            } else {
                speech[i].1 = (speech[i].1 + pad_samples).min(total);
                speech[i + 1].0 = speech[i + 1].0.saturating_sub(pad_samples);
            }
        } else {
            speech[i].1 = (speech[i].1 + pad_samples).min(total);
        }
    }
    speech
        .into_iter()
        .map(|(a, b)| a.min(total)..b.min(total).max(a.min(total)))
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(pattern: &[(f32, usize)]) -> Vec<f32> {
        pattern
            .iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    #[test]
    fn silence_gives_nothing_and_speech_is_padded() {
        let o = VadOptions::silero();
        assert!(speech_ranges(&[0.0; 100], 100 * WINDOW, &o).is_empty());
        // 1 s of silence, 2 s of speech, 3 s of silence.
        let p = probs(&[(0.0, 31), (0.9, 63), (0.0, 94)]);
        let total = p.len() * WINDOW;
        let r = speech_ranges(&p, total, &o);
        assert_eq!(r, vec![31 * WINDOW - 6_400..94 * WINDOW + 6_400]);
    }

    #[test]
    fn short_pauses_join_and_long_ones_split() {
        let mut o = VadOptions::silero();
        o.speech_pad_ms = 0;
        o.min_silence_duration_ms = 500;
        // Speech, a 0.3 s pause (joined), speech, a 1 s pause (split), speech.
        let p = probs(&[(0.9, 30), (0.1, 10), (0.9, 30), (0.1, 31), (0.9, 30)]);
        let total = p.len() * WINDOW;
        let r = speech_ranges(&p, total, &o);
        assert_eq!(r, vec![0..70 * WINDOW, 101 * WINDOW..total]);
    }

    #[test]
    fn hysteresis_keeps_speech_between_the_thresholds() {
        let mut o = VadOptions::silero();
        o.speech_pad_ms = 0;
        o.min_silence_duration_ms = 100;
        // 0.4 is below the threshold (0.5) but above neg_threshold (0.35): still speech.
        let p = probs(&[(0.9, 10), (0.4, 20), (0.9, 10), (0.0, 20)]);
        let r = speech_ranges(&p, p.len() * WINDOW, &o);
        assert_eq!(r, vec![0..40 * WINDOW]);
        o.neg_threshold = Some(0.45);
        let r = speech_ranges(&p, p.len() * WINDOW, &o);
        assert_eq!(r, vec![0..10 * WINDOW, 30 * WINDOW..40 * WINDOW]);
    }

    #[test]
    fn long_speech_is_split_at_a_pause_or_at_the_limit() {
        let o = VadOptions {
            speech_pad_ms: 0,
            max_speech_duration_s: Some(5.0),
            min_silence_duration_ms: 2000,
            ..VadOptions::default()
        };
        // 4 s of speech, a 0.2 s pause (too short to end speech), 4 s more.
        let p = probs(&[(0.9, 125), (0.0, 6), (0.9, 125)]);
        let total = p.len() * WINDOW;
        let r = speech_ranges(&p, total, &o);
        assert_eq!(r[0], 0..125 * WINDOW, "split at the pause");
        assert_eq!(r[1].start, 131 * WINDOW);
        for range in &r {
            assert!(range.len() as f64 <= 5.0 * RATE);
        }
        // No pause at all: cut at the limit.
        let p = vec![0.9; 400];
        let r = speech_ranges(&p, 400 * WINDOW, &o);
        assert!(r.len() >= 2);
        for range in &r {
            assert!(range.len() as f64 <= 5.0 * RATE, "{range:?}");
        }
        assert_eq!(r.last().map(|r| r.end), Some(400 * WINDOW));
    }

    #[test]
    fn short_blips_are_dropped_with_min_speech() {
        let mut o = VadOptions::silero();
        o.min_speech_duration_ms = 250;
        o.min_silence_duration_ms = 100;
        let p = probs(&[(0.0, 10), (0.9, 3), (0.0, 20), (0.9, 20), (0.0, 20)]);
        let r = speech_ranges(&p, p.len() * WINDOW, &o);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains(&(40 * WINDOW)));
    }
}
