//! OpenAI's audio API: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`,
//! `GET /v1/models`, as the official client calls them.

use std::convert::Infallible;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::languages::code_of;
use super::respond::OpenAiFormat;
use super::upload::read_form;
use super::{flag, label_of, Shared, OPENAI_MODEL};
use crate::label::live::Task;
use crate::label::FileLabel;

pub(super) async fn transcriptions(
    State(service): State<Shared>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let handle = transcribe(&service, multipart, "transcribe");
    service.within_timeout(handle).await
}

pub(super) async fn translations(
    State(service): State<Shared>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let handle = transcribe(&service, multipart, "translate");
    service.within_timeout(handle).await
}

async fn transcribe(
    service: &Shared,
    multipart: Result<Multipart, MultipartRejection>,
    task: &'static str,
) -> Result<Response, ApiError> {
    let form = read_form(multipart, "file", service.config.max_upload_bytes).await?;
    service.check_model(form.field("model"))?;
    let format = OpenAiFormat::parse(form.field("response_format"))?;
    let mut options = service.config.defaults.clone();
    options.task = task.to_string();
    // Translations detect the spoken language; OpenAI's route takes none.
    if task == "transcribe" {
        options.language = form.field("language").and_then(code_of);
    }
    if let Some(prompt) = form.field("prompt").filter(|p| !p.trim().is_empty()) {
        options.initial_prompt = Some(prompt.to_string());
    }
    if let Some(given) = form.field("temperature").filter(|t| !t.trim().is_empty()) {
        let temperature: f32 = given
            .trim()
            .parse()
            .ok()
            .filter(|t: &f32| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "temperature must be a number from 0 to 1, not '{given}'"
                ))
                .param("temperature")
            })?;
        // OpenAI: 0 lets the model raise it as needed (our fallback ladder); above 0, fixed.
        if temperature > 0.0 {
            options.temperatures = vec![temperature];
        }
    }
    let mut words = false;
    for granularity in form
        .all("timestamp_granularities[]")
        .chain(form.all("timestamp_granularities"))
    {
        match granularity {
            "word" => words = true,
            "segment" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown timestamp granularity '{other}' (word or segment)"
                ))
                .param("timestamp_granularities[]"))
            }
        }
    }
    options.word_timestamps = words;
    let stream = flag(form.field("stream"), "stream", false)?;
    let label = label_of(service.run(form, options, Task::Label).await?)?;
    if stream {
        return Ok(text_events(&label));
    }
    Ok(format.render(&label, task, words))
}

/// `stream=true`: server-sent events, a `transcript.text.delta` per segment and a final
/// `transcript.text.done`; the deltas join to the final text.
fn text_events(label: &FileLabel) -> Response {
    let mut events = Vec::new();
    let mut first = true;
    for segment in label.segments.iter().flatten() {
        let text = segment.text.trim();
        if text.is_empty() {
            continue;
        }
        let delta = if first {
            text.to_string()
        } else {
            format!(" {text}")
        };
        first = false;
        let body = json!({ "type": "transcript.text.delta", "delta": delta });
        events.push(Event::default().data(body.to_string()));
    }
    let text = label.text.clone().unwrap_or_default();
    let done = json!({ "type": "transcript.text.done", "text": text });
    events.push(Event::default().data(done.to_string()));
    let stream = futures_util::stream::iter(events.into_iter().map(Ok::<Event, Infallible>));
    Sse::new(stream).into_response()
}

fn model_object(id: &str) -> serde_json::Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "audiodecode" })
}

/// The model served, by its name and as `whisper-1`.
pub(super) async fn models(State(service): State<Shared>) -> Response {
    let data = vec![
        model_object(OPENAI_MODEL),
        model_object(&service.config.model_name),
    ];
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

pub(super) async fn model(State(service): State<Shared>, Path(model): Path<String>) -> Response {
    if model == OPENAI_MODEL || model == service.config.model_name {
        return axum::Json(model_object(&model)).into_response();
    }
    match service.check_model(Some(&model)) {
        Ok(()) => axum::Json(model_object(&model)).into_response(),
        Err(e) => ApiError {
            status: StatusCode::NOT_FOUND,
            ..e
        }
        .into_response(),
    }
}
