//! A symphonia `FormatReader` over one stretch of fixed-size blocks whose layout a header
//! parser found: interleaved PCM frames (linear, float, µ-law, A-law: the payload of a
//! SPHERE or RF64 file) or Apple IMA4 packets (64 frames per channel, in AIFC). The decoding
//! itself stays symphonia's (or the direct PCM conversion), so these files take the same
//! path as every WAV: seeking, slicing, lenient truncation, parallel segments.

use std::io::{Read, Seek, SeekFrom};
use std::num::NonZero;

use symphonia::core::audio::Channels;
use symphonia::core::codecs::audio::well_known::{CODEC_ID_PCM_ALAW, CODEC_ID_PCM_MULAW};
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::{Error as SymError, Result as SymResult, SeekErrorKind};
use symphonia::core::formats::{
    FormatInfo, FormatReader, MediaInfo, SeekMode, SeekTo, SeekedTo, Track,
};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{Metadata, MetadataLog};
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, TimeBase, Timestamp};

/// Bytes per packet: large enough that per-packet overhead vanishes, small enough for the
/// decoder's reusable buffers.
const PACKET_BYTES: u64 = 32 * 1024;

/// Where the blocks are and how they are coded.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    pub codec: AudioCodecId,
    pub sample_rate: u32,
    pub channels: Channels,
    /// Bits of one PCM sample (8 for µ-law and A-law); `None` for ADPCM.
    pub bits_per_sample: Option<u32>,
    /// Bytes of one block: a frame for PCM, a packet of every channel for IMA4.
    pub block_bytes: u64,
    /// Frames one block decodes to (1 for PCM).
    pub frames_per_block: u64,
    /// Byte offset of the first block.
    pub start: u64,
    /// Bytes of audio the header declares, when it declares them.
    pub declared_len: Option<u64>,
}

impl Payload {
    /// Interleaved PCM of `bits_per_sample`-bit samples (8 for µ-law and A-law, whose
    /// decoded width symphonia fixes itself).
    pub(crate) fn pcm(
        codec: AudioCodecId,
        sample_rate: u32,
        channels: Channels,
        bits_per_sample: u32,
        start: u64,
        declared_len: Option<u64>,
    ) -> Self {
        Self {
            block_bytes: u64::from(bits_per_sample / 8) * channels.count() as u64,
            frames_per_block: 1,
            bits_per_sample: (!matches!(codec, CODEC_ID_PCM_ALAW | CODEC_ID_PCM_MULAW))
                .then_some(bits_per_sample),
            codec,
            sample_rate,
            channels,
            start,
            declared_len,
        }
    }
}

/// The one audio track these readers describe, with what symphonia's `FormatReader` hands
/// out about it (format, media info, tracks, an empty metadata log).
pub(crate) struct OneTrack {
    info: FormatInfo,
    media_info: MediaInfo,
    tracks: Vec<Track>,
    metadata: MetadataLog,
}

impl OneTrack {
    /// Track 0 with `params`, counted in frames (time base 1/rate), `frames` long if known.
    pub(crate) fn new(
        info: FormatInfo,
        params: AudioCodecParameters,
        frames: Option<u64>,
    ) -> Option<Self> {
        let time_base = TimeBase::try_new(1, params.sample_rate?)?;
        let mut track = Track::new(0);
        track
            .with_codec_params(CodecParameters::Audio(params))
            .with_time_base(time_base);
        if let Some(frames) = frames {
            track
                .with_num_frames(frames)
                .with_duration(Duration::new(frames));
        }
        Some(Self {
            info,
            media_info: MediaInfo::from_track(&track),
            tracks: vec![track],
            metadata: MetadataLog::default(),
        })
    }

    pub(crate) fn format_info(&self) -> &FormatInfo {
        &self.info
    }

    pub(crate) fn media_info(&self) -> &MediaInfo {
        &self.media_info
    }

    pub(crate) fn metadata(&mut self) -> Metadata<'_> {
        self.metadata.metadata()
    }

    pub(crate) fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub(crate) fn sample_rate(&self) -> u32 {
        self.tracks[0].time_base.map_or(1, |tb| tb.denom.get())
    }
}

pub(crate) struct BlockReader {
    source: MediaSourceStream<'static>,
    track: OneTrack,
    payload: Payload,
    blocks_per_packet: u64,
    /// Blocks the header declares, else `None` (read to the end of the file).
    blocks: Option<u64>,
    /// The next block `next_packet` returns.
    next_block: u64,
}

impl BlockReader {
    /// `payload` must come from a parser that checked its channels and sample width.
    pub(crate) fn new(
        mut source: MediaSourceStream<'static>,
        info: FormatInfo,
        payload: Payload,
    ) -> SymResult<Self> {
        if payload.block_bytes == 0 || payload.frames_per_block == 0 {
            return Err(SymError::Unsupported("blocks of 0 bytes or frames"));
        }
        let blocks = payload.declared_len.map(|len| len / payload.block_bytes);
        let blocks_per_packet = (PACKET_BYTES / payload.block_bytes).max(1);
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(payload.codec)
            .with_sample_rate(payload.sample_rate)
            .with_channels(payload.channels.clone())
            .with_max_frames_per_packet(blocks_per_packet * payload.frames_per_block)
            .with_frames_per_block(payload.frames_per_block);
        if let Some(bits) = payload.bits_per_sample {
            params
                .with_bits_per_sample(bits)
                .with_bits_per_coded_sample(bits);
        }
        let frames = blocks.and_then(|b| b.checked_mul(payload.frames_per_block));
        let track =
            OneTrack::new(info, params, frames).ok_or(SymError::Unsupported("sample rate of 0"))?;
        source.seek(SeekFrom::Start(payload.start))?;
        Ok(Self {
            source,
            track,
            payload,
            blocks_per_packet,
            blocks,
            next_block: 0,
        })
    }
}

impl FormatReader for BlockReader {
    fn format_info(&self) -> &FormatInfo {
        self.track.format_info()
    }

    fn media_info(&self) -> &MediaInfo {
        self.track.media_info()
    }

    fn metadata(&mut self) -> Metadata<'_> {
        self.track.metadata()
    }

    fn tracks(&self) -> &[Track] {
        self.track.tracks()
    }

    fn seek(&mut self, _mode: SeekMode, to: SeekTo) -> SymResult<SeekedTo> {
        let ts = match to {
            SeekTo::Timestamp { ts, .. } => ts,
            SeekTo::Time { time, .. } => TimeBase::try_new(1, self.track.sample_rate())
                .and_then(|tb| tb.calc_timestamp(time))
                .ok_or(SymError::SeekError(SeekErrorKind::OutOfRange))?,
        };
        let Ok(frame) = u64::try_from(ts.get()) else {
            return Err(SymError::SeekError(SeekErrorKind::OutOfRange));
        };
        let fpb = self.payload.frames_per_block;
        if self.blocks.is_some_and(|n| frame > n.saturating_mul(fpb)) {
            return Err(SymError::SeekError(SeekErrorKind::OutOfRange));
        }
        // To the block holding `frame`; the reader discards the frames before it.
        let block = frame / fpb;
        let byte = block
            .checked_mul(self.payload.block_bytes)
            .and_then(|b| b.checked_add(self.payload.start))
            .ok_or(SymError::SeekError(SeekErrorKind::OutOfRange))?;
        self.source.seek(SeekFrom::Start(byte))?;
        self.next_block = block;
        Ok(SeekedTo {
            track_id: 0,
            required_ts: ts,
            actual_ts: Timestamp::new(i64::try_from(block * fpb).unwrap_or(i64::MAX)),
        })
    }

    /// Whole blocks up to the declared end; a file cut short ends early with the blocks it
    /// holds (the reader calls that truncation, since these lengths are exact).
    fn next_packet(&mut self) -> SymResult<Option<Packet>> {
        let want = match self.blocks {
            Some(n) => n
                .saturating_sub(self.next_block)
                .min(self.blocks_per_packet),
            None => self.blocks_per_packet,
        };
        if want == 0 {
            return Ok(None);
        }
        let block_bytes = self.payload.block_bytes;
        let mut data = Vec::with_capacity((want * block_bytes) as usize);
        (&mut self.source)
            .take(want * block_bytes)
            .read_to_end(&mut data)?;
        let got = data.len() as u64 / block_bytes;
        if got == 0 {
            return Ok(None);
        }
        data.truncate((got * block_bytes) as usize);
        let fpb = self.payload.frames_per_block;
        let ts = Timestamp::new(i64::try_from(self.next_block * fpb).unwrap_or(i64::MAX));
        self.next_block += got;
        Ok(Some(Packet::new(0, ts, Duration::new(got * fpb), data)))
    }

    fn into_inner<'s>(self: Box<Self>) -> MediaSourceStream<'s>
    where
        Self: 's,
    {
        self.source
    }
}

/// Speaker positions for `count` channels in WAV order (as symphonia gives a WAV without a
/// channel mask); more channels than WAV names are discrete. `None` for no channels.
pub(crate) fn channels_for(count: u16) -> Option<Channels> {
    NonZero::new(count)?;
    Some(
        symphonia::core::audio::Position::from_count(u32::from(count))
            .map_or(Channels::Discrete(count), Channels::Positioned),
    )
}
