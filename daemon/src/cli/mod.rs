//! The `audiodecode` command line: the clap definitions and the dispatch. Each family of
//! subcommands runs in a module of its own: `info` and `decode` in [`decode`], `serve`,
//! `status` and `stop` in [`serve`], `label` (with its arguments) in [`label`], `vad` in [`vad`].

#![allow(clippy::print_stderr)] // The CLI reports to its user on stderr.

pub mod decode;
pub mod error;
pub mod http;
pub mod label;
pub mod label_paths;
pub mod output;
pub mod progress;
pub mod ray;
pub mod serve;
pub mod shard;
pub mod vad;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::cli::error::CliError;
use crate::cli::output::OutputFormat;
use crate::decode::resample::Quality;
use crate::decode::ChannelMode;
use crate::feed::server;

#[derive(Parser, Debug)]
#[command(
    name = "audiodecode",
    version,
    about = "Fast audio decoding and batching for ML training"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub objects: ObjectArgs,
}

/// Remote inputs (`s3://`, `gs://`, `az://`, `http(s)://`), for every command.
#[derive(Args, Debug)]
pub struct ObjectArgs {
    /// Keep fetched objects in this directory (across runs; revalidated before use)
    /// instead of memory.
    #[arg(long, global = true, env = "AUDIODECODE_OBJECT_CACHE")]
    pub object_cache: Option<PathBuf>,
    /// Bytes the object cache may hold (default 10 GB on disk; in memory, an eighth of the
    /// available memory, between 256 MB and 4 GB: a stream's remote shards without an index
    /// are fetched once to be indexed and read from memory in the epoch when eight of them
    /// fit; larger ones are streamed to be indexed and read by ranged GETs).
    #[arg(long, global = true, env = "AUDIODECODE_OBJECT_CACHE_BYTES")]
    pub object_cache_bytes: Option<u64>,
    /// Keep here the indexes of remote tar shards that have no index sidecar, learnt when a
    /// stream first fetches them, so later streams read them by ranged GETs (default
    /// $AUDIODECODE_INDEX_CACHE, else ~/.cache/audiodecode/shard-indexes; the variable set
    /// empty keeps none).
    #[arg(long, global = true)]
    pub index_cache: Option<PathBuf>,
    /// Requests in flight per bucket or host (default 32).
    #[arg(long, global = true, env = crate::store::MAX_REQUESTS_ENV)]
    pub object_requests: Option<usize>,
}

impl ObjectArgs {
    /// Configure the store, and put the settings in the environment so that a detached
    /// daemon (a child of this process) has them too. Runs first, before any thread.
    fn apply(&self) {
        if let Some(dir) = &self.object_cache {
            std::env::set_var("AUDIODECODE_OBJECT_CACHE", dir);
        }
        if let Some(bytes) = self.object_cache_bytes {
            std::env::set_var("AUDIODECODE_OBJECT_CACHE_BYTES", bytes.to_string());
        }
        if let Some(dir) = &self.index_cache {
            std::env::set_var(crate::store::learnt::INDEX_CACHE_ENV, dir);
        }
        if let Some(n) = self.object_requests {
            std::env::set_var(crate::store::MAX_REQUESTS_ENV, n.to_string());
        }
        let in_memory = || (crate::feed::tune::available_memory() / 8).clamp(256 << 20, 4 << 30);
        crate::store::configure(crate::store::CacheConfig {
            dir: self.object_cache.clone(),
            max_bytes: self
                .object_cache_bytes
                .or_else(|| self.object_cache.is_none().then(in_memory)),
        });
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show codec, container, rate, channels and length without decoding the audio.
    Info(InfoArgs),
    /// Decode files to float32 (.wav, .npy or raw .f32), resampled and downmixed as asked.
    Decode(DecodeArgs),
    /// Run the daemon that feeds training jobs through shared memory.
    Serve(Box<ServeArgs>),
    /// Show the running daemon's streams: throughput, ring fill, skipped items.
    Status(StatusArgs),
    /// Stop the running daemon.
    Stop(SocketArg),
    /// Pseudo-transcribe audio with Whisper into a JSONL manifest (or srt/vtt/txt files).
    Label(Box<label::LabelArgs>),
    /// Find the speech in audio files (Silero VAD); prints one JSON line per file.
    Vad(vad::VadArgs),
    /// Pack a dataset (files, directories, manifests, a labeling manifest) into WebDataset
    /// tar shards that the loader streams.
    Shard(Box<shard::ShardArgs>),
}

#[derive(Args, Debug)]
pub struct SocketArg {
    /// Control socket (default: $AUDIODECODE_SOCKET, $XDG_RUNTIME_DIR/audiodecode/daemon.sock
    /// or /tmp/audiodecode-<uid>/daemon.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(server::default_socket_path)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Decode workers at start (default: from the cores and GPUs detected; env
    /// AUDIODECODE_WORKERS). The tuner then moves the pool between --min-workers and
    /// --max-workers as the training job or the decoding is the bottleneck.
    #[arg(long, env = "AUDIODECODE_WORKERS")]
    pub workers: Option<usize>,
    #[arg(long, env = "AUDIODECODE_MIN_WORKERS")]
    pub min_workers: Option<usize>,
    #[arg(long, env = "AUDIODECODE_MAX_WORKERS")]
    pub max_workers: Option<usize>,
    /// Memory all batch rings may take together, in bytes (default: a tenth of the
    /// available memory); a stream's prefetch depth follows from it.
    #[arg(long, env = "AUDIODECODE_RING_BYTES")]
    pub ring_bytes: Option<u64>,
    /// Bytes of decoded audio to keep in memory across epochs (default: a quarter of the
    /// available memory; 0 turns the cache off; env AUDIODECODE_CACHE_BYTES).
    #[arg(long, env = "AUDIODECODE_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// Longest one item or `load` may take to decode, in seconds (default 300; env
    /// AUDIODECODE_ITEM_DEADLINE). A decode past it is reported as an error and its worker
    /// replaced, so a pathological file cannot hold a worker for good.
    #[arg(long, env = "AUDIODECODE_ITEM_DEADLINE", value_parser = parse_deadline)]
    pub item_deadline: Option<u64>,
    /// Stay attached to the terminal instead of detaching.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub http: http::HttpArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per line: path, codec, container, sample_rate, channels, frames, duration.
    #[arg(long)]
    pub json: bool,
    /// Decode each file to the end and report damage (a cut or corrupt stretch: what and
    /// where) and the frames that decode, instead of reading headers only.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output file (format from its extension: .wav, .npy, .f32), or a directory ending in
    /// `/` (or existing) for several inputs.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Target sample rate in Hz (default: the file's own rate).
    #[arg(long = "sr")]
    pub sample_rate: Option<u32>,
    /// Average all channels into one.
    #[arg(long)]
    pub mono: bool,
    /// How channels become one: `mean` (librosa's convention, what --mono does) or `itu`
    /// (ITU-R BS.775, FFmpeg's `-ac 1`: centre full, surrounds -6 dB, LFE dropped).
    /// Implies mono.
    #[arg(long, value_parser = parse_downmix)]
    pub downmix: Option<ChannelMode>,
    /// Start time in seconds.
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Length in seconds (default: to the end).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Resampling quality.
    #[arg(long, default_value = "hq", value_parser = parse_quality)]
    pub quality: Quality,
    /// Fail a file on damaged or truncated data. By default damage is reported and what
    /// decodes is kept, as FFmpeg, librosa and torchaudio do.
    #[arg(long)]
    pub strict: bool,
    /// The default (kept for older scripts): keep what decodes around damaged data.
    #[arg(long, hide = true, conflicts_with = "strict")]
    pub lenient: bool,
    /// Output format when writing into a directory.
    #[arg(long, default_value = "wav", value_parser = parse_format)]
    pub format: OutputFormat,
    /// Decode threads (default: all cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
}

pub(crate) fn parse_deadline(s: &str) -> Result<u64, CliError> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(CliError::Usage(format!(
            "item deadline '{s}': a whole number of seconds above 0"
        ))),
    }
}

fn parse_quality(s: &str) -> Result<Quality, CliError> {
    Quality::parse(s)
        .ok_or_else(|| CliError::Usage(format!("unknown quality {s:?} (fast, hq, vhq)")))
}

fn parse_downmix(s: &str) -> Result<ChannelMode, CliError> {
    match s {
        "mean" => Ok(ChannelMode::Mono),
        "itu" => Ok(ChannelMode::Itu),
        _ => Err(CliError::Usage(format!(
            "unknown downmix {s:?} (mean, itu)"
        ))),
    }
}

fn parse_format(s: &str) -> Result<OutputFormat, CliError> {
    OutputFormat::parse(s)
        .ok_or_else(|| CliError::Usage(format!("unknown format {s:?} (wav, npy, f32)")))
}

pub fn run(cli: Cli) -> ExitCode {
    cli.objects.apply();
    init_logging(matches!(cli.command, Command::Serve(_)));
    match cli.command {
        Command::Info(args) => decode::run_info(&args),
        Command::Decode(args) => decode::run_decode(&args),
        Command::Serve(args) => serve::run_serve(&args),
        Command::Status(args) => serve::run_status(&args),
        Command::Stop(args) => serve::run_stop(&args),
        Command::Label(args) => label::run_label(&args),
        Command::Vad(args) => vad::run_vad(&args),
        Command::Shard(args) => shard::run_shard(&args),
    }
}

/// Diagnostics (not a command's output or its per-file errors, which it prints itself) go
/// through `log`: the daemon logs from `info` up, other commands only warnings.
/// `AUDIODECODE_LOG` overrides, in env_logger's syntax (e.g. `debug`). Symphonia's own
/// warnings about damaged data are off: the file's error or damage report says it once.
fn init_logging(daemon: bool) {
    let default = if daemon {
        "info,symphonia=off"
    } else {
        "warn,symphonia=off"
    };
    let _ =
        env_logger::Builder::from_env(env_logger::Env::new().filter_or("AUDIODECODE_LOG", default))
            // Milliseconds: the debug log is how start-up and batches are profiled. URLs in
            // a line are shown without their credentials (a signed URL's signature).
            .format(|buf, record| {
                use std::io::Write;
                writeln!(
                    buf,
                    "[{} {:<5} {}] {}",
                    buf.timestamp_millis(),
                    record.level(),
                    record.target(),
                    crate::store::redacted(&record.args().to_string())
                )
            })
            .try_init();
}

/// Success unless something failed.
fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
