//! File → planar f32: containers and codecs, PCM conversion, MP4 edit lists, resampling and
//! parallel segments. Knows nothing of streams or batches.

#![deny(unsafe_code)]

pub mod audio;
mod containers;
pub(crate) mod downmix;
mod ebml;
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
mod stated_length;

pub use audio::{AudioInfo, Backend, ChannelMode, DecodedAudio, LoadRequest};

/// File extensions of audio the decoders read (natively or through FFmpeg): the files a
/// directory scan picks up, a shard sample's audio member. Every format of the real-world
/// tests is here, SPHERE (`.sph`, LDC and TED-LIUM corpora) and the fallback's WavPack,
/// WMA, AMR, … included, and containers whose audio track is what is wanted (lecture
/// videos). Not `.ts` (TypeScript sources far outnumber MPEG transport streams in the
/// directories people scan). The client keeps a copy (`_manifest.py`; a test compares).
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "m4b", "aac", "aif", "aiff",
    "aifc", "caf", "mkv", "mka", "webm", "sph", "nist", "w64", "rf64", "bw64", "au", "snd", "wv",
    "wma", "asf", "ape", "tta", "mpc", "spx", "amr", "awb", "3gp", "3g2", "ac3", "eac3", "mp2",
    "mp1", "mpa", "m4r", "gsm", "voc", "dsf", "mov", "avi", "mpg", "mpeg", "m4v", "flv", "wmv",
    "bwf", "weba", "3ga",
];
pub use reader::{DecodeStats, SourceReader};
pub use segments::load;
pub use source::{probe_info, Source};
