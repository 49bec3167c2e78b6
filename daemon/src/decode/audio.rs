//! The decoder's vocabulary: what a caller asks for and what comes back, shared by the
//! reader, PCM conversion, segments and every caller outside `decode/`.

use std::path::PathBuf;

use crate::decode::resample::Quality;

/// How channels leave the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChannelMode {
    /// Mean of all channels (librosa's `mono=True`).
    Mono,
    /// Every channel kept, in file order.
    Keep,
    /// Mono through the ITU-R BS.775 downmix (FFmpeg's `-ac 1`): centre full, front
    /// left/right −3 dB, surrounds −6 dB, LFE dropped; the mean for a layout it does not
    /// know. Equal to `Mono` for mono and stereo files. See Note [Downmix].
    Itu,
}

impl ChannelMode {
    pub fn from_mono(mono: bool) -> Self {
        if mono {
            Self::Mono
        } else {
            Self::Keep
        }
    }
}

/// Which decoder reads a file. See Note [FFmpeg fallback].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process: symphonia's demuxers and decoders.
    Symphonia,
    /// An `ffmpeg` child process, for what symphonia cannot read.
    Ffmpeg,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Symphonia => "symphonia",
            Self::Ffmpeg => "ffmpeg",
        }
    }
}

/// Stream facts read from the container headers, without decoding the audio.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AudioInfo {
    pub path: PathBuf,
    pub codec: String,
    pub container: String,
    pub sample_rate: u32,
    pub channels: u16,
    /// Playable frames (encoder delay and padding excluded), when the container declares them.
    pub frames: Option<u64>,
    pub duration: Option<f64>,
    pub backend: Backend,
}

/// What to produce from a file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadRequest {
    /// Output rate; `None` keeps the file's native rate.
    pub sample_rate: Option<u32>,
    pub channels: ChannelMode,
    /// Start, in seconds from the beginning of the audio.
    pub offset: f64,
    /// Length in seconds; `None` reads to the end. Past the end simply stops there.
    pub duration: Option<f64>,
    pub quality: Quality,
    /// Keep what decoded before damaged or truncated data instead of failing.
    pub lenient: bool,
}

impl Default for LoadRequest {
    fn default() -> Self {
        Self {
            sample_rate: None,
            channels: ChannelMode::Mono,
            offset: 0.0,
            duration: None,
            quality: Quality::Hq,
            lenient: false,
        }
    }
}

/// Decoded audio, planar: `planes[c][t]`.
#[derive(Clone, Debug, Default)]
pub struct DecodedAudio {
    pub planes: Vec<Vec<f32>>,
    pub sample_rate: u32,
    /// The damaged or truncated data lenient decoding met (what and where); the audio is
    /// what decoded around it.
    pub damage: Option<String>,
}

impl DecodedAudio {
    pub fn is_damaged(&self) -> bool {
        self.damage.is_some()
    }

    pub fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }

    pub fn channels(&self) -> usize {
        self.planes.len()
    }

    pub fn duration(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }
}
