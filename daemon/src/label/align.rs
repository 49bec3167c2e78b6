//! Word timestamps from a CTranslate2 alignment (token index, encoder frame) path: words
//! start where their first token's frame jumps, punctuation joins its word, and overlong
//! words at pauses are trimmed (the same heuristics as faster-whisper, so timings match).

use super::types::{PieceOutput, Segment, Word};
use super::vocab::Vocab;

/// Encoder frames per second (the encoder halves the 100 Hz mel rate).
const FRAMES_PER_SECOND: f64 = 50.0;
const PREPEND_PUNCTUATION: &str = "\"'“¿([{-";
const APPEND_PUNCTUATION: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END: &str = ".。!！?？";

pub struct AlignInput<'a> {
    /// (text token index, encoder frame) along the DTW path.
    pub alignments: Vec<(i64, i64)>,
    pub token_probs: &'a [f32],
}

struct Timing {
    word: String,
    tokens: usize,
    start: f64,
    end: f64,
    probability: f32,
}

/// Fills `words` of every segment of one piece (times relative to the piece).
pub fn align_words(vocab: &Vocab, piece: &mut PieceOutput, input: AlignInput<'_>) {
    let mut tokens: Vec<u32> = piece
        .segments
        .iter()
        .flat_map(|s| s.tokens.iter().copied())
        .collect();
    tokens.push(vocab.eot);
    let words = vocab.split_words(&tokens, &piece.language);
    if words.len() <= 1 {
        return;
    }
    let jump_times = jump_times(&input.alignments);
    let mut timings = word_timings(&words[..words.len() - 1], &jump_times, input.token_probs);

    let (median, max_duration) = typical_durations(&timings);
    if max_duration > 0.0 {
        clip_at_sentence_ends(&mut timings, max_duration);
    }
    merge_punctuation(&mut timings);

    let mut next_timing = 0usize;
    let mut last_speech = 0.0f64;
    for segment in &mut piece.segments {
        let mut segment_words = take_words(&timings, &mut next_timing, segment.tokens.len());
        if let Some(end) = settle_segment(
            segment,
            &mut segment_words,
            median,
            max_duration,
            last_speech,
        ) {
            last_speech = end;
        }
        segment.words = Some(segment_words);
    }
    keep_monotonic(&mut piece.segments);
}

/// Frame of each text token (in seconds): where the path first reaches it.
fn jump_times(alignments: &[(i64, i64)]) -> Vec<f64> {
    let mut jump_times = Vec::new();
    let mut previous: Option<i64> = None;
    for &(token, frame) in alignments {
        if previous != Some(token) {
            jump_times.push(frame as f64 / FRAMES_PER_SECOND);
            previous = Some(token);
        }
    }
    jump_times
}

/// Each word's span, from the jump times of its first token and of the next word's, and
/// its mean token probability.
fn word_timings(
    words: &[(String, Vec<u32>)],
    jump_times: &[f64],
    token_probs: &[f32],
) -> Vec<Timing> {
    let time_at = |i: usize| {
        jump_times
            .get(i)
            .or(jump_times.last())
            .copied()
            .unwrap_or(0.0)
    };
    let mut timings = Vec::new();
    let mut boundary = 0usize;
    for (word, ids) in words {
        let next = boundary + ids.len();
        let probs = token_probs.get(boundary..next.min(token_probs.len()));
        let probability = probs
            .filter(|p| !p.is_empty())
            .map_or(0.0, |p| p.iter().sum::<f32>() / p.len() as f32);
        timings.push(Timing {
            word: word.clone(),
            tokens: ids.len(),
            start: time_at(boundary),
            end: time_at(next),
            probability,
        });
        boundary = next;
    }
    timings
}

/// Caps words longer than `max_duration` that end a sentence or follow its end.
fn clip_at_sentence_ends(timings: &mut [Timing], max_duration: f64) {
    for i in 1..timings.len() {
        if timings[i].end - timings[i].start > max_duration {
            if SENTENCE_END.contains(timings[i].word.as_str()) {
                timings[i].end = timings[i].start + max_duration;
            } else if SENTENCE_END.contains(timings[i - 1].word.as_str()) {
                timings[i].start = timings[i].end - max_duration;
            }
        }
    }
}

/// The words of a segment of `token_count` tokens, taken from `timings` at `next_timing`
/// (which moves past them); punctuation merged into a neighbour leaves no word.
fn take_words(timings: &[Timing], next_timing: &mut usize, token_count: usize) -> Vec<Word> {
    let mut words = Vec::new();
    let mut consumed = 0usize;
    while *next_timing < timings.len() && consumed < token_count {
        let t = &timings[*next_timing];
        if !t.word.is_empty() {
            words.push(Word {
                start: round2(t.start),
                end: round2(t.end),
                word: t.word.clone(),
                probability: t.probability,
                tokens: t.tokens,
            });
        }
        consumed += t.tokens;
        *next_timing += 1;
    }
    words
}

/// Adjusts a segment's bounds and its first and last words to each other. Returns the
/// segment's new end (the last speech so far), or `None` when it has no words.
fn settle_segment(
    segment: &mut Segment,
    words: &mut [Word],
    median: f64,
    max_duration: f64,
    last_speech: f64,
) -> Option<f64> {
    let first = words.first().cloned()?;
    // The first word after a long pause is often stretched back into the pause.
    if first.end - last_speech > median * 4.0
        && (first.end - first.start > max_duration
            || (words.len() > 1 && words[1].end - first.start > max_duration * 2.0))
    {
        if words.len() > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
    if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median).min(segment.start).max(0.0);
    } else {
        segment.start = words[0].start;
    }
    let last = words.len() - 1;
    if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
        words[last].end = (words[last].start + median).max(segment.end);
    } else {
        segment.end = words[last].end;
    }
    Some(segment.end)
}

/// Adjustments above may pull a segment boundary back; keep times monotonic.
fn keep_monotonic(segments: &mut [Segment]) {
    let mut floor = 0.0f64;
    for segment in segments {
        segment.start = segment.start.max(floor);
        segment.end = segment.end.max(segment.start);
        floor = segment.end;
        if let Some(words) = &mut segment.words {
            let mut word_floor = segment.start;
            for w in words.iter_mut() {
                w.start = w.start.max(word_floor).min(segment.end);
                w.end = w.end.max(w.start).min(segment.end);
                word_floor = w.end;
            }
        }
    }
}

/// Median non-zero word duration (capped at 0.7 s) and twice that.
fn typical_durations(timings: &[Timing]) -> (f64, f64) {
    let mut durations: Vec<f64> = timings
        .iter()
        .map(|t| t.end - t.start)
        .filter(|&d| d != 0.0)
        .collect();
    if durations.is_empty() {
        return (0.0, 0.0);
    }
    durations.sort_by(f64::total_cmp);
    let n = durations.len();
    let median = if n % 2 == 1 {
        durations[n / 2]
    } else {
        (durations[n / 2 - 1] + durations[n / 2]) / 2.0
    };
    let median = median.min(0.7);
    (median, median * 2.0)
}

/// Opening punctuation joins the next word, closing punctuation the previous one.
fn merge_punctuation(timings: &mut [Timing]) {
    if timings.len() < 2 {
        return;
    }
    let mut j = timings.len() - 1;
    for i in (0..timings.len() - 1).rev() {
        let previous = &timings[i];
        if previous.word.starts_with(' ')
            && PREPEND_PUNCTUATION.contains(previous.word.trim())
            && !previous.word.trim().is_empty()
        {
            let (word, tokens) = (std::mem::take(&mut timings[i].word), timings[i].tokens);
            timings[i].tokens = 0;
            timings[j].word = word + &timings[j].word;
            timings[j].tokens += tokens;
        } else {
            j = i;
        }
    }
    let mut i = 0;
    for j in 1..timings.len() {
        let following = &timings[j].word;
        if !timings[i].word.ends_with(' ')
            && !following.is_empty()
            && APPEND_PUNCTUATION.contains(following.as_str())
        {
            let (word, tokens) = (std::mem::take(&mut timings[j].word), timings[j].tokens);
            timings[j].tokens = 0;
            timings[i].word.push_str(&word);
            timings[i].tokens += tokens;
        } else {
            i = j;
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Splits segments that carry word times at sentence ends. A piece decoded without
/// timestamps is one segment of up to 30 s; its words give sentence-sized segments back.
pub fn split_sentences(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        let Some(words) = segment.words.clone().filter(|w| w.len() > 1) else {
            out.push(segment);
            continue;
        };
        let mut sentence: Vec<Word> = Vec::new();
        let last = words.len() - 1;
        for (i, word) in words.into_iter().enumerate() {
            let ends = word
                .word
                .trim_end()
                .chars()
                .last()
                .is_some_and(|c| SENTENCE_END.contains(c));
            sentence.push(word);
            if ends || i == last {
                let first = &sentence[0];
                let end = sentence.last().map_or(first.end, |w| w.end);
                out.push(Segment {
                    start: first.start,
                    end,
                    text: sentence.iter().map(|w| w.word.as_str()).collect(),
                    tokens: Vec::new(),
                    words: Some(std::mem::take(&mut sentence)),
                    ..segment.clone()
                });
            }
        }
    }
    out
}
