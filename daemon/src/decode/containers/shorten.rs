//! Shorten (Tony Robinson's lossless coder, versions 1–3) as LDC embeds it in NIST SPHERE
//! files (`sample_coding pcm,embedded-shorten-v2.00` in WSJ and TIDIGITS,
//! `ulaw,embedded-shorten-v2.00` in Switchboard-style telephone corpora). FFmpeg reads the
//! linear-PCM kind (our output is identical to its decode) but not the µ-law kind, and no
//! crate decodes Shorten; decoding here also spares each file an FFmpeg process.
//!
//! The stream: magic `ajkg`, a version byte, then an MSB-first bit stream of Rice codes: a
//! header (file type, channels, block size, LPC order, mean window, bytes to skip) and
//! commands, one per channel block (a fixed polynomial or quantised LPC predictor plus
//! Rice-coded residuals, or zeros), with block-size and bit-shift changes between them.
//! Predictors reach into the previous block and a running mean of past blocks, so the
//! stream is decoded from its start; it cannot seek.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::audio::well_known::CODEC_ID_PCM_S16LE;
use symphonia::core::codecs::audio::AudioCodecParameters;
use symphonia::core::errors::{Error as SymError, Result as SymResult, SeekErrorKind};
use symphonia::core::formats::{
    FormatInfo, FormatReader, MediaInfo, SeekMode, SeekTo, SeekedTo, Track,
};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::Metadata;
use symphonia::core::packet::Packet;
use symphonia::core::units::{Duration, Timestamp};

use super::blocks::{channels_for, OneTrack};

const MAGIC: &[u8; 4] = b"ajkg";

// Rice parameters of the header fields and commands (the format's constants).
const TYPE_SIZE: u32 = 4;
const CHANNELS_SIZE: u32 = 0;
const LPC_ORDER_SIZE: u32 = 2;
const ENERGY_SIZE: u32 = 3;
const BITSHIFT_SIZE: u32 = 2;
const COMMAND_SIZE: u32 = 2;
const VERBATIM_LEN_SIZE: u32 = 5;
const VERBATIM_BYTE_SIZE: u32 = 8;
const ULONG_SIZE: u32 = 2;
const SKIP_SIZE: u32 = 1;
const LPC_QUANT: u32 = 5;
const DEFAULT_BLOCK_SIZE: u32 = 256;
const MIN_WRAP: usize = 3;

const FN_DIFF0: u32 = 0;
const FN_DIFF3: u32 = 3;
const FN_QUIT: u32 = 4;
const FN_BLOCKSIZE: u32 = 5;
const FN_BITSHIFT: u32 = 6;
const FN_QLPC: u32 = 7;
const FN_ZERO: u32 = 8;
const FN_VERBATIM: u32 = 9;

/// Sample types the decoder's output is defined for. `TYPE_AU2` is µ-law whose codes are
/// coded as values ordered by amplitude (-128..=127, -1 for µ-law's negative zero): what
/// LDC's `ulaw,embedded-shorten` files (Switchboard, Fisher) hold.
const TYPE_S8: u32 = 1;
const TYPE_U8: u32 = 2;
const TYPE_S16HL: u32 = 3;
const TYPE_U16HL: u32 = 4;
const TYPE_S16LH: u32 = 5;
const TYPE_U16LH: u32 = 6;
const TYPE_AU2: u32 = 8;

/// Limits that keep a hostile header from sizing buffers: LDC streams use 256-sample
/// blocks, order ≤ 32 and a 4-block mean.
const MAX_BLOCK_SIZE: u32 = 65_536;
const MAX_CHANNELS: u32 = 64;
const MAX_LPC_ORDER: u32 = 64;
const MAX_MEAN_BLOCKS: u32 = 64;
/// A Rice prefix longer than this is damage, not a residual.
const MAX_UNARY: u32 = 1 << 20;

/// MSB-first bits of an in-memory stream.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = self.data.get(self.pos / 8).ok_or("stream ends mid-block")?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        (0..n).try_fold(0u32, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    /// Unsigned Rice code: zeros ended by a one, then `k` low bits.
    fn unsigned(&mut self, k: u32) -> Result<u32, String> {
        if k > 31 {
            return Err("a Rice parameter is out of range".into());
        }
        let mut high = 0u64;
        while self.bit()? == 0 {
            high += 1;
            if high > u64::from(MAX_UNARY) {
                return Err("a Rice code runs too long".into());
            }
        }
        let value = (high << k) | u64::from(self.bits(k)?);
        u32::try_from(value).map_err(|_| "a Rice code overflows".into())
    }

    /// Signed Rice code: the unsigned code of `k + 1` bits, sign in the lowest bit.
    fn signed(&mut self, k: u32) -> Result<i32, String> {
        let u = self.unsigned(k + 1)?;
        Ok(if u & 1 == 1 {
            !((u >> 1) as i32)
        } else {
            (u >> 1) as i32
        })
    }

    /// A header value: its Rice parameter comes first, from version 1 on.
    fn ulong(&mut self, version: u8, k: u32) -> Result<u32, String> {
        let k = if version == 0 {
            k
        } else {
            self.unsigned(ULONG_SIZE)?
        };
        if k > 31 {
            return Err("a header field's width is out of range".into());
        }
        self.unsigned(k)
    }
}

/// The stream header.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    version: u8,
    file_type: u32,
    pub channels: u32,
    block_size: u32,
    max_lpc_order: u32,
    mean_blocks: u32,
    /// Bit position where the commands begin.
    commands_at: usize,
}

pub(crate) fn header(stream: &[u8]) -> Result<Header, String> {
    if stream.get(..4) != Some(MAGIC) {
        return Err("embedded Shorten stream has no 'ajkg' magic".into());
    }
    let version = *stream.get(4).ok_or("Shorten stream ends in its header")?;
    if version > 3 {
        return Err(format!("Shorten version {version} is not supported"));
    }
    let mut bits = Bits {
        data: stream,
        pos: 40,
    };
    let file_type = bits.ulong(version, TYPE_SIZE)?;
    let channels = bits.ulong(version, CHANNELS_SIZE)?;
    let (mut block_size, mut max_lpc_order, mut mean_blocks) = (DEFAULT_BLOCK_SIZE, 0, 0);
    if version > 0 {
        block_size = bits.ulong(version, DEFAULT_BLOCK_SIZE.ilog2())?;
        max_lpc_order = bits.ulong(version, LPC_ORDER_SIZE)?;
        mean_blocks = bits.ulong(version, 0)?;
        let skip = bits.ulong(version, SKIP_SIZE)?;
        bits.pos += 8 * skip as usize;
    }
    let types = [
        TYPE_S8, TYPE_U8, TYPE_S16HL, TYPE_U16HL, TYPE_S16LH, TYPE_U16LH, TYPE_AU2,
    ];
    if !types.contains(&file_type) {
        return Err(format!(
            "Shorten sample type {file_type} is not supported (old µ-law or A-law Shorten)"
        ));
    }
    if !(1..=MAX_CHANNELS).contains(&channels)
        || !(1..=MAX_BLOCK_SIZE).contains(&block_size)
        || max_lpc_order > MAX_LPC_ORDER
        || mean_blocks > MAX_MEAN_BLOCKS
    {
        return Err(
            "Shorten header has channels, block size, LPC order or mean window out of range".into(),
        );
    }
    Ok(Header {
        version,
        file_type,
        channels,
        block_size,
        max_lpc_order,
        mean_blocks,
        commands_at: bits.pos,
    })
}

/// Decoder state across blocks: per channel, the last samples (for prediction) and the
/// means of the last blocks (the offset DIFF0 and QLPC predict around).
pub(crate) struct Decoder {
    header: Header,
    pos: usize,
    block_size: u32,
    bitshift: u32,
    wrap: usize,
    /// Per channel: `wrap` samples of history, then the current block.
    history: Vec<Vec<i32>>,
    means: Vec<Vec<i32>>,
    finished: bool,
    failed: Option<String>,
}

impl Decoder {
    pub(crate) fn new(header: Header) -> Self {
        let wrap = (header.max_lpc_order as usize).max(MIN_WRAP);
        let start_mean = if header.file_type == TYPE_U8 { 0x80 } else { 0 };
        let channels = header.channels as usize;
        Self {
            pos: header.commands_at,
            block_size: header.block_size,
            bitshift: 0,
            wrap,
            history: vec![vec![0; wrap + header.block_size as usize]; channels],
            means: vec![vec![start_mean; header.mean_blocks.max(1) as usize]; channels],
            finished: false,
            failed: None,
            header,
        }
    }

    /// The next block of every channel as interleaved 16-bit samples appended to `out`;
    /// `Ok(0)` at the end of the stream. Returns the frames added.
    pub(crate) fn next_block(
        &mut self,
        stream: &[u8],
        out: &mut Vec<i16>,
    ) -> Result<usize, String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        // A failed block leaves the state half-updated: the error stands from then on.
        self.block(stream, out)
            .inspect_err(|e| self.failed = Some(e.clone()))
    }

    fn block(&mut self, stream: &[u8], out: &mut Vec<i16>) -> Result<usize, String> {
        let mut bits = Bits {
            data: stream,
            pos: self.pos,
        };
        let channels = self.header.channels as usize;
        let mut channel = 0;
        while !self.finished {
            let command = bits.unsigned(COMMAND_SIZE)?;
            match command {
                FN_DIFF0..=FN_DIFF3 | FN_QLPC | FN_ZERO => {
                    self.channel_block(&mut bits, command, channel)?;
                    channel += 1;
                    if channel == channels {
                        self.pos = bits.pos;
                        return Ok(self.emit(out));
                    }
                }
                FN_QUIT => self.finished = true,
                FN_BLOCKSIZE => {
                    let size = bits.ulong(self.header.version, self.block_size.max(2).ilog2())?;
                    if !(1..=MAX_BLOCK_SIZE).contains(&size) {
                        return Err(format!("Shorten block size {size} is out of range"));
                    }
                    self.block_size = size;
                    for h in &mut self.history {
                        h.resize(self.wrap + size as usize, 0);
                    }
                }
                FN_BITSHIFT => {
                    self.bitshift = bits.unsigned(BITSHIFT_SIZE)?;
                    if self.bitshift > 31 {
                        return Err("Shorten bit shift is out of range".into());
                    }
                    if self.bitshift > 0 && self.header.file_type == TYPE_AU2 {
                        // Shifted µ-law goes through tables of the encoder's we do not have.
                        return Err("bit-shifted µ-law Shorten is not supported".into());
                    }
                }
                FN_VERBATIM => {
                    let len = bits.unsigned(VERBATIM_LEN_SIZE)?;
                    for _ in 0..len {
                        bits.unsigned(VERBATIM_BYTE_SIZE)?;
                    }
                }
                other => return Err(format!("unknown Shorten command {other}")),
            }
        }
        self.pos = bits.pos;
        Ok(0)
    }

    fn channel_block(
        &mut self,
        bits: &mut Bits,
        command: u32,
        channel: usize,
    ) -> Result<(), String> {
        let version = self.header.version;
        let n = self.block_size as usize;
        let energy = if command == FN_ZERO {
            0
        } else {
            let e = bits.unsigned(ENERGY_SIZE)?;
            // Version 0 coded the residual width one larger.
            let e = if version == 0 {
                e.checked_sub(1).ok_or("Shorten residual width below 0")?
            } else {
                e
            };
            if e > 30 {
                return Err(format!("Shorten residual width {e} is out of range"));
            }
            e
        };
        let mean_blocks = self.header.mean_blocks as usize;
        let offset = if mean_blocks == 0 {
            self.means[channel][0]
        } else {
            let base: i64 = if version < 2 {
                0
            } else {
                mean_blocks as i64 / 2
            };
            let sum = base
                + self.means[channel]
                    .iter()
                    .map(|&m| i64::from(m))
                    .sum::<i64>();
            let mean = (sum / mean_blocks as i64) as i32;
            if version >= 2 && self.bitshift > 0 {
                mean >> self.bitshift
            } else {
                mean
            }
        };
        let wrap = self.wrap;
        let h = &mut self.history[channel];
        if command == FN_ZERO {
            h[wrap..wrap + n].fill(0);
        } else {
            let (order, coeffs, shift, lpc) = if command == FN_QLPC {
                let order = bits.unsigned(LPC_ORDER_SIZE)? as usize;
                if order > wrap {
                    return Err(format!(
                        "Shorten LPC order {order} exceeds the history kept"
                    ));
                }
                let coeffs = (0..order)
                    .map(|_| bits.signed(LPC_QUANT))
                    .collect::<Result<Vec<_>, _>>()?;
                (order, coeffs, LPC_QUANT, true)
            } else {
                let fixed: &[i32] = match command {
                    0 => &[],
                    1 => &[1],
                    2 => &[2, -1],
                    _ => &[3, -3, 1],
                };
                (command as usize, fixed.to_vec(), 0, false)
            };
            if lpc && offset != 0 {
                for s in &mut h[wrap - order..wrap] {
                    *s = s.wrapping_sub(offset);
                }
            }
            let init: i64 = match (order, lpc) {
                (0, _) => i64::from(offset),
                (_, true) if version >= 2 => 1 << LPC_QUANT,
                _ => 0,
            };
            for i in wrap..wrap + n {
                let mut sum = init;
                for (j, c) in coeffs.iter().enumerate() {
                    sum += i64::from(*c) * i64::from(h[i - j - 1]);
                }
                let residual = bits.signed(energy)?;
                h[i] = residual.wrapping_add((sum >> shift) as i32);
            }
            if lpc && offset != 0 {
                for s in &mut h[wrap..wrap + n] {
                    *s = s.wrapping_add(offset);
                }
            }
        }
        if mean_blocks > 0 {
            let base: i64 = if version < 2 { 0 } else { n as i64 / 2 };
            let sum = base + h[wrap..wrap + n].iter().map(|&s| i64::from(s)).sum::<i64>();
            let mean = (sum / n as i64) as i32;
            let means = &mut self.means[channel];
            means.rotate_left(1);
            let last = means.len() - 1;
            means[last] = if version < 2 {
                mean
            } else {
                mean.wrapping_shl(self.bitshift)
            };
        }
        // The block's last samples are the next block's history.
        h.copy_within(n..n + wrap, 0);
        Ok(())
    }

    /// The current block of every channel, shifted back and converted to signed 16-bit,
    /// interleaved.
    fn emit(&self, out: &mut Vec<i16>) -> usize {
        let n = self.block_size as usize;
        let to_i16 = |v: i32| -> i16 {
            let v = v.wrapping_shl(self.bitshift);
            let v = match self.header.file_type {
                TYPE_AU2 => {
                    let code = if v >= 0 { 255 - v } else { 128 + v };
                    i32::from(ulaw_to_linear(code.clamp(0, 255) as u8))
                }
                TYPE_S8 => v << 8,
                TYPE_U8 => (v - 0x80) << 8,
                TYPE_U16HL | TYPE_U16LH => v - 0x8000,
                _ => v,
            };
            v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
        };
        out.reserve(n * self.history.len());
        for i in self.wrap..self.wrap + n {
            out.extend(self.history.iter().map(|h| to_i16(h[i])));
        }
        n
    }
}

/// G.711 µ-law expansion (the table FFmpeg and symphonia decode µ-law with).
fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let magnitude = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 {
        0x84 - magnitude
    } else {
        magnitude - 0x84
    }) as i16
}

/// Frames per packet handed on: whole blocks, at least this many.
const PACKET_FRAMES: usize = 4096;
/// An embedded stream is held in memory while it decodes; LDC files are a few MB.
const MAX_STREAM_BYTES: u64 = 1 << 30;

/// A SPHERE file's Shorten payload as a symphonia `FormatReader` of decoded 16-bit PCM.
pub(crate) struct ShortenReader {
    stream: Vec<u8>,
    decoder: Decoder,
    source: MediaSourceStream<'static>,
    track: OneTrack,
    channels: usize,
    /// The SPHERE header's `sample_count`: output stops there.
    frames: Option<u64>,
    next_frame: u64,
    pending: Vec<i16>,
}

impl ShortenReader {
    /// `frames` is the container's count, `start` where the Shorten stream begins.
    pub(crate) fn new(
        mut source: MediaSourceStream<'static>,
        info: FormatInfo,
        start: u64,
        sample_rate: u32,
        frames: Option<u64>,
    ) -> Result<Self, String> {
        let io = |e: std::io::Error| format!("embedded Shorten stream: {e}");
        let len = source.byte_len().unwrap_or(0).saturating_sub(start);
        if len > MAX_STREAM_BYTES {
            return Err(format!(
                "embedded Shorten stream of {len} bytes is larger than {MAX_STREAM_BYTES}"
            ));
        }
        source.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut stream = Vec::with_capacity(len as usize);
        (&mut source)
            .take(MAX_STREAM_BYTES)
            .read_to_end(&mut stream)
            .map_err(io)?;
        let header = header(&stream)?;
        let channels =
            channels_for(header.channels as u16).ok_or("Shorten header declares no channels")?;
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_PCM_S16LE)
            .with_sample_rate(sample_rate)
            .with_channels(channels)
            .with_bits_per_sample(16)
            .with_bits_per_coded_sample(16)
            .with_max_frames_per_packet((PACKET_FRAMES + MAX_BLOCK_SIZE as usize) as u64)
            .with_frames_per_block(1);
        let track = OneTrack::new(info, params, frames).ok_or("sample rate of 0")?;
        Ok(Self {
            channels: header.channels as usize,
            decoder: Decoder::new(header),
            stream,
            source,
            track,
            frames,
            next_frame: 0,
            pending: Vec::new(),
        })
    }
}

impl FormatReader for ShortenReader {
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

    /// Only back to the start (the reader decodes from there and discards).
    fn seek(&mut self, _mode: SeekMode, to: SeekTo) -> SymResult<SeekedTo> {
        match to {
            SeekTo::Timestamp { ts, .. } if ts.get() == 0 => {
                self.decoder = Decoder::new(self.decoder.header.clone());
                self.next_frame = 0;
                Ok(SeekedTo {
                    track_id: 0,
                    required_ts: ts,
                    actual_ts: ts,
                })
            }
            _ => Err(SymError::SeekError(SeekErrorKind::Unseekable)),
        }
    }

    fn next_packet(&mut self) -> SymResult<Option<Packet>> {
        let left = self
            .frames
            .map_or(u64::MAX, |n| n.saturating_sub(self.next_frame));
        if left == 0 {
            return Ok(None);
        }
        self.pending.clear();
        let mut frames = 0;
        while frames < PACKET_FRAMES {
            match self.decoder.next_block(&self.stream, &mut self.pending) {
                Ok(0) => break,
                Ok(n) => frames += n,
                Err(reason) if frames == 0 => {
                    let kind = if reason.contains("ends mid-block") {
                        std::io::ErrorKind::UnexpectedEof
                    } else {
                        std::io::ErrorKind::InvalidData
                    };
                    return Err(SymError::IoError(std::io::Error::new(kind, reason)));
                }
                // Hand on what decoded; the error comes again with the next call.
                Err(_) => break,
            }
        }
        let frames = (frames as u64).min(left);
        if frames == 0 {
            return Ok(None);
        }
        let data: Vec<u8> = self.pending[..frames as usize * self.channels]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let ts = Timestamp::new(i64::try_from(self.next_frame).unwrap_or(i64::MAX));
        self.next_frame += frames;
        Ok(Some(Packet::new(0, ts, Duration::new(frames), data)))
    }

    fn into_inner<'s>(self: Box<Self>) -> MediaSourceStream<'s>
    where
        Self: 's,
    {
        self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder side of the format, enough to make streams the decoder must invert.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, n: u32) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                let last = self.bytes.len() - 1;
                self.bytes[last] |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
        }
        fn unsigned(&mut self, v: u32, k: u32) {
            for _ in 0..(v >> k) {
                self.put(0, 1);
            }
            self.put(1, 1);
            self.put(u64::from(v), k);
        }
        fn signed(&mut self, v: i32, k: u32) {
            let u = if v < 0 {
                ((!v) as u32) << 1 | 1
            } else {
                (v as u32) << 1
            };
            self.unsigned(u, k + 1);
        }
        fn ulong(&mut self, v: u32) {
            let k = 32 - v.leading_zeros();
            self.unsigned(k, ULONG_SIZE);
            self.unsigned(v, k);
        }
    }

    /// A version-2 stream of 16-bit samples (`frames[i][channel]`): every predictor in
    /// turn, zero blocks, a block-size change for the tail and a bit shift for one stretch.
    fn encode(frames: &[Vec<i16>], block: usize, shift_from: usize) -> Vec<u8> {
        encode_type(TYPE_S16LH, frames, block, shift_from)
    }

    fn encode_type(
        file_type: u32,
        frames: &[Vec<i16>],
        block: usize,
        shift_from: usize,
    ) -> Vec<u8> {
        let channels = frames[0].len();
        let mut w = BitWriter::default();
        w.bytes.extend_from_slice(b"ajkg\x02");
        w.bits = 40;
        for field in [file_type, channels as u32, block as u32, 0, 0, 0] {
            w.ulong(field);
        }
        let mut history = vec![[0i32; 3]; channels];
        let mut shift = 0;
        let mut size = block;
        for (b, start) in (0..frames.len()).step_by(block).enumerate() {
            let end = (start + block).min(frames.len());
            if end - start != size {
                size = end - start;
                w.unsigned(FN_BLOCKSIZE, COMMAND_SIZE);
                w.ulong(size as u32);
            }
            if start >= shift_from && shift == 0 {
                shift = 1;
                w.unsigned(FN_BITSHIFT, COMMAND_SIZE);
                w.unsigned(shift, BITSHIFT_SIZE);
            }
            for (c, h) in history.iter_mut().enumerate() {
                let samples: Vec<i32> = frames[start..end]
                    .iter()
                    .map(|f| i32::from(f[c]) >> shift)
                    .collect();
                if samples.iter().all(|&s| s == 0) {
                    w.unsigned(FN_ZERO, COMMAND_SIZE);
                    *h = [0; 3];
                    continue;
                }
                let command = [0, 1, 2, 3, FN_QLPC][(b + c) % 5];
                w.unsigned(command, COMMAND_SIZE);
                let energy = 12;
                w.unsigned(energy, ENERGY_SIZE);
                if command == FN_QLPC {
                    w.unsigned(1, LPC_ORDER_SIZE);
                    w.signed(16, LPC_QUANT);
                }
                for &x in &samples {
                    let [p1, p2, p3] = *h;
                    let prediction = match command {
                        0 => 0,
                        1 => p1,
                        2 => 2 * p1 - p2,
                        3 => 3 * p1 - 3 * p2 + p3,
                        _ => (32 + 16 * p1) >> 5,
                    };
                    w.signed(x - prediction, energy);
                    *h = [x, p1, p2];
                }
            }
        }
        w.unsigned(FN_QUIT, COMMAND_SIZE);
        w.bytes
    }

    fn signal(frames: usize, channels: usize) -> Vec<Vec<i16>> {
        let mut seed = 0x2545_F491u32;
        (0..frames)
            .map(|t| {
                (0..channels)
                    .map(|c| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        if (600..1100).contains(&t) {
                            return 0; // silent stretch: zero blocks
                        }
                        let tone = ((t as f64 * 0.05 * (c + 1) as f64).sin() * 12000.0) as i32;
                        let noise = (seed % 401) as i32 - 200;
                        let v = (tone + noise).clamp(-32768, 32767) as i16;
                        if t >= 1500 {
                            v & !1
                        } else {
                            v
                        } // even from the bit shift on
                    })
                    .collect()
            })
            .collect()
    }

    fn decode_all(stream: &[u8]) -> Result<Vec<i16>, String> {
        let mut decoder = Decoder::new(header(stream)?);
        let mut out = Vec::new();
        while decoder.next_block(stream, &mut out)? > 0 {}
        Ok(out)
    }

    #[test]
    fn decodes_what_the_encoder_wrote() {
        for channels in [1, 2] {
            let frames = signal(2300, channels);
            let stream = encode(&frames, 256, 1500);
            let want: Vec<i16> = frames.iter().flatten().copied().collect();
            assert_eq!(decode_all(&stream).unwrap(), want, "{channels} channel(s)");
        }
    }

    #[test]
    fn ulaw_shorten_gives_the_g711_expansion_of_its_codes() {
        // Codes by amplitude: 0x00 (most negative) … 0x7F (negative zero), 0xFF (zero) … 0x80.
        let codes: Vec<u8> = (0..2000u32)
            .map(|t| ((t * 37 + t / 7) % 256) as u8)
            .collect();
        let values: Vec<Vec<i16>> = codes
            .iter()
            .map(|&c| {
                vec![if c >= 128 {
                    255 - i16::from(c)
                } else {
                    i16::from(c) - 128
                }]
            })
            .collect();
        let stream = encode_type(TYPE_AU2, &values, 256, usize::MAX);
        let want: Vec<i16> = codes.iter().map(|&c| ulaw_to_linear(c)).collect();
        assert_eq!(decode_all(&stream).unwrap(), want);
        assert_eq!(
            (ulaw_to_linear(0x00), ulaw_to_linear(0x80)),
            (-32124, 32124)
        );
        assert_eq!((ulaw_to_linear(0x7F), ulaw_to_linear(0xFF)), (0, 0));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let stream = encode(&signal(1000, 2), 256, 2000);
        let cut = &stream[..stream.len() / 2];
        assert!(decode_all(cut).unwrap_err().contains("ends mid-block"));
        let mut seed = 7u32;
        for trial in 0..200 {
            let mut bad = stream.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let at = 5 + (seed as usize >> 8) % (bad.len() - 5);
                bad[at] ^= (seed >> 3) as u8 | 1;
            }
            let _ = decode_all(&bad).map_err(|e| assert!(!e.is_empty(), "trial {trial}"));
        }
        assert!(header(b"ajkg\x07").unwrap_err().contains("version 7"));
        assert!(header(b"wxyz\x02").is_err());
    }

    #[test]
    fn sphere_with_embedded_shorten_loads_like_pcm() {
        let frames = signal(3000, 2);
        let mut file =
            "NIST_1A\n   1024\nsample_rate -i 16000\nchannel_count -i 2\nsample_count -i 3000\n\
             sample_n_bytes -i 2\nsample_byte_format -s2 01\n\
             sample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n"
                .as_bytes()
                .to_vec();
        file.resize(1024, b' ');
        file.extend(encode(&frames, 256, 1500));
        let path = std::env::temp_dir().join(format!("shorten-{}.sph", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        let req = crate::decode::LoadRequest {
            channels: crate::decode::ChannelMode::Keep,
            ..Default::default()
        };
        let audio = crate::decode::load(&path, &req, 2).unwrap();
        let info = crate::decode::probe_info(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((audio.sample_rate, audio.planes.len()), (16000, 2));
        assert_eq!(info.frames, Some(3000));
        for (c, plane) in audio.planes.iter().enumerate() {
            let want: Vec<f32> = frames.iter().map(|f| f32::from(f[c]) / 32768.0).collect();
            assert_eq!(plane, &want, "channel {c}");
        }
    }
}
