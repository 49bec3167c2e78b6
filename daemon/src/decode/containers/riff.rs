//! The WAV files symphonia's RIFF reader refuses or misreads: RF64 and BW64 (64-bit sizes
//! in a `ds64` chunk, for recordings over 4 GB) with PCM, float, µ-law or A-law samples,
//! RIFF WAV whose `fmt ` tag says the data chunk holds an MPEG audio stream (0x0050,
//! 0x0055), and WAV whose header was never finished (Note [Unfinished WAV headers]).
//!
//! Note [Unfinished WAV headers]: a WAV writer states the data chunk's size when it closes
//! the file. One writing to a pipe cannot go back to do so (`ffmpeg ... -f wav -` leaves
//! 0xFFFFFFFF), and one that was killed mid-recording never did (Python's `wave` and most
//! recorders leave 0). symphonia read the first kind to the end and called the file
//! truncated (`--strict` refused every piped WAV), and the second kind as empty: the whole
//! recording was lost. A data size of 0 or 0xFFFFFFFF (a `ds64` size of 0 in RF64) with
//! bytes after it means "to the end of the file", as FFmpeg and libsndfile read it; the
//! length is then the whole frames the file holds, and the file is not damaged. AIFF has
//! the same gap (`aifc.rs`: FFmpeg writing AIFF to a pipe leaves sizes of 0, and cannot
//! read such a file back), read the same way.
//!
//! Note [Chunks without their pad byte]: RIFF pads a chunk of odd size with one byte, and
//! the next chunk starts after it. Some writers leave the pad out (an odd-sized `LIST`
//! or `bext` of text before `data`); every reader that follows the rule then looks for the
//! next chunk one byte late, finds no `data`, and refuses the file (symphonia, FFmpeg, sox
//! and libsndfile alike). After an odd chunk, where the padded position holds no chunk
//! header and the unpadded one does, the walk takes the unpadded one, and such a file's
//! samples are read here.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::audio::{Channels, Position};
use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::AudioCodecId;

use super::blocks::{channels_for, Payload};

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_ALAW: u16 = 0x0006;
const WAVE_FORMAT_MULAW: u16 = 0x0007;
const WAVE_FORMAT_MPEG: u16 = 0x0050;
const WAVE_FORMAT_MPEGLAYER3: u16 = 0x0055;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// A 32-bit size of all ones: "see the `ds64` chunk" (RF64), "unknown" (RIFF).
const SIZE_IN_DS64: u32 = u32::MAX;

/// A data size an unfinished header leaves (Note [Unfinished WAV headers]).
fn unfinished(size: u64, rf64: bool) -> bool {
    size == 0 || (!rf64 && size == u64::from(u32::MAX))
}

/// Chunks before `data` are read whole only when small (`fmt `, `ds64`); this bounds how many
/// are walked, so a file of tiny chunks cannot keep the walk going for long.
const MAX_CHUNKS: usize = 4096;

/// The `fmt ` chunk's fields that matter here.
#[derive(Clone, Debug)]
struct WaveFormat {
    tag: u16,
    channels: u16,
    sample_rate: u32,
    bits: u16,
    /// From `WAVE_FORMAT_EXTENSIBLE`: the speaker mask.
    channel_mask: Option<u32>,
}

/// What a WAV-family header says about its data.
#[derive(Debug)]
pub(crate) enum WavData {
    /// PCM samples, and why they are read here rather than by symphonia.
    Pcm(Payload, Reading),
    /// An MPEG audio stream of `len` bytes at `start`.
    Mpeg { start: u64, len: u64 },
}

/// Why a WAV's PCM samples are read by this module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Reading {
    /// RF64/BW64, which symphonia has no reader for; or a plain RIFF WAV whose samples
    /// are located for a ranged read ([`layout`]).
    Located,
    /// Note [Unfinished WAV headers].
    Unfinished,
    /// Note [Chunks without their pad byte].
    Unpadded,
}

/// Reads the chunk list of an RF64/BW64 file (`rf64 = true`) or a RIFF WAVE file. `Ok(None)`:
/// a RIFF WAV that symphonia reads itself (a finished header, or samples this module does
/// not decode). `Err`: what is not supported here.
pub(crate) fn parse<R: Read + Seek>(
    file: &mut R,
    file_len: u64,
    rf64: bool,
) -> Result<Option<WavData>, String> {
    walk(file, file_len, rf64, false)
}

/// Where the samples of any WAV-family file lie, plain RIFF PCM (symphonia's to decode)
/// included: for fetching only the part of a remote file a request reads.
pub(crate) fn layout<R: Read + Seek>(
    file: &mut R,
    file_len: u64,
    rf64: bool,
) -> Result<WavData, String> {
    walk(file, file_len, rf64, true)?.ok_or_else(|| "not a WAV file".to_string())
}

/// The chunk walk of [`parse`] and [`layout`]; `every_riff` walks a plain RIFF WAV to its
/// data too, rather than leaving it to symphonia at its `fmt ` chunk.
fn walk<R: Read + Seek>(
    file: &mut R,
    file_len: u64,
    rf64: bool,
    every_riff: bool,
) -> Result<Option<WavData>, String> {
    let name = if rf64 { "RF64/BW64 WAV" } else { "WAV" };
    let io = |e: std::io::Error| format!("{name} header: {e}");
    file.seek(SeekFrom::Start(12)).map_err(io)?;
    let mut ds64_data_len = None;
    let mut format = None;
    // Note [Chunks without their pad byte]: symphonia cannot walk past such a chunk.
    let mut unpadded = false;
    for _ in 0..MAX_CHUNKS {
        let mut head = [0u8; 8];
        if file.read_exact(&mut head).is_err() {
            break;
        }
        let (id, size) = (
            &head[..4],
            u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        );
        let body = file.stream_position().map_err(io)?;
        match id {
            b"ds64" if rf64 => {
                let fields = read_body(file, size, 28).map_err(io)?;
                // riffSize (8), dataSize (8), sampleCount (8), table length (4).
                ds64_data_len = Some(le_u64(&fields[8..16]));
            }
            b"fmt " => {
                let fields = read_body(file, size, 16).map_err(io)?;
                let parsed = wave_format(&fields)?;
                // A plain RIFF WAV is symphonia's, unless it holds MPEG audio or (seen at
                // its data chunk) its header was never finished over samples read here.
                if !rf64 && !every_riff && codec_of(&parsed).is_none() && !is_mpeg(&parsed) {
                    return Ok(None);
                }
                format = Some(parsed);
            }
            b"data" => {
                let format =
                    format.ok_or_else(|| format!("{name} has no fmt chunk before its data"))?;
                let mut declared = if rf64 && size == SIZE_IN_DS64 {
                    ds64_data_len.ok_or("RF64/BW64 WAV has no ds64 chunk giving its data size")?
                } else {
                    u64::from(size)
                };
                let rest = file_len.saturating_sub(body);
                let reading = if unfinished(declared, rf64) && rest > 0 {
                    declared = rest;
                    Reading::Unfinished
                } else if unpadded {
                    Reading::Unpadded
                } else if rf64 || every_riff || is_mpeg(&format) {
                    Reading::Located
                } else {
                    return Ok(None);
                };
                return data_of(name, &format, body, declared, file_len, reading).map(Some);
            }
            _ => {}
        }
        let mut next = body + u64::from(size) + u64::from(size & 1);
        if size & 1 == 1 {
            let (at, missing) = after_odd_chunk(file, next, file_len).map_err(io)?;
            next = at;
            unpadded |= missing;
        }
        if next >= file_len {
            break;
        }
        file.seek(SeekFrom::Start(next)).map_err(io)?;
    }
    Err(format!("{name} has no data chunk"))
}

/// The chunk header at `at` when one can start there: a four-character code of printable
/// ASCII (`fmt `, `LIST`, `_PMX`, …) and room for its size.
fn chunk_header_at<R: Read + Seek>(
    file: &mut R,
    at: u64,
    file_len: u64,
) -> std::io::Result<Option<([u8; 4], u64)>> {
    if at + 8 > file_len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(at))?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head)?;
    let id = [head[0], head[1], head[2], head[3]];
    let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    Ok(id
        .iter()
        .all(|b| (b' '..=b'~').contains(b))
        .then_some((id, size)))
}

/// Where the chunk after an odd-sized one starts (Note [Chunks without their pad byte]):
/// after the pad byte, unless no chunk fits there and one starts right after the body.
/// Returns the position and whether the pad byte was missing.
fn after_odd_chunk<R: Read + Seek>(
    file: &mut R,
    padded: u64,
    file_len: u64,
) -> std::io::Result<(u64, bool)> {
    // A chunk that runs past the end of the file is taken only for `data` (a cut file).
    let fits = |(id, size): ([u8; 4], u64)| &id == b"data" || padded + 8 + size <= file_len;
    if chunk_header_at(file, padded, file_len)?.is_some_and(fits) {
        return Ok((padded, false));
    }
    match chunk_header_at(file, padded - 1, file_len)? {
        Some(_) => Ok((padded - 1, true)),
        None => Ok((padded, false)),
    }
}

fn data_of(
    name: &str,
    format: &WaveFormat,
    start: u64,
    declared: u64,
    file_len: u64,
    reading: Reading,
) -> Result<WavData, String> {
    if is_mpeg(format) {
        // An MPEG stream is read to its data chunk's end or the file's, whichever is first.
        let len = declared.min(file_len.saturating_sub(start));
        return Ok(WavData::Mpeg { start, len });
    }
    let Some(codec) = codec_of(format) else {
        return Err(format!(
            "{name} with format tag 0x{:04x} and {}-bit samples is not read natively",
            format.tag, format.bits
        ));
    };
    let channels = channels_of(format).ok_or_else(|| format!("{name} declares no channels"))?;
    if format.sample_rate == 0 {
        return Err(format!("{name} declares a sample rate of 0"));
    }
    let payload = Payload::pcm(
        codec,
        format.sample_rate,
        channels,
        u32::from(format.bits),
        start,
        Some(declared),
    );
    Ok(WavData::Pcm(payload, reading))
}

fn is_mpeg(format: &WaveFormat) -> bool {
    matches!(format.tag, WAVE_FORMAT_MPEG | WAVE_FORMAT_MPEGLAYER3)
}

/// The codec of the samples this module decodes (through symphonia's PCM codecs).
fn codec_of(format: &WaveFormat) -> Option<AudioCodecId> {
    Some(match (format.tag, format.bits) {
        (WAVE_FORMAT_PCM, 8) => CODEC_ID_PCM_U8,
        (WAVE_FORMAT_PCM, 16) => CODEC_ID_PCM_S16LE,
        (WAVE_FORMAT_PCM, 24) => CODEC_ID_PCM_S24LE,
        (WAVE_FORMAT_PCM, 32) => CODEC_ID_PCM_S32LE,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => CODEC_ID_PCM_F32LE,
        (WAVE_FORMAT_IEEE_FLOAT, 64) => CODEC_ID_PCM_F64LE,
        (WAVE_FORMAT_ALAW, 8) => CODEC_ID_PCM_ALAW,
        (WAVE_FORMAT_MULAW, 8) => CODEC_ID_PCM_MULAW,
        _ => return None,
    })
}

/// The speaker mask when it names as many speakers as there are channels, else WAV order.
fn channels_of(format: &WaveFormat) -> Option<Channels> {
    let from_mask = format
        .channel_mask
        .filter(|m| m.count_ones() == u32::from(format.channels) && *m != 0)
        .and_then(Position::from_wave_channel_mask)
        .map(Channels::Positioned);
    from_mask.or_else(|| channels_for(format.channels))
}

/// `WAVEFORMATEX`, and for `WAVE_FORMAT_EXTENSIBLE` the sub-format's tag (the first two
/// bytes of its GUID) and the speaker mask.
fn wave_format(fields: &[u8]) -> Result<WaveFormat, String> {
    let u16_at = |at: usize| u16::from_le_bytes([fields[at], fields[at + 1]]);
    let mut format = WaveFormat {
        tag: u16_at(0),
        channels: u16_at(2),
        sample_rate: u32::from_le_bytes([fields[4], fields[5], fields[6], fields[7]]),
        bits: u16_at(14),
        channel_mask: None,
    };
    if format.tag == WAVE_FORMAT_EXTENSIBLE && fields.len() >= 40 {
        format.channel_mask = Some(u32::from_le_bytes([
            fields[20], fields[21], fields[22], fields[23],
        ]));
        format.tag = u16_at(24);
    }
    Ok(format)
}

/// The first `min(size, 64 KiB)` bytes of a chunk body, which must hold at least `need`.
fn read_body<R: Read>(file: &mut R, size: u32, need: usize) -> std::io::Result<Vec<u8>> {
    let len = (size as usize).min(64 * 1024);
    if len < need {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a chunk of {size} bytes, shorter than its {need} fields"),
        ));
    }
    let mut body = vec![0u8; len];
    file.read_exact(&mut body)?;
    Ok(body)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = id.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        f.extend_from_slice(&block.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn rf64(format: &[u8], data: &[u8]) -> Vec<u8> {
        let mut ds64 = Vec::new();
        ds64.extend_from_slice(&0u64.to_le_bytes());
        ds64.extend_from_slice(&(data.len() as u64).to_le_bytes());
        ds64.extend_from_slice(&0u64.to_le_bytes());
        ds64.extend_from_slice(&0u32.to_le_bytes());
        let mut f = b"RF64\xff\xff\xff\xffWAVE".to_vec();
        f.extend(chunk(b"ds64", &ds64));
        f.extend(chunk(b"JUNK", &[0; 7]));
        f.extend(chunk(b"fmt ", format));
        f.extend_from_slice(b"data\xff\xff\xff\xff");
        f.extend_from_slice(data);
        f
    }

    fn parsed(bytes: &[u8], rf64: bool) -> Result<Option<WavData>, String> {
        parse(&mut Cursor::new(bytes), bytes.len() as u64, rf64)
    }

    #[test]
    fn rf64_sizes_come_from_ds64() {
        let file = rf64(&fmt(1, 2, 48000, 24), &[0; 600]);
        let Ok(Some(WavData::Pcm(p, _))) = parsed(&file, true) else {
            panic!("not PCM")
        };
        assert_eq!(
            (p.codec, p.sample_rate, p.bits_per_sample),
            (CODEC_ID_PCM_S24LE, 48000, Some(24))
        );
        assert_eq!(
            (p.start, p.declared_len),
            (file.len() as u64 - 600, Some(600))
        );
        assert_eq!(p.channels.count(), 2);
    }

    #[test]
    fn rf64_codecs_and_refusals() {
        let float = rf64(&fmt(3, 1, 8000, 32), &[0; 8]);
        assert!(
            matches!(parsed(&float, true), Ok(Some(WavData::Pcm(p, _))) if p.codec == CODEC_ID_PCM_F32LE)
        );
        let mulaw = rf64(&fmt(7, 1, 8000, 8), &[0; 8]);
        assert!(
            matches!(parsed(&mulaw, true), Ok(Some(WavData::Pcm(p, _))) if p.codec == CODEC_ID_PCM_MULAW)
        );
        let adpcm = rf64(&fmt(2, 1, 8000, 4), &[0; 8]);
        assert!(parsed(&adpcm, true).unwrap_err().contains("0x0002"));
        let mut no_ds64 = b"RF64\xff\xff\xff\xffWAVE".to_vec();
        no_ds64.extend(chunk(b"fmt ", &fmt(1, 1, 8000, 16)));
        no_ds64.extend_from_slice(b"data\xff\xff\xff\xff\0\0");
        assert!(parsed(&no_ds64, true).unwrap_err().contains("ds64"));
        assert!(parsed(b"RF64\xff\xff\xff\xffWAVE", true)
            .unwrap_err()
            .contains("no data"));
    }

    #[test]
    fn riff_wav_is_left_to_symphonia_unless_it_holds_mpeg() {
        let mut pcm = b"RIFF\0\0\0\0WAVE".to_vec();
        pcm.extend(chunk(b"fmt ", &fmt(1, 1, 8000, 16)));
        pcm.extend(chunk(b"data", &[0; 16]));
        assert!(matches!(parsed(&pcm, false), Ok(None)));
        let mut mp3 = b"RIFF\0\0\0\0WAVE".to_vec();
        mp3.extend(chunk(b"fmt ", &fmt(0x55, 1, 8000, 0)));
        mp3.extend(chunk(b"fact", &[0; 4]));
        mp3.extend(chunk(b"data", &[0xff; 100]));
        let start = mp3.len() as u64 - 100;
        mp3.truncate(mp3.len() - 40); // cut short: read to the end of the file
        assert!(
            matches!(parsed(&mp3, false), Ok(Some(WavData::Mpeg { start: s, len: 60 })) if s == start)
        );
    }

    #[test]
    fn a_chunk_missing_its_pad_byte_is_stepped_over() {
        let mut wav = b"RIFF\0\0\0\0WAVE".to_vec();
        wav.extend(chunk(b"fmt ", &fmt(1, 1, 8000, 16)));
        let mut list = chunk(b"LIST", b"INFOISFT\x05\0\0\0tools");
        list.pop(); // the pad byte the writer left out
        assert_eq!(list.len() % 2, 1, "the chunk must be odd-sized");
        wav.extend(list);
        wav.extend(chunk(b"data", &[0; 16]));
        let start = wav.len() as u64 - 16;
        let Ok(Some(WavData::Pcm(p, Reading::Unpadded))) = parsed(&wav, false) else {
            panic!("the data chunk after an unpadded chunk was not found")
        };
        assert_eq!((p.start, p.declared_len), (start, Some(16)));
        // Padded as the rule says: symphonia's, as every finished WAV.
        let mut padded = b"RIFF\0\0\0\0WAVE".to_vec();
        padded.extend(chunk(b"fmt ", &fmt(1, 1, 8000, 16)));
        padded.extend(chunk(b"LIST", b"INFOISFT\x05\0\0\0tools"));
        padded.extend(chunk(b"data", &[0; 16]));
        assert!(matches!(parsed(&padded, false), Ok(None)));
    }

    #[test]
    fn an_unfinished_header_means_data_to_the_end_of_the_file() {
        for size in [0u32, u32::MAX] {
            let mut wav = b"RIFF\0\0\0\0WAVE".to_vec();
            wav.extend(chunk(b"fmt ", &fmt(1, 2, 8000, 16)));
            wav.extend_from_slice(b"data");
            wav.extend_from_slice(&size.to_le_bytes());
            let start = wav.len() as u64;
            wav.extend_from_slice(&[0; 42]); // ten frames and half of one
            let Ok(Some(WavData::Pcm(p, _))) = parsed(&wav, false) else {
                panic!("data size {size:#x}: not read as PCM to the end")
            };
            assert_eq!((p.start, p.declared_len), (start, Some(42)));
        }
        // A data size that was written stays symphonia's, even when the file is shorter.
        let mut cut = b"RIFF\0\0\0\0WAVE".to_vec();
        cut.extend(chunk(b"fmt ", &fmt(1, 1, 8000, 16)));
        cut.extend_from_slice(b"data\x64\0\0\0");
        cut.extend_from_slice(&[0; 10]);
        assert!(matches!(parsed(&cut, false), Ok(None)));
        // Samples not decoded here (ADPCM) go on to symphonia and FFmpeg.
        let mut adpcm = b"RIFF\0\0\0\0WAVE".to_vec();
        adpcm.extend(chunk(b"fmt ", &fmt(2, 1, 8000, 4)));
        adpcm.extend_from_slice(b"data\0\0\0\0");
        adpcm.extend_from_slice(&[0; 10]);
        assert!(matches!(parsed(&adpcm, false), Ok(None)));
        // RF64's own marker of an unfinished recording: a ds64 data size of 0.
        let mut streaming = rf64(&fmt(1, 1, 8000, 16), &[0; 20]);
        let ds64_data = 12 + 8 + 8;
        streaming[ds64_data..ds64_data + 8].fill(0);
        let Ok(Some(WavData::Pcm(p, _))) = parsed(&streaming, true) else {
            panic!("RF64 with a ds64 data size of 0: not PCM")
        };
        assert_eq!(p.declared_len, Some(20));
    }
}
