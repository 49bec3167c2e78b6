//! OpenAI's audio API: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`,
//! `GET /v1/models`, as the official client calls them.

use std::convert::Infallible;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::languages::code_of;
use super::respond::OpenAiFormat;
use super::upload::read_form;
use super::{answer_of, flag, label_of, Shared, OPENAI_MODEL};
use crate::label::live::{Answer, LiveError, Reply, Task};
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
    if flag(form.field("stream"), "stream", false)? {
        let (progress, deltas) = tokio::sync::mpsc::unbounded_channel();
        let reply = service.submit(form, options, Task::Label, Some(progress))?;
        return text_events(reply, deltas, service.config.request_timeout).await;
    }
    let label = label_of(service.run(form, options, Task::Label).await?)?;
    Ok(format.render(&label, task, words))
}

fn delta_event(delta: &str) -> Event {
    let body = json!({ "type": "transcript.text.delta", "delta": delta });
    Event::default().data(body.to_string())
}

fn done_event(text: &str) -> Event {
    let body = json!({ "type": "transcript.text.done", "text": text });
    Event::default().data(body.to_string())
}

/// A failure after the stream began, when the status code is sent already.
fn error_event(error: &ApiError) -> Event {
    let body = json!({
        "type": "error",
        "error": { "message": error.message, "type": "server_error", "code": error.code },
    });
    Event::default().data(body.to_string())
}

/// `stream=true`: server-sent events, a `transcript.text.delta` as each piece's text is
/// final (Note [Streamed pieces]) and a final `transcript.text.done`; the deltas join to
/// the final text. Until the first text comes, a failure is still an error status (a bad
/// upload is a 400); after it, an `error` event ends the stream. A client that leaves
/// drops the reply, and the service forgets the request.
async fn text_events(
    mut reply: Reply,
    mut deltas: UnboundedReceiver<String>,
    limit: std::time::Duration,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + limit;
    let first = tokio::select! {
        delta = deltas.recv() => delta,
        answer = &mut reply => return all_at_once(answer),
    };
    // No text, and none to come (the request ended, or failed before its pieces): the
    // answer decides, a failure still as its status.
    let Some(first) = first else {
        return match tokio::time::timeout_at(deadline, reply).await {
            Ok(answer) => all_at_once(answer),
            Err(_) => Err(ApiError::timed_out(limit)),
        };
    };
    let mut streamer = Streamer {
        pending: std::collections::VecDeque::new(),
        sent: String::new(),
        deltas: Some(deltas),
        reply: Some(reply),
        deadline,
        limit,
    };
    streamer.send(first);
    let events = futures_util::stream::unfold(streamer, |mut streamer| async move {
        let event = streamer.next().await?;
        Some((Ok(event), streamer))
    });
    Ok(sse(events))
}

/// A request answered before any of its text went out (one window, or a failure): its
/// segments as the deltas, or its error as the status.
fn all_at_once(
    answer: Result<Result<Answer, LiveError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Response, ApiError> {
    let label = label_of(answer_of(answer)?)?;
    let text = label.text.clone().unwrap_or_default();
    let mut events: Vec<Event> = segment_deltas(&label)
        .iter()
        .map(|d| delta_event(d))
        .collect();
    events.push(done_event(&text));
    Ok(sse(futures_util::stream::iter(events.into_iter().map(Ok))))
}

fn sse<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events).into_response()
}

/// A streamed request's events still to send.
struct Streamer {
    pending: std::collections::VecDeque<Event>,
    /// The deltas sent, joined.
    sent: String,
    /// Open until the request's pieces are all sent.
    deltas: Option<UnboundedReceiver<String>>,
    /// Taken when the answer came.
    reply: Option<Reply>,
    deadline: tokio::time::Instant,
    /// The service's limit `deadline` came from, for the error that says it was passed.
    limit: std::time::Duration,
}

impl Streamer {
    fn send(&mut self, delta: String) {
        self.pending.push_back(delta_event(&delta));
        self.sent.push_str(&delta);
    }

    /// The next event; `None` once the `done` (or `error`) event has gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let reply = self.reply.as_mut()?;
            if let Some(deltas) = self.deltas.as_mut() {
                match tokio::time::timeout_at(self.deadline, deltas.recv()).await {
                    Ok(Some(delta)) => self.send(delta),
                    Ok(None) => self.deltas = None,
                    Err(_) => self.fail(&ApiError::timed_out(self.limit)),
                }
                continue;
            }
            let answer = match tokio::time::timeout_at(self.deadline, reply).await {
                Ok(answer) => answer_of(answer).and_then(label_of),
                Err(_) => Err(ApiError::timed_out(self.limit)),
            };
            self.reply = None;
            match answer {
                Ok(label) => self.finish(label.text.as_deref().unwrap_or_default()),
                Err(e) => self.fail(&e),
            }
        }
    }

    /// What the streamed pieces did not say yet, then `done`.
    fn finish(&mut self, text: &str) {
        match text.strip_prefix(self.sent.as_str()) {
            Some("") => {}
            Some(rest) => self.pending.push_back(delta_event(rest)),
            None => log::warn!("streamed text is not the start of the final text"),
        }
        self.pending.push_back(done_event(text));
    }

    fn fail(&mut self, error: &ApiError) {
        self.pending.push_back(error_event(error));
        self.deltas = None;
        self.reply = None;
    }
}

/// A label's segments as deltas that join to its text.
fn segment_deltas(label: &FileLabel) -> Vec<String> {
    let mut deltas = Vec::new();
    for segment in label.segments.iter().flatten() {
        let text = segment.text.trim();
        if text.is_empty() {
            continue;
        }
        deltas.push(if deltas.is_empty() {
            text.to_string()
        } else {
            format!(" {text}")
        });
    }
    deltas
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
