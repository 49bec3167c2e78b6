//! Cutting long recordings into ≤30 s pieces at the quietest moment near each limit, so no
//! word is split between pieces and every piece fits the model's window.

use super::mel::{HOP, WINDOW_SAMPLES};

/// Where the cut search starts in a 30 s window (the tests check pieces are this long).
#[cfg(test)]
const SEARCH_FROM_SAMPLES: usize = WINDOW_SAMPLES * 2 / 3;
const SAMPLE_RATE_HZ: usize = super::mel::SAMPLE_RATE as usize;
/// Pauses are judged over 200 ms, long enough to skip the gaps inside words.
const PAUSE_FRAMES: usize = 20;

/// Sample ranges of the pieces of `samples` (16 kHz mono), in order, covering all of it.
pub fn cut_pieces(samples: &[f32]) -> Vec<std::ops::Range<usize>> {
    cut_pieces_within(samples, WINDOW_SAMPLES, &[])
}

/// As [`cut_pieces`], with pieces of at most `window` samples (at least 1 s). `seams`
/// (sorted sample positions) are where VAD removed non-speech: a cut there splits no word
/// even where the removed stretch was noise or music rather than quiet, so the later of the
/// last seam and the last pause in the search range is cut. On real speech among noise
/// this makes pieces fuller: 4 windows instead of 5 for 115 s of speech (the 4 that
/// faster-whisper's batched pipeline, which cuts only at VAD boundaries, needs).
pub fn cut_pieces_within(
    samples: &[f32],
    window: usize,
    seams: &[usize],
) -> Vec<std::ops::Range<usize>> {
    let window = window.clamp(SAMPLE_RATE_HZ, WINDOW_SAMPLES);
    // A cut is searched in the last third of each window: early enough to find a pause,
    // late enough that pieces stay long (fewer pieces, more context each).
    let search_from = window * 2 / 3;
    let total = samples.len();
    if total <= window {
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
    while total - start > window {
        let first = (start + search_from) / HOP;
        // The cut must leave this piece within the window.
        let last = ((start + window) / HOP).saturating_sub(1);
        let pause = last_pause(&energy, first, last).map(|f| f * HOP);
        let seam = seams
            .iter()
            .rev()
            .find(|&&s| s >= start + search_from && s <= start + window)
            .copied();
        let cut = match (pause, seam) {
            (Some(p), Some(s)) => p.max(s),
            (p, s) => p
                .or(s)
                .unwrap_or_else(|| quietest_window(&prefix, first, last) * HOP),
        };
        let cut = cut.clamp(start + HOP, start + window);
        pieces.push(start..cut);
        start = cut;
    }
    pieces.push(start..total);
    pieces
}

/// Centre of the last pause near the quietest level in `first..=last`: the latest run of
/// quiet frames lasting 200 ms (longer than the stops inside words; faster-whisper's batched
/// pipeline cuts at 160 ms of VAD silence), so that pieces stay long and few; without one,
/// the longest run of at least 100 ms. `None` without either.
fn last_pause(energy: &[f64], first: usize, last: usize) -> Option<usize> {
    let last = last.min(energy.len().saturating_sub(1));
    let range = energy.get(first..=last)?;
    let floor = range.iter().copied().fold(f64::INFINITY, f64::min);
    // Within 3 dB of the floor, or digitally near-silent (−60 dBFS).
    let quiet = (floor * 2.0).max(1e-6 * HOP as f64);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut run_start = None;
    // A loud sentinel after the range closes a run that reaches its end.
    let flags = range
        .iter()
        .map(|&e| e <= quiet)
        .chain(std::iter::once(false));
    for (f, is_quiet) in (first..).zip(flags) {
        match (is_quiet, run_start) {
            (true, None) => run_start = Some(f),
            (false, Some(s)) => {
                runs.push((s, f));
                run_start = None;
            }
            _ => {}
        }
    }
    let latest_long = runs.iter().rev().find(|(s, e)| e - s >= PAUSE_FRAMES);
    let longest = runs.iter().max_by_key(|(s, e)| e - s);
    latest_long
        .or(longest.filter(|(s, e)| e - s >= PAUSE_FRAMES / 2))
        .map(|(s, e)| (s + e) / 2)
}

/// Start of the 200 ms window with the least energy (later wins ties), for audio without
/// a clear pause.
fn quietest_window(prefix: &[f64], first: usize, last: usize) -> usize {
    let frames = prefix.len() - 1;
    let last = last.saturating_sub(PAUSE_FRAMES).max(first);
    let mut best = last;
    let mut best_energy = f64::INFINITY;
    for f in first..=last {
        let e = prefix[(f + PAUSE_FRAMES).min(frames)] - prefix[f.min(frames)];
        if e <= best_energy {
            best_energy = e;
            best = f;
        }
    }
    best + PAUSE_FRAMES / 2
}

/// Samples from the first to the last 10 ms frame above −50 dBFS RMS: where a segment of a
/// piece decoded without timestamps starts and ends. Empty (`0..0`) for silence.
pub fn sound_span(samples: &[f32]) -> std::ops::Range<usize> {
    const LOUD_MEAN_SQUARE: f32 = 1e-5; // −50 dBFS
    let loud = |c: &[f32]| c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 > LOUD_MEAN_SQUARE;
    let first = samples.chunks(HOP).position(loud);
    let last = samples.chunks(HOP).rposition(loud);
    match (first, last) {
        (Some(a), Some(b)) => a * HOP..((b + 1) * HOP).min(samples.len()),
        _ => 0..0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sound_span_skips_leading_and_trailing_quiet() {
        let mut samples = vec![0.0f32; 16_000];
        samples[3_200..8_000].fill(0.2);
        assert_eq!(sound_span(&samples), 3_200..8_000);
        assert_eq!(sound_span(&[0.0; 800]), 0..0);
    }

    #[test]
    fn short_audio_is_one_piece() {
        let one = cut_pieces(&vec![0.1; 16_000]);
        assert_eq!((one.len(), one[0].start, one[0].end), (1, 0, 16_000));
        assert_eq!(cut_pieces(&[]).len(), 1);
    }

    #[test]
    fn long_audio_is_cut_in_its_pauses_and_covered() {
        // 0.5 s of tone then 0.3 s of silence, repeated for 100 s, with a 0.1 s stop
        // inside each tone: cuts go to the longer pauses.
        let mut samples = Vec::new();
        while samples.len() < 100 * 16_000 {
            samples.extend((0..4_000).map(|i| (i as f32 * 0.1).sin() * 0.5));
            samples.extend(std::iter::repeat_n(0.0, 1_600));
            samples.extend((0..4_000).map(|i| (i as f32 * 0.1).sin() * 0.5));
            samples.extend(std::iter::repeat_n(0.0, 4_800));
        }
        let pieces = cut_pieces(&samples);
        assert!(pieces.len() >= 4);
        assert_eq!(pieces[0].start, 0);
        // Seams (where VAD removed non-speech) later than the last pause are cut; seams
        // earlier than it, or outside the search range, are not.
        let pause_cut = pieces[0].end;
        let late_seam = pause_cut + 800;
        let seamed = cut_pieces_within(
            &samples,
            WINDOW_SAMPLES,
            &[SEARCH_FROM_SAMPLES - 10, pause_cut - 4_000, late_seam],
        );
        assert_eq!(seamed[0].end, late_seam);
        let early = cut_pieces_within(&samples, WINDOW_SAMPLES, &[pause_cut - 4_000]);
        assert_eq!(early[0].end, pause_cut);
        assert_eq!(pieces.last().map(|p| p.end), Some(samples.len()));
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for p in &pieces {
            assert!(p.len() <= WINDOW_SAMPLES);
            if p.end < samples.len() {
                // In the long pause: silence for at least 0.1 s on both sides.
                let around = &samples[p.end - 1_600..p.end + 1_600];
                assert!(
                    around.iter().all(|&x| x == 0.0),
                    "cut at {} is not in a long pause",
                    p.end
                );
                assert!(p.len() >= SEARCH_FROM_SAMPLES);
            }
        }
    }
}
