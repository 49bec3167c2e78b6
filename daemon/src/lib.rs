//! AudioDecode: decode, resample and batch audio for ML training.
//!
//! One module per concept: [`decode`] (containers and codecs → planar f32), [`resample`]
//! (rubato, streaming), [`pipeline`] (one item → samples), [`output`] (file writers) and
//! [`cli`].

pub mod augment;
pub mod cache;
pub mod cli;
pub mod client;
pub mod decode;
pub mod error;
pub mod item;
pub mod label;
pub mod label_cli;
pub mod manifest;
mod mp4_edit;
pub mod output;
mod pcm;
pub mod pipeline;
pub mod pool;
pub mod resample;
pub mod residency;
pub mod ring;
pub mod sampler;
pub mod server;
pub mod slots;
pub mod stream;
pub mod tune;

pub use decode::{probe_info, AudioInfo, ChannelMode};
pub use error::DecodeError;
pub use pipeline::{load, DecodedAudio, LoadRequest};
pub use resample::Quality;
