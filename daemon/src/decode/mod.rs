//! File → planar f32: containers and codecs, PCM conversion, MP4 edit lists, resampling and
//! parallel segments. Knows nothing of streams or batches.

#![deny(unsafe_code)]

pub mod audio;
mod containers;
pub(crate) mod downmix;
pub mod ffmpeg;
pub mod integrity;
pub mod limits;
pub(crate) mod mp4_edit;
pub(crate) mod pcm;
pub mod reader;
pub(crate) mod remote;
pub mod resample;
pub mod samples;
pub mod segments;
pub(crate) mod sniff;
pub mod source;

pub use audio::{AudioInfo, Backend, ChannelMode, DecodedAudio, LoadRequest};
pub use reader::{DecodeStats, SourceReader};
pub use segments::load;
pub use source::{probe_info, Source};
