//! The per-file labeling record (one JSONL line) and the subtitle/text formats written from it.

use std::fmt::Write as _;

use super::types::{PieceOutput, Segment};
use crate::vad::SpeechMap;

/// One file's transcription, or the reason it failed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileLabel {
    pub audio_filepath: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub language_probability: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub segments: Option<Vec<Segment>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// With voice activity detection: seconds of the recording transcribed and removed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speech_kept: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speech_removed: Option<f64>,
    /// The damage decoding met (a truncated or corrupt stretch: what and where); the label
    /// is of the audio around it. See Note [Damage rule].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub damage: Option<String>,
}

impl FileLabel {
    pub fn failed(path: &str, duration: Option<f64>, error: String) -> Self {
        Self {
            audio_filepath: path.to_string(),
            duration,
            error: Some(error),
            ..Self::default()
        }
    }

    /// Joins the pieces of one file; `offsets` are the pieces' start times in the file.
    pub fn from_pieces(
        path: &str,
        duration: f64,
        pieces: Vec<PieceOutput>,
        offsets: &[f64],
        multilingual: bool,
    ) -> Self {
        let mut segments = Vec::new();
        let mut speech_by_language: Vec<(String, f64, f32)> = Vec::new();
        for (piece, &offset) in pieces.iter().zip(offsets) {
            let spoken: f64 = piece.segments.iter().map(|s| s.end - s.start).sum();
            match speech_by_language
                .iter_mut()
                .find(|(l, _, _)| *l == piece.language)
            {
                Some(entry) => {
                    entry.1 += spoken;
                    entry.2 = entry.2.max(piece.language_probability);
                }
                None => speech_by_language.push((
                    piece.language.clone(),
                    spoken,
                    piece.language_probability,
                )),
            }
            for segment in &piece.segments {
                let mut s = segment.clone();
                s.start = round3(s.start + offset);
                s.end = round3(s.end + offset);
                if let Some(words) = &mut s.words {
                    for w in words {
                        w.start = round3(w.start + offset);
                        w.end = round3(w.end + offset);
                    }
                }
                if multilingual {
                    s.language = Some(piece.language.clone());
                }
                segments.push(s);
            }
        }
        // Pieces decoded again to fill skipped speech come last; put everything in time
        // order and keep times from going backwards.
        segments.sort_by(|a: &Segment, b: &Segment| a.start.total_cmp(&b.start));
        let mut floor = 0.0f64;
        for s in &mut segments {
            s.start = s.start.max(floor);
            s.end = s.end.max(s.start);
            floor = s.end;
        }
        // Without re-detection every piece has the file's language; with it, the file's
        // language is the one spoken longest.
        let (language, probability) = if multilingual {
            speech_by_language
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(l, _, p)| (l.clone(), *p))
        } else {
            pieces
                .first()
                .map(|p| (p.language.clone(), p.language_probability))
        }
        .unwrap_or_else(|| ("en".into(), 0.0));
        let text = segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            audio_filepath: path.to_string(),
            duration: Some(round3(duration)),
            text: Some(text),
            language: Some(language),
            language_probability: Some(probability),
            segments: Some(segments),
            error: None,
            speech_kept: None,
            speech_removed: None,
            damage: None,
        }
    }

    /// The label with the damage its audio was decoded around, if any.
    pub fn with_damage(mut self, damage: Option<String>) -> Self {
        self.damage = damage;
        self
    }

    /// Times of a label made from the speech VAD kept, moved to the recording's, with the
    /// seconds kept and removed; unchanged without `speech`.
    pub fn in_recording(mut self, speech: Option<&SpeechMap>) -> Self {
        let Some(map) = speech else {
            return self;
        };
        for s in self.segments.iter_mut().flatten() {
            (s.start, s.end) = map.span_to_recording(s.start, s.end);
            (s.start, s.end) = (round3(s.start), round3(s.end));
            for w in s.words.iter_mut().flatten() {
                (w.start, w.end) = map.span_to_recording(w.start, w.end);
                (w.start, w.end) = (round3(w.start), round3(w.end));
            }
        }
        self.speech_kept = Some(round3(map.kept_seconds()));
        self.speech_removed = Some(round3(map.removed_seconds()));
        self
    }

    pub fn to_json_line(&self) -> String {
        // Serialising plain data cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn segments(&self) -> &[Segment] {
        self.segments.as_deref().unwrap_or(&[])
    }
}

/// Output formats written one file per input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TextFormat {
    Srt,
    Vtt,
    Txt,
    Tsv,
    Json,
}

impl TextFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Srt => "srt",
            Self::Vtt => "vtt",
            Self::Txt => "txt",
            Self::Tsv => "tsv",
            Self::Json => "json",
        }
    }

    pub fn render(self, label: &FileLabel) -> String {
        let mut out = String::new();
        match self {
            Self::Srt => {
                for (i, s) in label.segments().iter().enumerate() {
                    let _ = write!(
                        out,
                        "{}\n{} --> {}\n{}\n\n",
                        i + 1,
                        clock(s.start, ','),
                        clock(s.end, ','),
                        s.text.trim()
                    );
                }
            }
            Self::Vtt => {
                out.push_str("WEBVTT\n\n");
                for s in label.segments() {
                    let _ = write!(
                        out,
                        "{} --> {}\n{}\n\n",
                        clock(s.start, '.'),
                        clock(s.end, '.'),
                        s.text.trim()
                    );
                }
            }
            Self::Txt => {
                for s in label.segments() {
                    let _ = writeln!(out, "{}", s.text.trim());
                }
            }
            Self::Tsv => {
                out.push_str("start\tend\ttext\n");
                for s in label.segments() {
                    let text = s.text.trim().replace('\t', " ");
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}",
                        (s.start * 1000.0).round() as i64,
                        (s.end * 1000.0).round() as i64,
                        text
                    );
                }
            }
            Self::Json => {
                out = serde_json::to_string_pretty(label).unwrap_or_default();
                out.push('\n');
            }
        }
        out
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn clock(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::test_segment as segment;

    #[test]
    fn subtitle_formats() {
        let label = FileLabel {
            audio_filepath: "a.wav".into(),
            segments: Some(vec![
                segment(0.0, 1.5, " Hello."),
                segment(3661.25, 3662.0, " Bye."),
            ]),
            ..FileLabel::default()
        };
        assert_eq!(
            TextFormat::Srt.render(&label),
            "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        assert!(TextFormat::Vtt
            .render(&label)
            .starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n"));
        assert_eq!(TextFormat::Txt.render(&label), "Hello.\nBye.\n");
        assert_eq!(
            TextFormat::Tsv.render(&label),
            "start\tend\ttext\n0\t1500\tHello.\n3661250\t3662000\tBye.\n"
        );
        let json: FileLabel = serde_json::from_str(&TextFormat::Json.render(&label)).unwrap();
        assert_eq!(json.segments.map(|s| s.len()), Some(2));
    }

    #[test]
    fn pieces_are_shifted_to_file_time() {
        let piece = |lang: &str, segs: Vec<Segment>| PieceOutput {
            language: lang.into(),
            language_probability: 0.9,
            segments: segs,
        };
        let label = FileLabel::from_pieces(
            "long.wav",
            50.0,
            vec![
                piece("en", vec![segment(1.0, 2.0, " One")]),
                piece("en", vec![segment(0.5, 4.0, " two")]),
            ],
            &[0.0, 28.0],
            false,
        );
        let segs = label.segments.unwrap();
        assert_eq!((segs[1].start, segs[1].end), (28.5, 32.0));
        assert_eq!(label.text.as_deref(), Some("One two"));
        assert_eq!(label.language.as_deref(), Some("en"));
    }
}
