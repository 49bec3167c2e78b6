//! whisper-asr-webservice's routes, `POST /asr` and `POST /detect-language`, with its
//! parameters in the query and the audio in an `audio_file` form field.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::languages::{code_of, name_of};
use super::respond::AsrOutput;
use super::upload::{read_form, wrap_raw_pcm, Form};
use super::{label_of, Shared};
use crate::label::live::{Answer, Task};

/// The query parameters; booleans as strings, checked by `super::flag`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AsrQuery {
    encode: Option<String>,
    task: Option<String>,
    language: Option<String>,
    initial_prompt: Option<String>,
    vad_filter: Option<String>,
    word_timestamps: Option<String>,
    output: Option<String>,
}

fn query(given: Result<Query<AsrQuery>, QueryRejection>) -> Result<AsrQuery, ApiError> {
    given
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

/// The `audio_file` form; with `encode=false` its bytes are raw 16 kHz mono PCM.
async fn audio_form(
    service: &Shared,
    params: &AsrQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Form, ApiError> {
    let encode = super::flag(params.encode.as_deref(), "encode", true)?;
    let mut form = read_form(multipart, "audio_file", service.config.max_upload_bytes).await?;
    if !encode {
        wrap_raw_pcm(&mut form)?;
    }
    Ok(form)
}

pub(super) async fn asr(
    State(service): State<Shared>,
    params: Result<Query<AsrQuery>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let handle = async {
        let params = query(params)?;
        let output = AsrOutput::parse(params.output.as_deref())?;
        let mut options = service.config.defaults.clone();
        options.task = match params.task.as_deref().unwrap_or("transcribe") {
            task @ ("transcribe" | "translate") => task.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown task '{other}' (transcribe or translate)"
                ))
                .param("task"))
            }
        };
        options.language = params.language.as_deref().and_then(code_of);
        options.initial_prompt = params
            .initial_prompt
            .clone()
            .filter(|p| !p.trim().is_empty());
        // whisper-asr-webservice's defaults: no VAD, no word times.
        options.vad_filter = super::flag(params.vad_filter.as_deref(), "vad_filter", false)?;
        options.word_timestamps =
            super::flag(params.word_timestamps.as_deref(), "word_timestamps", false)?;
        let form = audio_form(&service, &params, multipart).await?;
        let name = form.name.clone();
        let label = label_of(service.run(form, options, Task::Label).await?)?;
        Ok(output.render(&label, &name))
    };
    service.within_timeout(handle).await
}

pub(super) async fn detect_language(
    State(service): State<Shared>,
    params: Result<Query<AsrQuery>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let handle = async {
        let params = query(params)?;
        let form = audio_form(&service, &params, multipart).await?;
        let options = service.config.defaults.clone();
        match service.run(form, options, Task::DetectLanguage).await? {
            Answer::Language(found) => Ok(axum::Json(json!({
                "detected_language": name_of(&found.language),
                "language_code": found.language,
                "confidence": found.probability,
            }))
            .into_response()),
            Answer::Label(label) => label_of(Answer::Label(label))
                .map(|_| ApiError::bad_request("expected a language").into_response()),
        }
    };
    service.within_timeout(handle).await
}
