//! AudioDecode: decode, resample and batch audio for ML training.
//!
//! One module per concept: [`decode`] (containers and codecs → planar f32), [`resample`]
//! (rubato, streaming), [`pipeline`] (one item → samples), [`output`] (file writers) and
//! [`cli`].

pub mod cli;
pub mod decode;
pub mod error;
pub mod feed;
pub mod label;
pub mod sys;

// Paths the integration tests and earlier callers use.
pub use decode::resample;
pub use feed::client;

pub use decode::{load, DecodedAudio, LoadRequest};
pub use decode::{probe_info, AudioInfo, ChannelMode};
pub use error::DecodeError;
pub use resample::Quality;
