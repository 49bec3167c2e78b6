//! Packing short clips into one 30 s window. Whisper's encoder costs the same for 2 s of
//! audio as for 30 s, so clips of a dataset share windows, separated by silence, and the
//! window's timestamped segments are handed back to the clips they fall in. A clip whose
//! share cannot be told apart (no segment at all, an uncertain language, a segment across
//! the gap that its words cannot cut) is decoded again alone, so packing does not cost
//! words.
//!
//! Note [Packed windows cut between words]: Whisper often runs one segment on across the
//! silence between two packed clips (consecutive sentences of one speaker read as one
//! sentence); on real short clips served over HTTP, 18 of ~50 packed windows had one, and
//! each sent two clips back to be decoded alone. A packed window with such a segment
//! therefore has its words aligned (`PieceInput::packed_clips`, `crosses_a_gap`: the
//! batch's encoder output reused, one decoder pass with no search), and the segment is cut
//! at the word boundary in the gap's silence — when it is the only boundary in or near the
//! silence and every clip's part holds about its share of the segment's words. Otherwise
//! (no words, a short word placed in the silence, a clip Whisper read past) the clips are
//! decoded alone, as before: a cut in the wrong place moves a clip's first word to its
//! neighbour.

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

/// Each clip's audible part (`Slot::sound`) in seconds of the window; a clip without one
/// counts whole. Segments are judged on these: Whisper often starts a segment where the
/// previous one ended, inside the silence that ends the previous clip, and such a loose
/// start is not text of that clip.
pub fn clip_sounds(slots: &[Slot]) -> Vec<(f64, f64)> {
    let rate = f64::from(SAMPLE_RATE);
    slots
        .iter()
        .map(|s| {
            let (from, to) = if s.sound.is_empty() {
                (0, s.samples)
            } else {
                (s.sound.start, s.sound.end)
            };
            (
                (s.offset + from) as f64 / rate,
                (s.offset + to) as f64 / rate,
            )
        })
        .collect()
}

/// Whether one of the window's segments runs on from one clip's sound into another's: only
/// then are its words needed to cut it (`sounds` from [`clip_sounds`]).
pub fn crosses_a_gap(output: &PieceOutput, sounds: &[(f64, f64)]) -> bool {
    output
        .segments
        .iter()
        .any(|s| Reach::of(s, sounds).clips.len() > 1)
}

/// The clips a segment reaches: the seconds of each clip's sound it covers, and the clips
/// it covers more than `CROSSING_SECONDS` of, in order.
struct Reach {
    overlaps: Vec<f64>,
    clips: Vec<usize>,
}

impl Reach {
    fn of(segment: &Segment, sounds: &[(f64, f64)]) -> Self {
        let overlaps: Vec<f64> = sounds
            .iter()
            .map(|&(a, b)| (segment.end.min(b) - segment.start.max(a)).max(0.0))
            .collect();
        let clips = (0..sounds.len())
            .filter(|&k| overlaps[k] > CROSSING_SECONDS)
            .collect();
        Self { overlaps, clips }
    }
}

/// Hands the segments of a packed window to its clips, times made relative to each clip;
/// word timings are kept only with `keep_words` (the user asked for them).
/// `None` for a clip means its share is unclear and it must be decoded alone.
pub fn split_window(
    output: &PieceOutput,
    slots: &[Slot],
    keep_words: bool,
) -> Vec<Option<PieceOutput>> {
    let rate = f64::from(SAMPLE_RATE);
    let spans: Vec<(f64, f64)> = slots
        .iter()
        .map(|s| {
            let start = s.offset as f64 / rate;
            (start, start + s.samples as f64 / rate)
        })
        .collect();
    let sounds = clip_sounds(slots);
    let mut shares: Vec<Vec<Segment>> = vec![Vec::new(); slots.len()];
    let mut unclear = vec![false; slots.len()];
    for segment in &output.segments {
        let reach = Reach::of(segment, &sounds);
        if reach.clips.len() < 2 {
            let owner = owner_of(segment.start, segment.end, &spans, &reach.overlaps);
            let (start, end) = spans[owner];
            shares[owner].push(shifted(segment, start, end - start));
            continue;
        }
        match cut_between_words(segment, &sounds, &reach) {
            Some(parts) => {
                for (clip, part) in parts {
                    let (start, end) = spans[clip];
                    shares[clip].push(shifted(&part, start, end - start));
                }
            }
            None => {
                log::debug!(
                    "packed window: segment {:.2}–{:.2} s crosses clips {:?} (sound {:?}) and \
                     its words do not cut it: {:?}",
                    segment.start,
                    segment.end,
                    reach.clips,
                    sounds,
                    segment.text
                );
                for &k in &reach.clips {
                    unclear[k] = true;
                }
            }
        }
    }
    shares
        .into_iter()
        .zip(unclear)
        .map(|(mut segments, unclear)| {
            if !keep_words {
                for s in &mut segments {
                    s.words = None;
                }
            }
            (!unclear && !segments.is_empty()).then(|| PieceOutput {
                language: output.language.clone(),
                language_probability: output.language_probability,
                segments,
            })
        })
        .collect()
}

/// How far from a gap's silence the word boundary that cuts it may lie: DTW word times
/// are off by a few tenths of a second, most at a pause.
const CUT_SLACK_SECONDS: f64 = 0.3;
/// Below this many words expected of a clip's part, its count is not judged (a short tail
/// of a clip may hold one word or none).
const MIN_EXPECTED_WORDS: f64 = 2.0;

/// A segment across clips cut between its words, at each gap it runs through, at the one
/// word boundary in or within `CUT_SLACK_SECONDS` of the gap's silence (Note [Packed
/// windows cut between words]). Word boundaries, not words, are placed: DTW stretches the
/// first word after a pause back into it and the last word before one on into it, so a
/// word's own span can lie mostly in the wrong clip while the boundary next to it sits in
/// the silence. `None` when it has no aligned words, their tokens are not the segment's,
/// their times go back, a gap's silence has no boundary near it (a word runs through it)
/// or more than one (a word sits in it), or a clip's part holds under half the words its
/// seconds of sound hold in the rest of the segment.
fn cut_between_words(
    segment: &Segment,
    sounds: &[(f64, f64)],
    reach: &Reach,
) -> Option<Vec<(usize, Segment)>> {
    let words = segment.words.as_deref().filter(|w| !w.is_empty())?;
    if words.iter().map(|w| w.tokens).sum::<usize>() != segment.tokens.len() {
        return None;
    }
    let n = words.len();
    // Boundary i: before word i (0: the first word's start, n: the last word's end).
    let boundary = |i: usize| match i {
        0 => words[0].start,
        i if i == n => words[n - 1].end,
        i => (words[i - 1].end + words[i].start) / 2.0,
    };
    let times: Vec<f64> = (0..=n).map(boundary).collect();
    if times.windows(2).any(|pair| pair[1] < pair[0]) {
        return None;
    }
    let (&first_clip, &last_clip) = (reach.clips.first()?, reach.clips.last()?);
    let mut cuts = Vec::with_capacity(last_clip - first_clip + 2);
    cuts.push(0);
    for k in first_clip..last_clip {
        let (silence_start, silence_end) = (sounds[k].1, sounds[k + 1].0);
        let near_silence =
            |t: f64| t >= silence_start - CUT_SLACK_SECONDS && t <= silence_end + CUT_SLACK_SECONDS;
        // Two boundaries at the silence: a short word ("in", "the") was placed in it, and
        // which clip says it is a guess (seen to move a clip's first word to the one
        // before).
        let mut at_silence = (0..=n).filter(|&i| near_silence(times[i]));
        let (Some(cut), None) = (at_silence.next(), at_silence.next()) else {
            return None;
        };
        if cut < cuts[cuts.len() - 1] {
            return None;
        }
        cuts.push(cut);
    }
    cuts.push(n);
    // Whisper may read on past a whole clip (a short one between two halves of a
    // sentence): that clip's part is then a stray word or none. Each part must hold about
    // its share of the segment's words, by the seconds of the clip's sound it covers.
    let overlaps = &reach.overlaps;
    let pace = n as f64
        / overlaps[first_clip..=last_clip]
            .iter()
            .sum::<f64>()
            .max(1e-3);
    for (clip, range) in (first_clip..=last_clip).zip(cuts.windows(2)) {
        let expected = pace * overlaps[clip];
        if expected >= MIN_EXPECTED_WORDS && ((range[1] - range[0]) as f64) < expected / 2.0 {
            return None;
        }
    }
    let mut parts: Vec<(usize, Segment)> = Vec::new();
    let mut first_token = 0;
    for (clip, range) in (first_clip..=last_clip).zip(cuts.windows(2)) {
        let group = &words[range[0]..range[1]];
        if group.is_empty() {
            continue;
        }
        let tokens: usize = group.iter().map(|w| w.tokens).sum();
        let mut part = segment.clone();
        // The segment's own bounds where it has them, its words' between the parts.
        if range[0] > 0 {
            part.start = group[0].start;
        }
        if range[1] < n {
            part.end = group[group.len() - 1].end;
        }
        part.text = group.iter().map(|w| w.word.as_str()).collect();
        part.tokens = segment.tokens[first_token..first_token + tokens].to_vec();
        part.words = Some(group.to_vec());
        log::debug!(
            "packed window: segment {:.2}–{:.2} s cut between words; clip {clip} gets {:?}",
            segment.start,
            segment.end,
            part.text
        );
        parts.push((clip, part));
        first_token += tokens;
    }
    Some(parts)
}

/// The clip a span of the window belongs to: the one whose sound it overlaps most, or the
/// nearest one when it lies in a gap (Whisper's timestamps are only 20 ms-grained guesses).
fn owner_of(start: f64, end: f64, spans: &[(f64, f64)], overlaps: &[f64]) -> usize {
    let most = (0..spans.len()).max_by(|&a, &b| overlaps[a].total_cmp(&overlaps[b]));
    match most {
        Some(k) if overlaps[k] > 0.0 => k,
        _ => {
            let middle = (start + end) / 2.0;
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
    use crate::label::types::Word;

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
        let shares = split_window(&out, &slots, false);
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
        let shares = split_window(&out, &slots, false);
        assert!(shares[0].is_none() && shares[1].is_none());
        assert!(shares[2].is_some());
        // Nothing for the middle clip: it is decoded alone.
        let out = window(vec![
            segment(0.0, 4.0, " one"),
            segment(12.0, 15.0, " four"),
        ]);
        let shares = split_window(&out, &slots, false);
        assert!(shares[0].is_some() && shares[1].is_none() && shares[2].is_some());
    }

    /// A segment with aligned words (each of two tokens) at the given times.
    fn with_words(words: &[(f64, f64, &str)]) -> Segment {
        let mut s = segment(words[0].0, words[words.len() - 1].1, "");
        s.text = words.iter().map(|w| w.2).collect();
        s.tokens = (0..2 * words.len() as u32).collect();
        s.words = Some(
            words
                .iter()
                .map(|&(start, end, word)| Word {
                    start,
                    end,
                    word: word.into(),
                    probability: 0.9,
                    tokens: 2,
                })
                .collect(),
        );
        s
    }

    fn texts(shares: &[Option<PieceOutput>]) -> Vec<Option<Vec<String>>> {
        shares
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|o| o.segments.iter().map(|x| x.text.clone()).collect())
            })
            .collect()
    }

    #[test]
    fn a_segment_across_the_gap_is_cut_between_its_words() {
        // Clips at 0–4 s, 5–11 s, 12–15 s; one segment runs from the first into the second.
        let slots = packed(&[4.0, 6.0, 3.0]);
        let out = window(vec![
            with_words(&[
                (0.2, 1.5, " It"),
                (1.5, 3.8, " rained."),
                (5.3, 7.0, " Then"),
                (7.0, 9.9, " snow."),
            ]),
            segment(12.0, 15.0, " four"),
        ]);
        let shares = split_window(&out, &slots, false);
        assert_eq!(
            texts(&shares),
            [
                Some(vec![" It rained.".to_string()]),
                Some(vec![" Then snow.".to_string()]),
                Some(vec![" four".to_string()]),
            ]
        );
        let (first, second) = match (&shares[0], &shares[1]) {
            (Some(a), Some(b)) => (&a.segments[0], &b.segments[0]),
            _ => unreachable!("both shares were checked above"),
        };
        // Each part keeps its own tokens, and times on its clip's time line.
        assert_eq!(first.tokens, [0, 1, 2, 3]);
        assert_eq!(second.tokens, [4, 5, 6, 7]);
        assert_eq!((first.start, first.end), (0.2, 3.8));
        assert!((second.start - 0.3).abs() < 1e-9 && (second.end - 4.9).abs() < 1e-9);
        // Word timings go out only when asked for.
        assert!(first.words.is_none());
        let kept = split_window(&out, &slots, true);
        let words = kept[1].as_ref().and_then(|o| o.segments[0].words.clone());
        assert_eq!(words.map(|w| w.len()), Some(2));
    }

    #[test]
    fn only_a_window_with_a_segment_across_a_gap_needs_its_words() {
        // Clips at 0–4 s and 5–11 s: segments inside clips, one starting loose in the
        // silence, one in the gap, need no words; one running 0.5 s into the next does.
        let sounds = clip_sounds(&packed(&[4.0, 6.0]));
        assert_eq!(sounds, [(0.0, 4.0), (5.0, 11.0)]);
        let inside = window(vec![segment(0.0, 4.0, " a"), segment(4.2, 11.0, " b")]);
        assert!(!crosses_a_gap(&inside, &sounds));
        assert!(!crosses_a_gap(
            &window(vec![segment(4.1, 4.9, " c")]),
            &sounds
        ));
        assert!(crosses_a_gap(
            &window(vec![segment(2.0, 5.5, " d")]),
            &sounds
        ));
        // Only a clip's audible part counts: a quiet lead-in is not crossed into.
        let mut slots = packed(&[4.0, 6.0]);
        slots[1].sound = 16_000..96_000;
        assert!(!crosses_a_gap(
            &window(vec![segment(2.0, 5.5, " d")]),
            &clip_sounds(&slots)
        ));
    }

    #[test]
    fn a_crossing_its_words_cannot_cut_sends_the_clips_back_alone() {
        let slots = packed(&[4.0, 6.0]);
        // One word runs through the silence between the clips.
        let straddling = with_words(&[(0.5, 2.0, " It"), (3.0, 6.0, " rained.")]);
        // Word times that go back.
        let mut backwards =
            with_words(&[(0.5, 1.0, " It"), (6.0, 7.0, " rained."), (2.0, 3.0, " so")]);
        backwards.end = 9.0;
        // A short word placed in the silence: two boundaries there.
        let short_word_in_the_silence = with_words(&[
            (2.0, 4.0, " therefore"),
            (4.0, 4.6, " in"),
            (4.6, 6.0, " being"),
        ]);
        // Tokens the words do not account for.
        let mut unaccounted = with_words(&[(0.5, 2.0, " It"), (6.0, 7.0, " rained.")]);
        unaccounted.tokens.push(99);
        for crossing in [
            straddling,
            backwards,
            short_word_in_the_silence,
            unaccounted,
        ] {
            let shares = split_window(&window(vec![crossing]), &slots, false);
            assert!(shares.iter().all(Option::is_none), "{shares:?}");
        }
    }

    #[test]
    fn words_stretched_into_the_silence_stay_with_their_clips() {
        // DTW stretches the first word after a pause back into it (and the last before one
        // on into it): the cut is the boundary nearest the middle of the silence (4–5 s).
        let slots = packed(&[4.0, 6.0]);
        let back = with_words(&[
            (2.0, 3.9, " modern."),
            (3.9, 5.4, " The"),
            (5.4, 6.2, " book."),
        ]);
        let on = with_words(&[
            (2.0, 3.2, " young"),
            (3.2, 4.8, " man."),
            (4.8, 6.0, " The"),
        ]);
        for (crossing, first, second) in [
            (back, " modern.", " The book."),
            (on, " young man.", " The"),
        ] {
            let shares = split_window(&window(vec![crossing]), &slots, false);
            let expected = [
                Some(vec![first.to_string()]),
                Some(vec![second.to_string()]),
            ];
            assert_eq!(texts(&shares), expected);
        }
    }

    #[test]
    fn a_clip_read_past_is_decoded_alone() {
        // Clips at 0–4 s, 5–8 s, 9–13 s: the segment runs from the first to the third and
        // gives the middle clip's 3 s of sound one word (its neighbours: 2 words a second).
        let slots = packed(&[4.0, 3.0, 4.0]);
        let mut words: Vec<(f64, f64, &str)> = (0..8)
            .map(|i| (f64::from(i) * 0.5, f64::from(i) * 0.5 + 0.5, " a"))
            .collect();
        words.push((4.0, 9.0, " the"));
        words.extend((0..8).map(|i| (9.0 + f64::from(i) * 0.5, 9.5 + f64::from(i) * 0.5, " b")));
        let shares = split_window(&window(vec![with_words(&words)]), &slots, false);
        assert!(shares.iter().all(Option::is_none), "{shares:?}");
    }

    #[test]
    fn a_segment_in_a_gap_goes_to_the_nearest_clip() {
        let slots = packed(&[4.0, 6.0]);
        let out = window(vec![segment(0.0, 4.0, " one"), segment(4.1, 4.3, " uh")]);
        let shares = split_window(&out, &slots, false);
        let first = shares[0].as_ref().map(|o| o.segments.len());
        assert_eq!(first, Some(2));
        assert!(shares[1].is_none());
    }
}
