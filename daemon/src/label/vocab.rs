//! Whisper's vocabulary: the model's `tokenizer.json` (byte-level BPE) plus the special
//! tokens that steer decoding (start of transcript, language, task, timestamps).

use std::path::Path;

use super::error::LabelError;
use tokenizers::Tokenizer;

/// Seconds per timestamp token step.
pub const TIME_PRECISION: f64 = 0.02;

pub struct Vocab {
    tokenizer: Tokenizer,
    pub sot: u32,
    pub eot: u32,
    pub sot_prev: u32,
    pub sot_lm: Option<u32>,
    pub no_timestamps: u32,
    pub no_speech: Option<u32>,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    /// Language codes (`en`, `de`, …) with their token ids, in model order.
    pub languages: Vec<(String, u32)>,
}

impl Vocab {
    /// `language_ids` are the model's language tokens (from its `config.json`).
    pub fn load(model_dir: &Path, language_ids: &[u32]) -> Result<Self, LabelError> {
        let file = model_dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| {
            LabelError::Model(format!(
                "{}: cannot read the tokenizer: {e}",
                file.display()
            ))
        })?;
        let id = |token: &str| tokenizer.token_to_id(token);
        let need = |token: &str| {
            id(token)
                .ok_or_else(|| LabelError::Model(format!("{}: no {token} token", file.display())))
        };
        let languages = language_ids
            .iter()
            .filter_map(|&lang| {
                let token = tokenizer.id_to_token(lang)?;
                let code = token.strip_prefix("<|")?.strip_suffix("|>")?.to_string();
                Some((code, lang))
            })
            .collect();
        Ok(Self {
            sot: need("<|startoftranscript|>")?,
            eot: need("<|endoftext|>")?,
            sot_prev: need("<|startofprev|>")?,
            sot_lm: id("<|startoflm|>"),
            no_timestamps: need("<|notimestamps|>")?,
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            languages,
            tokenizer,
        })
    }

    pub fn timestamp_begin(&self) -> u32 {
        self.no_timestamps + 1
    }

    pub fn is_timestamp(&self, token: u32) -> bool {
        token >= self.timestamp_begin()
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|&(_, id)| id)
    }

    pub fn language_of_token(&self, token: &str) -> Option<&str> {
        let code = token.strip_prefix("<|")?.strip_suffix("|>")?;
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(c, _)| c.as_str())
    }

    /// Token ids of plain text (no special tokens added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// CTranslate2 takes prompts as token strings.
    pub fn token_string(&self, id: u32) -> String {
        self.tokenizer.id_to_token(id).unwrap_or_default()
    }

    /// Text of the ordinary tokens among `tokens` (specials and timestamps dropped).
    pub fn decode(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.tokenizer.decode(&text, false).unwrap_or_default()
    }

    /// Words and their tokens. Languages written without spaces split wherever the
    /// tokens decode to whole characters; others split before a space or punctuation.
    pub fn split_words(&self, tokens: &[u32], language: &str) -> Vec<(String, Vec<u32>)> {
        let pieces = self.split_on_characters(tokens);
        if matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue") {
            return pieces;
        }
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (text, ids) in pieces {
            let special = ids.first().is_some_and(|&t| t >= self.eot);
            let trimmed = text.trim();
            let punctuation =
                !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
            match words.last_mut() {
                Some(last) if !(special || text.starts_with(' ') || punctuation) => {
                    last.0.push_str(&text);
                    last.1.extend(ids);
                }
                _ => words.push((text, ids)),
            }
        }
        words
    }

    fn split_on_characters(&self, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
        let mut out = Vec::new();
        let mut current = Vec::new();
        for &token in tokens {
            current.push(token);
            let text = if token >= self.eot {
                self.token_string(token)
            } else {
                self.decode(&current)
            };
            // An incomplete UTF-8 sequence decodes to U+FFFD; wait for the next token.
            if !text.contains('\u{FFFD}') || current.len() > 8 {
                out.push((text, std::mem::take(&mut current)));
            }
        }
        if !current.is_empty() {
            out.push((self.decode(&current), current));
        }
        out
    }
}
