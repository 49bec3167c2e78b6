//! File → planar f32: containers and codecs, PCM conversion, MP4 edit lists, resampling and
//! parallel segments. Knows nothing of streams or batches.

pub(crate) mod mp4_edit;
pub(crate) mod pcm;
pub mod reader;
pub mod resample;
pub mod segments;

pub use reader::{probe_info, AudioInfo, ChannelMode, DecodeStats, SourceReader};
pub use segments::{load, DecodedAudio, LoadRequest};
