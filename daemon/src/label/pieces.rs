//! Cutting long recordings into ≤30 s pieces at the quietest moment near each limit, so no
//! word is split between pieces and every piece fits the model's window.

use super::mel::{HOP, WINDOW_SAMPLES};

/// A cut is searched in the last part of each window: early enough to find a pause,
/// late enough that pieces stay long (fewer pieces, more context each).
const SEARCH_FROM_SAMPLES: usize = WINDOW_SAMPLES * 2 / 3;
/// Pauses are judged over 200 ms, long enough to skip the gaps inside words.
const PAUSE_FRAMES: usize = 20;

/// Sample ranges of the pieces of `samples` (16 kHz mono), in order, covering all of it.
pub fn cut_pieces(samples: &[f32]) -> Vec<std::ops::Range<usize>> {
    let total = samples.len();
    if total <= WINDOW_SAMPLES {
        return std::iter::once(0..total).collect();
    }
    // Energy of each 10 ms frame, and its running sum for 200 ms window sums.
    let energy: Vec<f64> = samples
        .chunks(HOP)
        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum())
        .collect();
    let mut prefix = vec![0.0f64; energy.len() + 1];
    for (i, e) in energy.iter().enumerate() {
        prefix[i + 1] = prefix[i] + e;
    }
    let mut pieces = Vec::new();
    let mut start = 0usize;
    while total - start > WINDOW_SAMPLES {
        let first = (start + SEARCH_FROM_SAMPLES) / HOP;
        // The pause window must end inside this piece's 30 s.
        let last = ((start + WINDOW_SAMPLES) / HOP).saturating_sub(PAUSE_FRAMES);
        let mut best = last;
        let mut best_energy = f64::INFINITY;
        for f in first..=last {
            let e = prefix[(f + PAUSE_FRAMES).min(energy.len())] - prefix[f.min(energy.len())];
            // Later wins ties (longer pieces).
            if e <= best_energy {
                best_energy = e;
                best = f;
            }
        }
        let cut = ((best + PAUSE_FRAMES / 2) * HOP).clamp(start + HOP, start + WINDOW_SAMPLES);
        pieces.push(start..cut);
        start = cut;
    }
    pieces.push(start..total);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_audio_is_one_piece() {
        let one = cut_pieces(&vec![0.1; 16_000]);
        assert_eq!((one.len(), one[0].start, one[0].end), (1, 0, 16_000));
        assert_eq!(cut_pieces(&[]).len(), 1);
    }

    #[test]
    fn long_audio_is_cut_in_its_pauses_and_covered() {
        // 0.5 s of tone then 0.3 s of silence, repeated for 100 s.
        let mut samples = Vec::new();
        while samples.len() < 100 * 16_000 {
            samples.extend((0..8_000).map(|i| (i as f32 * 0.1).sin() * 0.5));
            samples.extend(std::iter::repeat_n(0.0, 4_800));
        }
        let pieces = cut_pieces(&samples);
        assert!(pieces.len() >= 4);
        assert_eq!(pieces[0].start, 0);
        assert_eq!(pieces.last().map(|p| p.end), Some(samples.len()));
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for p in &pieces {
            assert!(p.len() <= WINDOW_SAMPLES);
            if p.end < samples.len() {
                assert_eq!(samples[p.end], 0.0, "cut at {} is not in a pause", p.end);
                assert!(p.len() >= SEARCH_FROM_SAMPLES);
            }
        }
    }
}
