//! The HTTP service (`audiodecode serve --http ADDR`): OpenAI's audio routes and
//! whisper-asr-webservice's, over the live labeler, so requests from many clients share the
//! model's batches (see Note [Batching across requests]). axum on a small tokio runtime of
//! its own; the model and the decoding run on the labeler's threads.

mod asr;
mod error;
mod languages;
mod metrics;
mod openai;
mod respond;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audiodecode_protocol::TranscribeOptions;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::label::live::{Answer, Audio, LiveError, LiveLabeler, LiveRequest, Reply, Task};
use metrics::RequestCounts;
use upload::Form;

/// What the service is started with.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer KEY` on every route but `/health`; must be set to
    /// bind anything but a loopback address.
    pub api_key: Option<String>,
    pub max_upload_bytes: u64,
    /// Longest a request may take, upload included.
    pub request_timeout: Duration,
    /// The model as `--model` named it (clients may also say `whisper-1`).
    pub model_name: String,
    /// Options every request starts from (model, device, threads; the rest per request).
    pub defaults: TranscribeOptions,
}

/// The OpenAI name clients send for "the service's Whisper".
const OPENAI_MODEL: &str = "whisper-1";

struct Service {
    labeler: LiveLabeler,
    config: HttpConfig,
    requests: RequestCounts,
}

type Shared = Arc<Service>;

/// Binds the address and serves on a thread of its own; returns the address bound (port 0
/// picks a free one). Errors (address in use, a public address without a key) come back
/// before anything is served.
pub fn start(config: HttpConfig, labeler: LiveLabeler) -> Result<SocketAddr, String> {
    if !config.addr.ip().is_loopback() && config.api_key.is_none() {
        return Err(format!(
            "--http {}: serving beyond this machine needs --api-key (or AUDIODECODE_API_KEY)",
            config.addr
        ));
    }
    let listener = std::net::TcpListener::bind(config.addr)
        .map_err(|e| format!("--http {}: {e}", config.addr))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--http {}: {e}", config.addr))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--http {}: {e}", config.addr))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let service = Arc::new(Service {
        labeler,
        config,
        requests: RequestCounts::default(),
    });
    std::thread::Builder::new()
        .name("http-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("HTTP listener: {e}");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, router(service)).await {
                    log::error!("HTTP service stopped: {e}");
                }
            })
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(bound)
}

fn router(service: Shared) -> Router {
    // The form reader bounds the audio itself; this bounds the whole body a little above.
    let body_limit = usize::try_from(service.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/v1/audio/transcriptions", post(openai::transcriptions))
        .route("/v1/audio/translations", post(openai::translations))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{model}", get(openai::model))
        .route("/asr", post(asr::asr))
        .route("/detect-language", post(asr::detect_language))
        .route("/metrics", get(metrics_page))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&service),
            authorize,
        ))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&service), count))
        .with_state(service)
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn metrics_page(State(service): State<Shared>) -> Response {
    let body = metrics::render(&service.requests, service.labeler.stats());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

/// `Authorization: Bearer KEY`, as the OpenAI client sends it, when a key is set.
async fn authorize(State(service): State<Shared>, request: Request, next: Next) -> Response {
    let Some(key) = &service.config.api_key else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
        return next.run(request).await;
    }
    let message = if given.is_empty() {
        "this service needs an API key: send 'Authorization: Bearer KEY'"
    } else {
        "incorrect API key"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, message)
        .code("invalid_api_key")
        .into_response()
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed
/// key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every answer by route and status for `/metrics`.
async fn count(State(service): State<Shared>, request: Request, next: Next) -> Response {
    const ROUTES: &[&str] = &[
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/models",
        "/asr",
        "/detect-language",
        "/health",
        "/metrics",
    ];
    let path = request.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| path == **r || path.starts_with(&format!("{r}/")))
        .copied()
        .unwrap_or("other");
    let response = next.run(request).await;
    service.requests.count(route, response.status().as_u16());
    response
}

impl Service {
    /// The model a request names must be the one served.
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model.map(str::trim) {
            None | Some("") | Some(OPENAI_MODEL) => Ok(()),
            Some(m) if m == self.config.model_name => Ok(()),
            Some(m) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model '{m}' is not served here; this service serves '{}' (also as \
                     '{OPENAI_MODEL}')",
                    self.config.model_name
                ),
            )
            .param("model")
            .code("model_not_found")),
        }
    }

    /// Queues an upload and waits for its answer.
    /// Queues a request; `progress` receives a streamed request's text as it is final.
    fn submit(
        &self,
        form: Form,
        options: TranscribeOptions,
        task: Task,
        progress: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Reply, ApiError> {
        let request = LiveRequest {
            audio: Audio::Upload(form.audio),
            name: form.name,
            options,
            task,
            progress,
        };
        Ok(self.labeler.submit(request)?)
    }

    async fn run(
        &self,
        form: Form,
        options: TranscribeOptions,
        task: Task,
    ) -> Result<Answer, ApiError> {
        answer_of(self.submit(form, options, task, None)?.await)
    }

    async fn within_timeout(
        &self,
        handle: impl std::future::Future<Output = Result<Response, ApiError>>,
    ) -> Response {
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, handle).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => e.into_response(),
            Err(_) => ApiError::timed_out(limit).into_response(),
        }
    }
}

/// A form's boolean field: true/false/1/0, absent is `default`.
fn flag(value: Option<&str>, name: &'static str, default: bool) -> Result<bool, ApiError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not '{other}'"
        ))
        .param(name)),
    }
}

/// What a request's reply brought: its answer, or the service dropped it.
fn answer_of(
    reply: Result<Result<Answer, LiveError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Answer, ApiError> {
    match reply {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request was dropped by the service",
        )),
    }
}

/// An answer that must be a label: a label with an error is the service's failure.
fn label_of(answer: Answer) -> Result<crate::label::FileLabel, ApiError> {
    match answer {
        Answer::Label(label) => match &label.error {
            Some(error) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                error.clone(),
            )),
            None => Ok(label),
        },
        Answer::Language(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "expected a transcription",
        )),
    }
}
