//! `serve --http ADDR`: the flags of the HTTP service, and starting it beside the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::cli::label::ModelArgs;
use crate::http::{self, HttpConfig};
use crate::label::live::{LiveConfig, LiveLabeler};
use crate::label::run::auto_batch_size;
use crate::label::{ModelKey, WhisperEngine};

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Also serve transcription over HTTP at this address (OpenAI's /v1/audio routes and
    /// whisper-asr-webservice's /asr), e.g. 127.0.0.1:8000. Another address than loopback
    /// needs --api-key.
    #[arg(long, env = "AUDIODECODE_HTTP")]
    pub http: Option<SocketAddr>,
    /// The Bearer key clients must send (env AUDIODECODE_API_KEY keeps it out of `ps`).
    #[arg(long, env = "AUDIODECODE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Windows per model batch (default: 8 on CPU, 16 on CUDA).
    #[arg(long, default_value_t = 0)]
    pub batch_size: usize,
    /// How long a batch waits for uploads still being decoded, in milliseconds.
    #[arg(long, default_value_t = 25)]
    pub batch_wait_ms: u64,
    /// Threads decoding uploads (default: the cores).
    #[arg(long, default_value_t = 0)]
    pub http_workers: usize,
    /// Largest upload accepted, in megabytes.
    #[arg(long, default_value_t = 200)]
    pub max_upload_mb: u64,
    /// Longest audio accepted, in seconds.
    #[arg(long, default_value_t = 7200.0)]
    pub max_audio_s: f64,
    /// Longest a request may take, upload included, in seconds.
    #[arg(long, default_value_t = 900)]
    pub request_timeout_s: u64,
    /// Requests queued at most; more get 503 until the queue drains.
    #[arg(long, default_value_t = 256)]
    pub max_queued: usize,
    /// Transcribe only the speech Silero VAD finds, for OpenAI's routes (/asr takes its own
    /// `vad_filter`, off by default as in whisper-asr-webservice).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub http_vad_filter: bool,
}

/// Loads the model and starts the HTTP service when `--http` is given.
pub fn start(args: &HttpArgs, item_deadline: Duration) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = args.http else {
        return Ok(None);
    };
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut defaults = args.model.options();
    defaults.vad_filter = args.http_vad_filter;
    let key = ModelKey::from_options(&defaults, cores).map_err(|e| e.to_string())?;
    let engine = WhisperEngine::load(&key).map_err(|e| e.to_string())?;
    let batch_size = match args.batch_size {
        0 => auto_batch_size(key.cuda),
        n => n,
    };
    let labeler = LiveLabeler::start(
        Arc::new(engine),
        LiveConfig {
            workers: if args.http_workers == 0 {
                cores
            } else {
                args.http_workers
            },
            batch_size,
            batch_wait: Duration::from_millis(args.batch_wait_ms),
            max_queued: args.max_queued.max(1),
            max_seconds: Some(args.max_audio_s),
            item_deadline,
        },
    );
    let config = HttpConfig {
        addr,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_upload_bytes: args.max_upload_mb.saturating_mul(1 << 20),
        request_timeout: Duration::from_secs(args.request_timeout_s.max(1)),
        model_name: args.model.model.clone(),
        defaults,
    };
    let bound = http::start(config, labeler)?;
    // Clients started on port 0 read the port from this line.
    eprintln!(
        "audiodecode HTTP service on http://{bound} (model {}, batches of {batch_size})",
        args.model.model
    );
    Ok(Some(bound))
}

/// The flags that re-create `args` for a detached daemon; the key travels in the
/// environment, never on a command line.
pub fn forward(args: &HttpArgs, cmd: &mut std::process::Command) {
    let Some(addr) = args.http else {
        return;
    };
    cmd.arg("--http").arg(addr.to_string());
    if let Some(key) = &args.api_key {
        cmd.env("AUDIODECODE_API_KEY", key);
    }
    let m = &args.model;
    cmd.args(["--model", &m.model, "--device", &m.device])
        .args(["--compute-type", &m.compute_type])
        .args(["--threads", &m.threads.to_string()])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--batch-wait-ms", &args.batch_wait_ms.to_string()])
        .args(["--http-workers", &args.http_workers.to_string()])
        .args(["--max-upload-mb", &args.max_upload_mb.to_string()])
        .args(["--max-audio-s", &args.max_audio_s.to_string()])
        .args(["--request-timeout-s", &args.request_timeout_s.to_string()])
        .args(["--max-queued", &args.max_queued.to_string()])
        .args(["--http-vad-filter", &args.http_vad_filter.to_string()]);
}
