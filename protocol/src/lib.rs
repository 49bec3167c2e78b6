//! The AudioDecode wire format: messages on the control socket and the layout of the
//! shared-memory batch ring. No I/O lives here, so the daemon, the tests and the golden
//! vectors all agree on one definition; `README.md` documents the bytes for the Python codec.
//!
//! Encoding: bincode 2.0.1 (pinned), little-endian, fixed-width integers. Each frame on the
//! socket is a `u32` little-endian payload length followed by the payload.

pub mod ring;

use bincode::{Decode, Encode};

/// Bumped whenever a message or the ring layout changes incompatibly; checked in the handshake.
pub const PROTOCOL_VERSION: u32 = 8;

/// Frames larger than this are refused: a corrupt length must not make the daemon allocate
/// gigabytes. `Loaded` replies carry whole decoded files, hence the generous bound.
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

pub fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

pub fn encode<T: Encode>(message: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::encode_to_vec(message, config())
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let (message, used) = bincode::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after message",
            bytes.len() - used
        )));
    }
    Ok(message)
}

/// A frame: length prefix plus payload.
pub fn frame<T: Encode>(message: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    let payload = encode(message)?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Client to daemon.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Request {
    /// Must be the first message; the daemon answers `Hello` or `Error{VersionMismatch}`.
    Hello {
        version: u32,
        client_pid: u32,
    },
    OpenStream(StreamSpec),
    /// The client has handed back the first `released` batches announced to it since the
    /// stream opened (it takes and hands back batches in order); the daemon may refill
    /// their slots. See "Ownership" in the README for when a client sends it.
    Release {
        stream: u32,
        released: u64,
    },
    CloseStream {
        stream: u32,
    },
    /// Decode one file and return its samples inline.
    Load(LoadSpec),
    Status,
    Shutdown,
    /// Transcribe files with Whisper; the daemon answers one `Transcribed` per file (in
    /// input order) and then `TranscribeDone`, or `Error` when the model cannot load.
    Transcribe(TranscribeSpec),
}

/// Daemon to client.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Response {
    Hello {
        version: u32,
        daemon_pid: u32,
    },
    StreamOpened(StreamInfo),
    /// Slot `slot` holds batch `seq` (0-based within the epoch, counted from the stream's
    /// `start_batch`); the client owns it until it hands it back (`Release`).
    BatchReady {
        stream: u32,
        slot: u32,
        seq: u64,
    },
    /// Every batch of the epoch has been announced.
    EndOfEpoch {
        stream: u32,
        skipped: Vec<SkippedItem>,
        /// Items decoded around damaged data and used (lenient decoding); the message says
        /// what and where.
        damaged: Vec<SkippedItem>,
    },
    /// An item failed and the stream's policy is `Raise`; the stream stops.
    StreamFailed {
        stream: u32,
        error: ErrorInfo,
    },
    Loaded(LoadedAudio),
    Status(StatusReport),
    Ok,
    Error(ErrorInfo),
    /// File `index` of a `Transcribe` request: one JSON object, the same record
    /// `audiodecode label` writes as a JSONL line (an `error` field when it failed).
    Transcribed {
        index: u64,
        record: String,
    },
    TranscribeDone {
        files: u64,
        errors: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ErrorKind {
    VersionMismatch,
    BadRequest,
    NotFound,
    Io,
    Unsupported,
    Corrupt,
    Truncated,
    Empty,
    OffsetPastEnd,
    DecoderPanic,
    Internal,
    /// Abandoned at the daemon's per-item deadline.
    TimedOut,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ErrorInfo {
    pub kind: ErrorKind,
    /// The file concerned, when there is one.
    pub path: Option<String>,
    /// Full human-readable message (already names the file).
    pub message: String,
}

impl ErrorInfo {
    /// An error not about one file. Every error reply of the daemon is built here or from a
    /// `DecodeError` (which adds the path).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            path: None,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SkippedItem {
    pub index: u64,
    pub path: String,
    pub message: String,
}

/// Where a stream's items come from.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Dataset {
    /// Explicit files, with optional integer labels (same length as `paths`).
    Files {
        paths: Vec<String>,
        labels: Option<Vec<i64>>,
    },
    /// JSONL (`audio_filepath`, optional `label`/`text`/`duration`) or CSV with a header.
    /// `label_field` names the field that becomes the label (default `label`).
    Manifest {
        path: String,
        label_field: Option<String>,
    },
    /// Every audio file below a directory, sorted by path; the label is the name of the
    /// first-level subdirectory (the ImageFolder convention), when there is one.
    Directory { path: String },
    /// A sharded dataset read shard by shard: `format` `webdataset` (`sources`: tar paths
    /// or brace patterns), `shar` (`sources`: Lhotse Shar directories) or `nemo`
    /// (`sources`: the tarred manifest, then the tar paths or patterns). Sources may be
    /// URLs. `label_field` as for manifests (a member field, a JSON key, a custom field).
    Shards {
        format: String,
        sources: Vec<String>,
        label_field: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum CropMode {
    /// A random window, seeded per (seed, epoch, item).
    Random,
    /// The first `max_seconds`.
    Start,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum OnError {
    /// Leave the item out of its batch, count it and report it at the end of the epoch.
    Skip,
    /// Stop the stream and report the item's error to the client.
    Raise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Quality {
    Fast,
    Hq,
    Vhq,
}

/// How `mono` makes one channel of several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Downmix {
    /// The mean of the channels (librosa's convention).
    Mean,
    /// ITU-R BS.775 weights (FFmpeg's `-ac 1`), normalised: centre full, front left/right
    /// −3 dB, surrounds −6 dB, LFE dropped. The mean for mono and stereo.
    Itu,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct StreamSpec {
    pub dataset: Dataset,
    pub sample_rate: u32,
    /// `true`: mean of channels; `false`: `channels` channels kept (missing ones zero).
    pub mono: bool,
    pub channels: u32,
    pub batch_size: u32,
    /// Crop items longer than this; also bounds the slot size.
    pub max_seconds: Option<f64>,
    pub crop: CropMode,
    /// Pad every batch to `max_seconds` instead of to its longest item.
    pub pad_to_max: bool,
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Resume: skip this many batches of the epoch.
    pub start_batch: u64,
    pub rank: u32,
    pub world_size: u32,
    pub drop_last: bool,
    pub on_error: OnError,
    pub quality: Quality,
    /// Ring depth; 0 lets the daemon choose.
    pub prefetch: u32,
    /// Keep decoded audio in the daemon's shared cache (later epochs decode nothing).
    pub cache: bool,
    /// Duration bucketing: batches of similar length holding at most this many seconds of
    /// padded audio, instead of `batch_size` items.
    pub max_batch_seconds: Option<f64>,
    /// Augmentations, applied in order after the crop.
    pub augment: Vec<Augment>,
    /// Treat damaged or truncated files as failed (`on_error` applies) instead of using
    /// what decodes around the damage.
    pub strict: bool,
    /// With `mono`, how channels are combined.
    pub downmix: Downmix,
}

/// One augmentation; each applies with probability `p`, its parameters drawn per item from
/// (seed, epoch, item).
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Augment {
    /// Gain uniform in decibels.
    Gain { min_db: f64, max_db: f64, p: f64 },
    /// Additive noise at an SNR uniform in decibels: white, or clips from `noise`.
    Noise {
        min_snr_db: f64,
        max_snr_db: f64,
        noise: Option<Dataset>,
        p: f64,
    },
    /// Speed perturbation by resampling, one factor of the list (0.9 = slower, longer).
    Speed { factors: Vec<f64>, p: f64 },
    /// Time shift uniform in ±`max_seconds`, filling with silence.
    Shift { max_seconds: f64, p: f64 },
    /// Reverberation: FFT convolution with an impulse response from `rirs`.
    Reverb { rirs: Dataset, p: f64 },
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ItemInfo {
    pub path: String,
    pub label: i64,
    /// Transcript or other string label, when the dataset has one.
    pub text: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct StreamInfo {
    pub stream: u32,
    /// POSIX shared-memory name of the ring (`/dev/shm/<name without the slash>`).
    pub shm_name: String,
    pub ring: ring::RingGeometry,
    /// Batches this rank gets in this epoch (before `start_batch` is applied).
    pub batches_per_epoch: u64,
    /// Every item of the dataset, indexed by the item indices written into slots.
    pub items: Vec<ItemInfo>,
    /// Class names by id, when labels came from strings (sorted order).
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct LoadSpec {
    pub path: String,
    /// `None`: the file's own rate.
    pub sample_rate: Option<u32>,
    pub mono: bool,
    pub offset: f64,
    pub duration: Option<f64>,
    pub quality: Quality,
    /// Fail on damaged or truncated data instead of returning what decodes around it.
    pub strict: bool,
    /// With `mono`, how channels are combined.
    pub downmix: Downmix,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TranscribeSpec {
    pub paths: Vec<String>,
    pub options: TranscribeOptions,
}

/// Model choice and decoding options, with faster-whisper's names and defaults.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct TranscribeOptions {
    /// A CTranslate2 model directory or a model name (`base`, `tiny.en`, `large-v3`, …).
    pub model: String,
    /// `auto`, `cpu` or `cuda`.
    pub device: String,
    /// `auto`, `int8`, `int8_float16`, `float16`, `float32`, …
    pub compute_type: String,
    /// Model threads; 0 = the cores the daemon may use.
    pub threads: u32,
    /// Pieces per model call; 0 = sized from memory.
    pub batch_size: u32,
    /// `None` detects the language of each file.
    pub language: Option<String>,
    /// Detect the language of every ≤30 s piece (recordings that switch languages).
    pub multilingual: bool,
    /// `transcribe` or `translate` (to English).
    pub task: String,
    pub beam_size: u32,
    pub best_of: u32,
    pub patience: f32,
    pub length_penalty: f32,
    pub repetition_penalty: f32,
    pub no_repeat_ngram_size: u32,
    /// Fallback temperatures, tried in order while a result fails the thresholds.
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub log_prob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub initial_prompt: Option<String>,
    pub hotwords: Option<String>,
    pub word_timestamps: bool,
    pub without_timestamps: bool,
    pub suppress_blank: bool,
    /// Token ids to suppress; `-1` stands for the model's non-speech symbols.
    pub suppress_tokens: Vec<i32>,
    pub max_initial_timestamp: f32,
    /// Transcribe only the speech voice activity detection finds (Silero VAD).
    pub vad_filter: bool,
    pub vad: VadOptions,
}

/// Silero VAD's options, with faster-whisper's names and the defaults of its batched
/// pipeline (which labeling follows): 160 ms of silence ends speech, pieces of speech
/// stay under 30 s.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct VadOptions {
    /// Probabilities at or above this are speech.
    pub threshold: f32,
    /// Below this, speech ends; `None` is `threshold − 0.15` (at least 0.01).
    pub neg_threshold: Option<f32>,
    /// Shorter speech is dropped.
    pub min_speech_duration_ms: u32,
    /// Longer speech is split (at a pause of ≥ 98 ms when there is one); `None` never splits.
    pub max_speech_duration_s: Option<f32>,
    /// Silence that ends a piece of speech.
    pub min_silence_duration_ms: u32,
    /// Kept on each side of each piece of speech.
    pub speech_pad_ms: u32,
}

impl VadOptions {
    /// faster-whisper's `VadOptions()` (Silero's own defaults): what `get_speech_timestamps`
    /// and `transcribe(vad_filter=True)` use.
    pub fn silero() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: None,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl Default for VadOptions {
    /// What `BatchedInferencePipeline.transcribe` uses when given no VAD parameters.
    fn default() -> Self {
        Self {
            max_speech_duration_s: Some(30.0),
            min_silence_duration_ms: 160,
            ..Self::silero()
        }
    }
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            model: "base".into(),
            device: "auto".into(),
            compute_type: "auto".into(),
            threads: 0,
            batch_size: 0,
            language: None,
            multilingual: false,
            task: "transcribe".into(),
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            initial_prompt: None,
            hotwords: None,
            word_timestamps: false,
            without_timestamps: false,
            suppress_blank: true,
            suppress_tokens: vec![-1],
            max_initial_timestamp: 1.0,
            vad_filter: true,
            vad: VadOptions::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct LoadedAudio {
    pub sample_rate: u32,
    pub channels: u32,
    pub frames: u64,
    /// Planar little-endian f32 bytes, `[channels, frames]`.
    pub samples: Vec<u8>,
    /// The damage lenient decoding met (what and where), when the file has some.
    pub damage: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub uptime_seconds: f64,
    pub clients: u32,
    pub streams: Vec<StreamStatus>,
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Files decoded since start (cache hits decode nothing).
    pub decodes: u64,
    /// Decode workers now, and the bounds the tuner moves them within.
    pub workers: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Share of the last interval the workers spent decoding.
    pub worker_busy_share: f64,
    /// Memory all rings together may take.
    pub ring_budget_bytes: u64,
    /// GPUs the daemon found at start (NVML), empty on a CPU-only machine.
    pub gpus: Vec<GpuStatus>,
    /// Worker jobs that panicked; each was answered with an error and its worker kept.
    pub failed_jobs: u64,
    /// Items abandoned at the per-item deadline; each was reported and its worker replaced.
    pub abandoned_jobs: u64,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize)]
pub struct GpuStatus {
    pub name: String,
    pub memory_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize)]
pub struct StreamStatus {
    pub stream: u32,
    pub batches_done: u64,
    pub batches_total: u64,
    pub items_per_second: f64,
    pub audio_seconds_per_second: f64,
    pub workers: u32,
    pub ring_depth: u32,
    pub ring_filled: u32,
    pub skipped: u64,
    /// Items used although damaged (lenient decoding kept what decoded around the damage).
    pub damaged: u64,
    /// Share of delivered audio frames that are padding.
    pub padding_share: f64,
    /// Shares of the last interval the stream waited on decoding (the client may starve)
    /// and on the client releasing slots (the client is the bottleneck).
    pub decode_wait_share: f64,
    pub client_wait_share: f64,
}
