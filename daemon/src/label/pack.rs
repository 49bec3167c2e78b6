//! Packing short clips into one 30 s window. Whisper's encoder costs the same for 2 s of
//! audio as for 30 s, so clips of a dataset share windows, separated by silence, and the
//! window's timestamped segments are handed back to the clips they fall in. A clip whose
//! share cannot be told apart (a segment across the gap, no segment at all, an uncertain
//! language) is decoded again alone, so packing does not cost words.

use super::mel::{SAMPLE_RATE, WINDOW_SAMPLES};
use super::types::{PieceOutput, Segment};

/// Silence between packed clips: a clear pause at which Whisper ends its segments.
pub const GAP_SAMPLES: usize = SAMPLE_RATE as usize;
/// Room left at the end of a window: Whisper drops or cuts words that touch its edge.
const END_MARGIN_SAMPLES: usize = SAMPLE_RATE as usize / 2;
/// A segment reaching this far into a second clip spans the gap: the split is unknown.
const CROSSING_SECONDS: f64 = 0.3;
/// With the language to be detected, each clip's language is first detected from its own
/// frames (cheap: see `WhisperEngine::detect_clip_languages`) and clips are packed with
/// clips of the same language. Below this probability that detection is not trusted and
/// the clip is decoded alone (espeak-ng German once came out English at 0.40; every clip
/// above 0.7 in our tests was right). The packed window's own detection must agree too.
pub const MIN_CLIP_LANGUAGE_PROBABILITY: f32 = 0.7;

/// A clip inside a packed window.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// Index of the clip's file.
    pub file: usize,
    /// First sample of the clip in the window.
    pub offset: usize,
    pub samples: usize,
    /// The clip's audible part (first to last frame above −50 dBFS), relative to the clip.
    pub sound: std::ops::Range<usize>,
}

/// Clips waiting to fill a window, with the window's audio built as they arrive.
#[derive(Default)]
pub struct Packer {
    slots: Vec<Slot>,
    audio: Vec<f32>,
}

impl Packer {
    /// Whether a clip this long can ever share a window.
    pub fn packable(samples: usize) -> bool {
        samples > 0 && 2 * samples + GAP_SAMPLES + END_MARGIN_SAMPLES <= WINDOW_SAMPLES
    }

    /// Whether `samples` more fit in the current window.
    pub fn fits(&self, samples: usize) -> bool {
        let gap = if self.slots.is_empty() {
            0
        } else {
            GAP_SAMPLES
        };
        self.audio.len() + gap + samples + END_MARGIN_SAMPLES <= WINDOW_SAMPLES
    }

    /// Adds a clip; the caller checks [`Packer::fits`] first.
    pub fn push(&mut self, file: usize, clip: &[f32]) {
        if !self.slots.is_empty() {
            self.audio.resize(self.audio.len() + GAP_SAMPLES, 0.0);
        }
        self.slots.push(Slot {
            file,
            offset: self.audio.len(),
            samples: clip.len(),
            sound: super::pieces::sound_span(clip),
        });
        self.audio.extend_from_slice(clip);
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The window's audio and its clips, leaving the packer empty.
    pub fn take(&mut self) -> (Vec<f32>, Vec<Slot>) {
        (
            std::mem::take(&mut self.audio),
            std::mem::take(&mut self.slots),
        )
    }
}

/// Hands the segments of a packed window to its clips, times made relative to each clip.
/// `None` for a clip means its share is unclear and it must be decoded alone.
pub fn split_window(output: &PieceOutput, slots: &[Slot]) -> Vec<Option<PieceOutput>> {
    let rate = f64::from(SAMPLE_RATE);
    let spans: Vec<(f64, f64)> = slots
        .iter()
        .map(|s| {
            let start = s.offset as f64 / rate;
            (start, start + s.samples as f64 / rate)
        })
        .collect();
    // Overlaps are judged on each clip's sound: Whisper often starts a segment where the
    // previous one ended, inside the silence that ends the previous clip, and such a
    // loose start is not text of that clip.
    let sounds: Vec<(f64, f64)> = slots
        .iter()
        .zip(&spans)
        .map(|(s, &(start, end))| {
            if s.sound.is_empty() {
                (start, end)
            } else {
                (
                    start + s.sound.start as f64 / rate,
                    start + s.sound.end as f64 / rate,
                )
            }
        })
        .collect();
    let mut shares: Vec<Vec<Segment>> = vec![Vec::new(); slots.len()];
    let mut unclear = vec![false; slots.len()];
    for segment in &output.segments {
        let overlaps: Vec<f64> = sounds
            .iter()
            .map(|&(a, b)| (segment.end.min(b) - segment.start.max(a)).max(0.0))
            .collect();
        let owner = owner_of(segment, &spans, &overlaps);
        for (k, &overlap) in overlaps.iter().enumerate() {
            if k != owner && overlap > CROSSING_SECONDS {
                log::debug!(
                    "packed window: segment {:.2}–{:.2} s crosses clips {owner} and {k} \
                     (sound {:?}): {:?}",
                    segment.start,
                    segment.end,
                    sounds,
                    segment.text
                );
                unclear[k] = true;
                unclear[owner] = true;
            }
        }
        let (start, end) = spans[owner];
        shares[owner].push(shifted(segment, start, end - start));
    }
    shares
        .into_iter()
        .zip(unclear)
        .map(|(segments, unclear)| {
            (!unclear && !segments.is_empty()).then(|| PieceOutput {
                language: output.language.clone(),
                language_probability: output.language_probability,
                segments,
            })
        })
        .collect()
}

/// The clip a segment belongs to: the one it overlaps most, or the nearest one when it
/// lies in a gap (Whisper's timestamps are only 20 ms-grained guesses).
fn owner_of(segment: &Segment, spans: &[(f64, f64)], overlaps: &[f64]) -> usize {
    let most = (0..spans.len()).max_by(|&a, &b| overlaps[a].total_cmp(&overlaps[b]));
    match most {
        Some(k) if overlaps[k] > 0.0 => k,
        _ => {
            let middle = (segment.start + segment.end) / 2.0;
            let distance = |&(a, b): &(f64, f64)| (a - middle).max(middle - b).max(0.0);
            (0..spans.len())
                .min_by(|&a, &b| distance(&spans[a]).total_cmp(&distance(&spans[b])))
                .unwrap_or(0)
        }
    }
}

/// A window segment moved to its clip's time line and kept inside the clip.
fn shifted(segment: &Segment, clip_start: f64, clip_duration: f64) -> Segment {
    let place = |t: f64| (t - clip_start).clamp(0.0, clip_duration);
    let mut s = segment.clone();
    s.start = place(s.start);
    s.end = place(s.end).max(s.start);
    if let Some(words) = &mut s.words {
        for w in words.iter_mut() {
            w.start = place(w.start);
            w.end = place(w.end).max(w.start);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::test_segment as segment;

    fn window(segments: Vec<Segment>) -> PieceOutput {
        PieceOutput {
            language: "en".into(),
            language_probability: 0.99,
            segments,
        }
    }

    fn packed(lengths_s: &[f64]) -> Vec<Slot> {
        let mut packer = Packer::default();
        for (file, &seconds) in lengths_s.iter().enumerate() {
            let clip = vec![0.1f32; (seconds * 16_000.0) as usize];
            assert!(packer.fits(clip.len()));
            packer.push(file, &clip);
        }
        packer.take().1
    }

    #[test]
    fn clips_are_laid_out_with_gaps_and_the_window_limit_holds() {
        let slots = packed(&[4.0, 6.0, 3.0]);
        assert_eq!(slots[0].offset, 0);
        assert_eq!(slots[1].offset, 4 * 16_000 + GAP_SAMPLES);
        assert_eq!(slots[2].offset, 10 * 16_000 + 2 * GAP_SAMPLES);
        let mut packer = Packer::default();
        packer.push(0, &vec![0.0; 14 * 16_000]);
        assert!(packer.fits(14 * 16_000));
        packer.push(1, &vec![0.0; 14 * 16_000]);
        assert!(!packer.fits(16_000 / 2));
        assert!(Packer::packable(14 * 16_000));
        assert!(!Packer::packable(15 * 16_000));
    }

    #[test]
    fn segments_go_to_their_clips_with_clip_times() {
        // Clips at 0–4 s, 5–11 s, 12–15 s.
        let slots = packed(&[4.0, 6.0, 3.0]);
        let out = window(vec![
            segment(0.0, 3.9, " one"),
            segment(5.1, 8.0, " two"),
            segment(8.0, 11.2, " three"),
            segment(12.0, 15.0, " four"),
        ]);
        let shares = split_window(&out, &slots);
        let texts: Vec<Vec<String>> = shares
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|o| o.segments.iter().map(|x| x.text.clone()).collect())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(texts, [vec![" one"], vec![" two", " three"], vec![" four"]]);
        let second = shares[1].as_ref().map(|o| &o.segments);
        let times: Vec<(f64, f64)> = second
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    (s.start * 10.0).round() / 10.0,
                    (s.end * 10.0).round() / 10.0,
                )
            })
            .collect();
        assert_eq!(times, [(0.1, 3.0), (3.0, 6.0)]);
    }

    #[test]
    fn a_segment_across_a_gap_or_a_clip_without_text_is_decoded_alone() {
        let slots = packed(&[4.0, 6.0, 3.0]);
        let out = window(vec![
            segment(0.0, 6.0, " one two"), // runs 1 s into the second clip
            segment(12.0, 15.0, " four"),
        ]);
        let shares = split_window(&out, &slots);
        assert!(shares[0].is_none() && shares[1].is_none());
        assert!(shares[2].is_some());
        // Nothing for the middle clip: it is decoded alone.
        let out = window(vec![
            segment(0.0, 4.0, " one"),
            segment(12.0, 15.0, " four"),
        ]);
        let shares = split_window(&out, &slots);
        assert!(shares[0].is_some() && shares[1].is_none() && shares[2].is_some());
    }

    #[test]
    fn a_segment_in_a_gap_goes_to_the_nearest_clip() {
        let slots = packed(&[4.0, 6.0]);
        let out = window(vec![segment(0.0, 4.0, " one"), segment(4.1, 4.3, " uh")]);
        let shares = split_window(&out, &slots);
        let first = shares[0].as_ref().map(|o| o.segments.len());
        assert_eq!(first, Some(2));
        assert!(shares[1].is_none());
    }
}
