//! What labeling produces, shared by the engine, alignment, packing and records: segments,
//! words, and one piece's output.

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub word: String,
    pub probability: f32,
    /// Text tokens the word is made of, punctuation merged into it included (a segment is
    /// cut between words by them: Note [Packed windows cut between words]).
    #[serde(skip)]
    pub tokens: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Text token ids (needed for word alignment; not written out).
    #[serde(skip)]
    pub tokens: Vec<u32>,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub compression_ratio: f32,
    /// Set in multilingual mode, where each piece has its own language.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub words: Option<Vec<Word>>,
}

/// A plain segment for unit tests.
#[cfg(test)]
pub(crate) fn test_segment(start: f64, end: f64, text: &str) -> Segment {
    Segment {
        start,
        end,
        text: text.into(),
        tokens: Vec::new(),
        avg_logprob: -0.2,
        no_speech_prob: 0.01,
        compression_ratio: 1.0,
        language: None,
        words: None,
    }
}

/// Result for one piece, times relative to the piece start.
#[derive(Clone, Debug)]
pub struct PieceOutput {
    pub language: String,
    pub language_probability: f32,
    pub segments: Vec<Segment>,
}
