//! Direct conversion of interleaved PCM packets to planar f32.
//!
//! For WAV/AIFF/CAF the "decoder" is a byte-to-sample conversion. symphonia's PCM decoder
//! first renders every sample into its own planar buffer through a per-sample closure,
//! which profiled at a quarter of the whole WAV decode; converting the packet bytes straight
//! into our (already downmixed) planes skips that pass. Scaling is identical to symphonia's
//! conversions, so output stays bit-exact with FFmpeg and soundfile.

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::AudioCodecParameters;

use crate::decode::audio::ChannelMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PcmLayout {
    U8,
    S16Le,
    S16Be,
    S24Le,
    S24Be,
    S32Le,
    S32Be,
    F32Le,
    F32Be,
    F64Le,
    F64Be,
}

impl PcmLayout {
    /// Float samples can hold values outside [-1, 1], NaN or Inf; integers cannot.
    pub(crate) fn is_float(self) -> bool {
        matches!(self, Self::F32Le | Self::F32Be | Self::F64Le | Self::F64Be)
    }

    /// The layout of an interleaved, full-width PCM stream; `None` for anything needing
    /// symphonia's decoder (planar packing, A-law/µ-law, samples narrower than their slot).
    pub(crate) fn of(params: &AudioCodecParameters) -> Option<Self> {
        let layout = match params.codec {
            CODEC_ID_PCM_U8 => Self::U8,
            CODEC_ID_PCM_S16LE => Self::S16Le,
            CODEC_ID_PCM_S16BE => Self::S16Be,
            CODEC_ID_PCM_S24LE => Self::S24Le,
            CODEC_ID_PCM_S24BE => Self::S24Be,
            CODEC_ID_PCM_S32LE => Self::S32Le,
            CODEC_ID_PCM_S32BE => Self::S32Be,
            CODEC_ID_PCM_F32LE => Self::F32Le,
            CODEC_ID_PCM_F32BE => Self::F32Be,
            CODEC_ID_PCM_F64LE => Self::F64Le,
            CODEC_ID_PCM_F64BE => Self::F64Be,
            _ => return None,
        };
        let slot_bits = (layout.bytes() * 8) as u32;
        let full_width = params.bits_per_sample.is_none_or(|b| b == slot_bits)
            && params.bits_per_coded_sample.is_none_or(|b| b == slot_bits);
        full_width.then_some(layout)
    }

    pub(crate) fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::S16Le | Self::S16Be => 2,
            Self::S24Le | Self::S24Be => 3,
            Self::S32Le | Self::S32Be | Self::F32Le | Self::F32Be => 4,
            Self::F64Le | Self::F64Be => 8,
        }
    }
}

/// Convert frames `[from, from + len)` of an interleaved packet into `planes`.
pub(crate) fn convert(
    layout: PcmLayout,
    data: &[u8],
    channels: usize,
    from: usize,
    len: usize,
    mode: ChannelMode,
    planes: &mut [Vec<f32>],
) {
    let frame_bytes = layout.bytes() * channels;
    let bytes = &data[from * frame_bytes..(from + len) * frame_bytes];
    macro_rules! with {
        ($n:literal, $f:expr) => {
            convert_with::<$n>(bytes, channels, mode, planes, $f)
        };
    }
    match layout {
        PcmLayout::U8 => with!(1, |b| f32::from(b[0]) / 128.0 - 1.0),
        PcmLayout::S16Le => with!(2, |b| f32::from(i16::from_le_bytes(b)) / 32_768.0),
        PcmLayout::S16Be => with!(2, |b| f32::from(i16::from_be_bytes(b)) / 32_768.0),
        PcmLayout::S24Le => with!(3, |b| i24(b[0], b[1], b[2]) as f32 / 8_388_608.0),
        PcmLayout::S24Be => with!(3, |b| i24(b[2], b[1], b[0]) as f32 / 8_388_608.0),
        PcmLayout::S32Le => with!(4, |b| (f64::from(i32::from_le_bytes(b)) / 2_147_483_648.0)
            as f32),
        PcmLayout::S32Be => with!(4, |b| (f64::from(i32::from_be_bytes(b)) / 2_147_483_648.0)
            as f32),
        PcmLayout::F32Le => with!(4, f32::from_le_bytes),
        PcmLayout::F32Be => with!(4, f32::from_be_bytes),
        PcmLayout::F64Le => with!(8, |b| f64::from_le_bytes(b) as f32),
        PcmLayout::F64Be => with!(8, |b| f64::from_be_bytes(b) as f32),
    }
}

fn i24(lo: u8, mid: u8, hi: u8) -> i32 {
    i32::from_le_bytes([0, lo, mid, hi]) >> 8
}

#[inline(always)]
fn convert_with<const N: usize>(
    bytes: &[u8],
    channels: usize,
    mode: ChannelMode,
    planes: &mut [Vec<f32>],
    sample: impl Fn([u8; N]) -> f32,
) {
    let read = |chunk: &[u8]| {
        let mut b = [0u8; N];
        b.copy_from_slice(chunk);
        sample(b)
    };
    let frames = bytes.chunks_exact(N * channels);
    match mode {
        ChannelMode::Keep => {
            for (ch, plane) in planes.iter_mut().enumerate() {
                plane.clear();
                plane.extend(frames.clone().map(|f| read(&f[ch * N..(ch + 1) * N])));
            }
        }
        // `Itu` is applied above the reader (segments.rs); here it is the mean.
        ChannelMode::Mono | ChannelMode::Itu => {
            let out = &mut planes[0];
            out.clear();
            if channels == 1 {
                out.extend(bytes.chunks_exact(N).map(read));
            } else {
                // Same order of operations as the generic path: sum in channel order, scale.
                let scale = 1.0 / channels as f32;
                out.extend(
                    frames.map(|f| f.chunks_exact(N).map(read).fold(0.0f32, |a, s| a + s) * scale),
                );
            }
        }
    }
}
