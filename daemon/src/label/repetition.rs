//! How repetitive a decoded text is: the compression ratio Whisper's fallback rule judges,
//! and the back-to-back runs of a short phrase that mark a hallucination loop even where
//! the ratio of the whole text does not (Note [Fallback without a storm]).

use std::io::Write;

/// The longest phrase, in text tokens, whose back-to-back repetition counts as a loop.
/// Longer phrases repeated are sentences, and speech repeats sentences (a looped
/// announcement, a chorus, a dataset of one prompt read many times).
const MAX_LOOP_PHRASE: usize = 8;
/// Repetitions a run needs: "yeah, yeah, yeah, yeah" is speech.
const MIN_LOOP_REPEATS: usize = 5;
/// Text tokens a run needs: a one-token word said five times over is speech too.
const MIN_LOOP_TOKENS: usize = 20;

/// zlib compression ratio of the text: repetitive hallucinations compress very well.
pub(super) fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = encoder
        .write_all(text.as_bytes())
        .and_then(|_| encoder.finish())
        .map_or(text.len(), |c| c.len());
    text.len() as f32 / compressed.max(1) as f32
}

/// Tokens in the longest run of one phrase of at most `MAX_LOOP_PHRASE` text tokens said
/// back to back at least `MIN_LOOP_REPEATS` times and over at least `MIN_LOOP_TOKENS`
/// tokens; 0 where there is none. `tokens` are text tokens only: timestamps between the
/// repetitions would hide them.
///
/// A decoder stuck in a loop writes one short phrase over and over ("yeah, yeah, …" for
/// 26 s of a meeting, found on pyannote-audio's `tst00.wav`), at a pace a speaker could
/// keep, and within a text that may compress under the threshold; speakers do not say the
/// same few words twenty times in a row.
pub(super) fn loop_run(tokens: &[u32]) -> usize {
    let mut longest = 0;
    for phrase in 1..=MAX_LOOP_PHRASE.min(tokens.len() / MIN_LOOP_REPEATS) {
        // `same` counts tokens equal to the one a phrase earlier, in a row: a run of one
        // phrase repeated k times has k - 1 phrases of them.
        let mut same = 0;
        for i in phrase..tokens.len() {
            if tokens[i] == tokens[i - phrase] {
                same += 1;
                let run = same + phrase;
                if run / phrase >= MIN_LOOP_REPEATS && run >= MIN_LOOP_TOKENS {
                    longest = longest.max(run);
                }
            } else {
                same = 0;
            }
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repeated(phrase: &[u32], times: usize) -> Vec<u32> {
        phrase
            .iter()
            .copied()
            .cycle()
            .take(phrase.len() * times)
            .collect()
    }

    #[test]
    fn a_short_phrase_said_over_and_over_is_a_loop() {
        // "yeah," a hundred times after a sentence, as the decoder wrote it.
        let mut tokens = vec![1, 2, 3, 4, 5, 6, 7];
        tokens.extend(repeated(&[10, 11], 100));
        assert_eq!(loop_run(&tokens), 200);
        // A six-token sentence five times over (30 tokens).
        let tokens = repeated(&[20, 21, 22, 23, 24, 25], 5);
        assert_eq!(loop_run(&tokens), 30);
    }

    #[test]
    fn speech_that_repeats_itself_is_not_a_loop() {
        // "yeah, yeah, yeah, yeah" (8 tokens), a word said ten times (10 tokens), and a
        // 16-token sentence read five times over: speech.
        assert_eq!(loop_run(&repeated(&[10, 11], 4)), 0);
        assert_eq!(loop_run(&repeated(&[12], 10)), 0);
        let sentence: Vec<u32> = (100..116).collect();
        assert_eq!(loop_run(&repeated(&sentence, 5)), 0);
        // Text with no repetition, and nothing at all.
        assert_eq!(loop_run(&(0..400).collect::<Vec<u32>>()), 0);
        assert_eq!(loop_run(&[]), 0);
    }

    #[test]
    fn compression_ratio_of_repetitive_text_is_high() {
        assert!(compression_ratio(&"yeah, ".repeat(50)) > 2.4);
        assert!(compression_ratio("The birch canoe slid on the smooth planks.") < 2.4);
        assert_eq!(compression_ratio(""), 0.0);
    }
}
