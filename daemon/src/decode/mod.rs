//! File → planar f32: containers and codecs, PCM conversion, MP4 edit lists, resampling and
//! parallel segments. Knows nothing of streams or batches.

#![deny(unsafe_code)]

pub mod audio;
pub mod limits;
pub(crate) mod mp4_edit;
pub(crate) mod pcm;
pub mod reader;
pub mod resample;
pub mod samples;
pub mod segments;

pub use audio::{AudioInfo, ChannelMode, DecodedAudio, LoadRequest};
pub use reader::{probe_info, DecodeStats, SourceReader};
pub use segments::load;
