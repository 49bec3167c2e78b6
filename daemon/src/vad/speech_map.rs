//! Keeping only the speech of a recording, and mapping times in the kept audio back to the
//! recording (faster-whisper's `collect_chunks` and `SpeechTimestampsMap`, for any number
//! of ranges).

use std::ops::Range;

/// Shorter than the shortest spoken word: speech this short beside a seam is a loose
/// boundary, not content.
const WORD_SECONDS: f64 = 0.2;

/// Where each kept range lies in the kept audio and in the recording.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeechMap {
    /// (start in the kept audio, start in the recording, length), in samples, in order.
    spans: Vec<(usize, usize, usize)>,
    rate: f64,
    /// Samples of the recording.
    total: usize,
    /// Padding VAD put around each range, in samples: not speech.
    pad: usize,
}

impl SpeechMap {
    /// The speech of `samples` (the `ranges`, sorted and disjoint, padded by `pad` samples)
    /// back to back, and the map from its times to the recording's.
    pub fn keep(
        samples: &[f32],
        ranges: &[Range<usize>],
        rate: u32,
        pad: usize,
    ) -> (Vec<f32>, SpeechMap) {
        let mut kept = Vec::with_capacity(ranges.iter().map(Range::len).sum());
        let mut spans = Vec::with_capacity(ranges.len());
        for r in ranges {
            let r = r.start.min(samples.len())..r.end.min(samples.len());
            if r.is_empty() {
                continue;
            }
            spans.push((kept.len(), r.start, r.len()));
            kept.extend_from_slice(&samples[r]);
        }
        let map = SpeechMap {
            spans,
            rate: f64::from(rate),
            total: samples.len(),
            pad,
        };
        (kept, map)
    }

    /// Where in the kept audio one kept range ends and the next begins (samples, in order):
    /// the places non-speech was removed.
    pub fn seams(&self) -> Vec<usize> {
        self.spans
            .windows(2)
            .filter(|pair| pair[1].1 > pair[0].1 + pair[0].2)
            .map(|pair| pair[1].0)
            .collect()
    }

    /// Seconds of the recording kept.
    pub fn kept_seconds(&self) -> f64 {
        self.spans.iter().map(|s| s.2).sum::<usize>() as f64 / self.rate
    }

    /// Seconds of the recording removed.
    pub fn removed_seconds(&self) -> f64 {
        self.total as f64 / self.rate - self.kept_seconds()
    }

    /// The recording's time of `seconds` into the kept audio. A time on the seam between two
    /// kept ranges belongs to the later one, unless it is an `end`, which stays with the
    /// earlier (so a segment ending at a seam does not stretch over the removed silence).
    pub fn to_recording(&self, seconds: f64, end: bool) -> f64 {
        let at = (seconds.max(0.0) * self.rate).round() as usize;
        let index = if end {
            self.spans.partition_point(|&(k, _, _)| k < at)
        } else {
            self.spans.partition_point(|&(k, _, _)| k <= at)
        };
        let Some(&(kept_start, start, len)) = self.spans.get(index.saturating_sub(1)) else {
            return seconds;
        };
        let into = (seconds * self.rate - kept_start as f64).clamp(0.0, len as f64);
        (start as f64 + into) / self.rate
    }

    /// The recording's times of a span (a segment or a word) of the kept audio. A span
    /// across a seam that holds less than a word of speech before it starts at the seam,
    /// and one that holds less than a word after it ends there: Whisper places segment
    /// boundaries loosely (a segment often starts where the previous one ended), and
    /// without this a segment would stretch over the removed non-speech. Padding counts
    /// as no speech.
    pub fn span_to_recording(&self, start: f64, end: f64) -> (f64, f64) {
        let (a, b) = (
            (start.max(0.0) * self.rate).round() as usize,
            (end.max(0.0) * self.rate).round() as usize,
        );
        let slack = self.pad + (WORD_SECONDS * self.rate) as usize;
        let seams = self.spans.iter().skip(1).map(|&(k, _, _)| k);
        let mut start_at = start;
        let mut end_at = end;
        for seam in seams {
            if a < seam && seam < b {
                if seam - a <= slack {
                    start_at = start_at.max(seam as f64 / self.rate);
                }
                if b - seam <= slack {
                    end_at = end_at.min(seam as f64 / self.rate);
                }
            }
        }
        let from = self.to_recording(start_at, false);
        (from, self.to_recording(end_at, true).max(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_ranges_and_maps_times_back() {
        let samples: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let (kept, map) = SpeechMap::keep(&samples, &[10..20, 50..60, 90..100], 10, 0);
        assert_eq!(kept.len(), 30);
        assert_eq!((kept[0], kept[10], kept[29]), (10.0, 50.0, 99.0));
        assert_eq!(map.kept_seconds(), 3.0);
        assert_eq!(map.seams(), vec![10, 20]);
        // Ranges that touch remove nothing between them: no seam.
        let (_, touching) = SpeechMap::keep(&samples, &[10..20, 20..30, 50..60], 10, 0);
        assert_eq!(touching.seams(), vec![20]);
        assert_eq!(map.removed_seconds(), 7.0);
        assert_eq!(map.to_recording(0.0, false), 1.0);
        assert_eq!(map.to_recording(0.5, false), 1.5);
        // The seam at 1.0 s: a start goes to the second range, an end stays in the first.
        assert_eq!(map.to_recording(1.0, false), 5.0);
        assert_eq!(map.to_recording(1.0, true), 2.0);
        assert_eq!(map.to_recording(2.5, true), 9.5);
        // Past the end stays at the end of the last range.
        assert_eq!(map.to_recording(4.0, true), 10.0);
        // Monotonic.
        let mut last = 0.0;
        for i in 0..=40 {
            let t = map.to_recording(i as f64 / 10.0, false);
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn spans_across_a_seam_drop_the_padding() {
        let samples = vec![0.0f32; 100];
        // Two ranges padded by 2 samples each: kept 0..10 is 10..20, kept 10..20 is 50..60.
        let (_, map) = SpeechMap::keep(&samples, &[10..20, 50..60], 10, 2);
        // Starts 0.4 s before the seam (0.2 s of padding, 0.2 s of speech): starts at the
        // second range.
        assert_eq!(map.span_to_recording(0.6, 1.5), (5.0, 5.5));
        // Ends just after the seam: ends with the first range.
        assert_eq!(map.span_to_recording(0.2, 1.3), (1.2, 2.0));
        // Far from the seam on both sides: a span over the removed silence.
        assert_eq!(map.span_to_recording(0.2, 1.6), (1.2, 5.6));
        // Not across a seam: unchanged.
        assert_eq!(map.span_to_recording(0.2, 0.9), (1.2, 1.9));
    }

    #[test]
    fn nothing_kept() {
        let (kept, map) = SpeechMap::keep(&[0.0; 10], &[], 10, 0);
        assert!(kept.is_empty());
        assert_eq!(map.removed_seconds(), 1.0);
    }
}
