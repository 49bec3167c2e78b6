//! Labeling: pseudo-transcribing audio with Whisper (CTranslate2 through `ct2rs`).
//!
//! [`model`] finds a model, [`mel`] computes features, [`vocab`] holds the tokenizer,
//! [`engine`] decodes batches of ≤30 s pieces (`repetition` judges its texts, `spoken`
//! measures how much they say), [`align`] adds word times, [`pieces`] cuts long files,
//! [`record`] writes JSONL and subtitle formats, [`run`] drives a whole dataset; [`types`]
//! holds what they share.

#![deny(unsafe_code)]

pub mod align;
pub mod engine;
pub mod error;
pub mod live;
pub mod mel;
pub mod model;
mod model_loop;
pub mod pack;
pub mod pieces;
mod prepare;
pub mod record;
mod repetition;
mod replicas;
pub mod run;
pub mod service;
mod spoken;
pub mod types;
pub mod vocab;

pub use engine::{ModelKey, WhisperEngine};
pub use error::LabelError;
pub use prepare::speech_request;
pub use record::FileLabel;
pub use run::{label_files, LabelEvent};
#[cfg(test)]
pub(crate) use types::test_segment;
pub use types::{PieceOutput, Segment, Word};
