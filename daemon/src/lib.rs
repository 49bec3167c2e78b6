//! AudioDecode: decode, resample and batch audio for ML training, and pseudo-label it.
//!
//! # Layout
//!
//! The tree follows the pipeline; `docs/ARCHITECTURE.md` is the full map.
//!
//! - [`decode`]: file → planar f32. [`decode::reader`] probes containers and decodes with
//!   symphonia, [`decode::pcm`] converts raw PCM, `decode::mp4_edit` reads MP4 edit
//!   lists, [`decode::resample`] wraps rubato, [`decode::segments`] splits long files
//!   into parallel segments ([`load`]), [`decode::limits`] bounds what headers and requests
//!   may declare, [`decode::samples`] keeps samples finite and bounded, and
//!   [`decode::audio`] holds the shared vocabulary ([`LoadRequest`], [`DecodedAudio`]).
//! - [`feed`]: dataset → batches in shared memory. [`feed::server`] is the event loop on
//!   the Unix socket (framing in `connection`, one function per request in `handlers`, the
//!   `status` report); [`feed::stream`] plans an epoch (pure `plan`) and drives it
//!   (`driver`); [`feed::item`] decodes
//!   one item (through [`feed::cache`], cropping and [`feed::augment`]); [`feed::sampler`]
//!   orders and shards items; [`feed::manifest`] reads datasets; [`feed::ring`] and
//!   [`feed::slots`] own the shared memory and its slots; [`feed::pool`] runs the workers;
//!   [`feed::tune`] sizes everything; [`feed::stats`] counts; [`feed::wire`] converts wire
//!   types; [`feed::client`] is the Rust client the CLI uses.
//! - [`label`]: Whisper through CTranslate2 — [`label::model`] finds a model,
//!   [`label::mel`] makes features, [`label::pieces`] and [`label::pack`] cut and pack
//!   audio into windows, [`label::engine`] decodes, [`label::align`] adds word times,
//!   [`label::record`] writes outputs, [`label::run`] drives a dataset,
//!   [`label::service`] serves `Transcribe` requests; [`label::types`] holds the segments
//!   and words they share, [`label::vocab`] the tokenizer, [`label::error`] what can fail.
//! - [`vad`]: voice activity detection — [`vad::silero`] runs Silero VAD on ONNX Runtime
//!   (opened at run time), [`vad::segments`] turns probabilities into speech ranges,
//!   [`vad::speech_map`] keeps only speech and maps times back. [`pypackages`] finds what
//!   PyPI wheels install (models, `libonnxruntime`).
//! - [`cli`]: the `audiodecode` command: clap definitions in [`cli`], then
//!   [`cli::decode`] (`info`, `decode`), [`cli::serve`] (`serve`, `status`, `stop`),
//!   [`cli::label`], [`cli::vad`], with [`cli::output`] writers, [`cli::progress`] and
//!   [`cli::error`].
//! - [`sys`]: every OS call behind a safe function (the ring's mapping aside).
//! - [`error`]: [`DecodeError`], and its one mapping to the wire's `ErrorKind`.
//!
//! A batch: the client's `OpenStream` reaches [`feed::server`], which has
//! [`feed::stream::open`] plan the epoch and create the ring, replies `StreamOpened`
//! (see Note [Stream open ordering]) and starts the driver; the driver submits each item to
//! [`feed::pool`], where [`feed::item::decode_item`] runs [`load`] (or the cache), crops and
//! augments; the driver writes the batch into a free slot and announces it (see Note
//! [Slot hand-off]).
//!
//! A labeling request: `audiodecode label` ([`cli::label`]) or a `Transcribe` message
//! ([`label::service`]) calls [`label::run::label_files`], which decodes files in blocks
//! (see Note [Deterministic labeling blocks]), cuts or packs them into 30 s windows, runs
//! [`label::engine`] in batches and writes one record per file.

pub mod cli;
pub mod decode;
pub mod error;
pub mod feed;
pub mod http;
pub mod label;
pub mod pypackages;
pub mod store;
pub mod sys;
pub mod vad;

// Paths the integration tests and earlier callers use.
pub use decode::resample;
pub use feed::client;

pub use decode::{load, DecodedAudio, LoadRequest};
pub use decode::{probe_info, AudioInfo, Backend, ChannelMode};
pub use error::DecodeError;
pub use resample::Quality;
