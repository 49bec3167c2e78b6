//! A label in the formats clients ask for: OpenAI's `json`, `text`, `srt`, `vtt` and
//! `verbose_json`, and whisper-asr-webservice's `txt`, `vtt`, `srt`, `tsv` and `json`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::ApiError;
use super::languages::name_of;
use crate::label::record::TextFormat;
use crate::label::{FileLabel, Segment};

/// OpenAI's `response_format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpenAiFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl OpenAiFormat {
    pub(super) fn parse(given: Option<&str>) -> Result<Self, ApiError> {
        Ok(match given.unwrap_or("json") {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown response_format '{other}' (json, text, srt, verbose_json or vtt)"
                ))
                .param("response_format"))
            }
        })
    }

    pub(super) fn render(self, label: &FileLabel, task: &str, words: bool) -> Response {
        let text = label.text.clone().unwrap_or_default();
        match self {
            Self::Json => axum::Json(json!({ "text": text })).into_response(),
            Self::Text => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
            Self::Srt => plain(TextFormat::Srt.render(label), "text/plain; charset=utf-8"),
            Self::Vtt => plain(TextFormat::Vtt.render(label), "text/vtt; charset=utf-8"),
            Self::VerboseJson => axum::Json(verbose_json(label, task, words)).into_response(),
        }
    }
}

/// OpenAI's `verbose_json`: task, language name, duration, text, segments, and words when
/// asked for.
pub(super) fn verbose_json(label: &FileLabel, task: &str, words: bool) -> Value {
    let segments: &[Segment] = label.segments.as_deref().unwrap_or(&[]);
    let mut body = json!({
        "task": task,
        "language": name_of(label.language.as_deref().unwrap_or("en")),
        "duration": label.duration.unwrap_or(0.0),
        "text": label.text.clone().unwrap_or_default(),
        "segments": segments_json(segments),
    });
    if words {
        let words: Vec<Value> = segments
            .iter()
            .flat_map(|s| s.words.iter().flatten())
            .map(|w| json!({ "word": w.word.trim(), "start": w.start, "end": w.end }))
            .collect();
        body["words"] = Value::Array(words);
    }
    body
}

/// Whisper's segment objects, as OpenAI and whisper-asr-webservice write them.
fn segments_json(segments: &[Segment]) -> Vec<Value> {
    segments
        .iter()
        .enumerate()
        .map(|(id, s)| {
            let mut segment = json!({
                "id": id,
                "seek": (s.start * 100.0).round() as i64,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": 0.0,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            });
            if let Some(words) = &s.words {
                segment["words"] = json!(words);
            }
            segment
        })
        .collect()
}

/// whisper-asr-webservice's `output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AsrOutput {
    Text(TextFormat),
    Json,
}

impl AsrOutput {
    pub(super) fn parse(given: Option<&str>) -> Result<Self, ApiError> {
        Ok(match given.unwrap_or("txt") {
            "txt" => Self::Text(TextFormat::Txt),
            "vtt" => Self::Text(TextFormat::Vtt),
            "srt" => Self::Text(TextFormat::Srt),
            "tsv" => Self::Text(TextFormat::Tsv),
            "json" => Self::Json,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown output '{other}' (txt, vtt, srt, tsv or json)"
                ))
                .param("output"))
            }
        })
    }

    /// The answer as a download named after the upload, as whisper-asr-webservice sends it.
    pub(super) fn render(self, label: &FileLabel, name: &str) -> Response {
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        let (body, extension, kind) = match self {
            Self::Text(format) => (
                format.render(label),
                format.extension(),
                "text/plain; charset=utf-8",
            ),
            Self::Json => {
                let segments = segments_json(label.segments.as_deref().unwrap_or(&[]));
                let body = json!({
                    "text": label.text.clone().unwrap_or_default(),
                    "segments": segments,
                    "language": label.language,
                });
                (body.to_string(), "json", "application/json")
            }
        };
        let disposition = format!(
            "attachment; filename=\"{}.{extension}\"",
            stem.replace(['"', '\\', '\r', '\n'], "_")
        );
        (
            [
                (header::CONTENT_TYPE, kind.to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            body,
        )
            .into_response()
    }
}

fn plain(body: String, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
