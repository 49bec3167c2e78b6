//! Containers symphonia has no reader for but whose payload it decodes: NIST SPHERE,
//! RF64/BW64, WAV wrapping an MPEG audio stream, WAV whose header was never finished or
//! whose chunks are not padded, AIFF whose header was never finished, and AIFC with IMA4
//! ADPCM. Detected by content before symphonia's probe; each becomes a symphonia
//! `FormatReader`, so everything downstream (seeking, slicing, lenient truncation, parallel
//! segments) is the same as for any WAV or MP3. What
//! these parsers refuse (shorten-compressed SPHERE, ADPCM in RF64) is `Unsupported`, which
//! goes on to the FFmpeg fallback. See Note [FFmpeg fallback].

mod aifc;
mod blocks;
mod riff;
mod shorten;
mod sphere;
mod window;

use std::io::Read;
use std::path::Path;

use symphonia::core::codecs::audio::well_known::CODEC_ID_ADPCM_IMA_QT;
use symphonia::core::formats::probe::ProbeableFormat;
use symphonia::core::formats::{FormatId, FormatInfo, FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::default::formats::MpaReader;

use crate::error::{DecodeError, Result};

use blocks::BlockReader;
pub(crate) use blocks::Payload;
use riff::{Reading, WavData};
use shorten::ShortenReader;
use window::Window;

const SPHERE_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"NIST")),
    short_name: "sphere",
    long_name: "NIST SPHERE",
};

/// Not seekable: see [`is_unseekable`].
const SHORTEN_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"ajkg")),
    short_name: "sphere-shorten",
    long_name: "NIST SPHERE with embedded Shorten",
};

/// Containers whose reader decodes from the start to reach an offset: parallel segments
/// would each decode the file from its start.
pub(crate) fn is_unseekable(container: &str) -> bool {
    container == SHORTEN_INFO.short_name
}

const AIFC_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"AIFC")),
    short_name: "aifc",
    long_name: "AIFC (IMA4 ADPCM)",
};

const RF64_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"RF64")),
    short_name: "rf64",
    long_name: "RF64/BW64 Waveform Audio",
};

/// A RIFF WAV read to the end of the file: Note [Unfinished WAV headers].
const UNFINISHED_WAV_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"WAVE")),
    short_name: "wave",
    long_name: "Waveform Audio (data size not stated: to the end of the file)",
};

/// A PCM AIFF/AIFC read to the end of the file: Note [Unfinished WAV headers].
const UNFINISHED_AIFF_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"AIFF")),
    short_name: "aiff",
    long_name: "AIFF (data size not stated: to the end of the file)",
};

/// A RIFF WAV with an odd chunk missing its pad byte: Note [Chunks without their pad byte].
const UNPADDED_WAV_INFO: FormatInfo = FormatInfo {
    format: FormatId::new(symphonia::core::common::FourCc::new(*b"WAVE")),
    short_name: "wave",
    long_name: "Waveform Audio (a chunk without its pad byte)",
};

/// A reader for `path` when its first bytes name one of these containers; `Ok(None)` for
/// every other file (symphonia's probe takes it).
pub(crate) fn open(path: &Path) -> Result<Option<Box<dyn FormatReader>>> {
    let mut file = crate::sys::open_regular_file(path).map_err(|e| DecodeError::open(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| DecodeError::open(path, e))?
        .len();
    let mut magic = [0u8; 12];
    if file.read_exact(&mut magic).is_err() {
        return Ok(None);
    }
    let at = |offset: usize, tag: &[u8]| magic.get(offset..offset + tag.len()) == Some(tag);
    let unsupported = |reason: String| DecodeError::Unsupported {
        path: path.into(),
        reason,
    };
    let reader = if at(0, b"NIST_1A") {
        let mut head = magic.to_vec();
        (&mut file)
            .take(sphere::MAX_HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| DecodeError::open(path, e))?;
        match sphere::parse(&head, file_len).map_err(unsupported)? {
            sphere::Samples::Blocks(payload) => blocks(file, SPHERE_INFO, payload),
            sphere::Samples::Shorten {
                start,
                sample_rate,
                frames,
            } => {
                let source = stream(Box::new(file));
                let reader = ShortenReader::new(source, SHORTEN_INFO, start, sample_rate, frames)
                    .map_err(unsupported)?;
                Ok(Box::new(reader) as Box<dyn FormatReader>)
            }
        }
    } else if at(0, b"FORM") && (at(8, b"AIFC") || at(8, b"AIFF")) {
        let aiff = at(8, b"AIFF");
        let parsed = aifc::parse(&mut file, file_len, aiff);
        // A plain AIFF this walk finds odd is symphonia's to judge, as a RIFF WAV is.
        let parsed = if aiff {
            parsed.unwrap_or(None)
        } else {
            parsed.map_err(unsupported)?
        };
        match parsed {
            None => return Ok(None),
            Some(payload) if payload.codec == CODEC_ID_ADPCM_IMA_QT => {
                blocks(file, AIFC_INFO, payload)
            }
            Some(payload) => blocks(file, UNFINISHED_AIFF_INFO, payload),
        }
    } else if at(8, b"WAVE") && (at(0, b"RIFF") || at(0, b"RF64") || at(0, b"BW64")) {
        let rf64 = !at(0, b"RIFF");
        let parsed = riff::parse(&mut file, file_len, rf64);
        // A RIFF WAV this walk finds odd is symphonia's to judge (and lenient about).
        let parsed = if rf64 {
            parsed.map_err(unsupported)?
        } else {
            parsed.unwrap_or(None)
        };
        match parsed {
            None => return Ok(None),
            Some(WavData::Pcm(payload, reading)) => {
                let info = match reading {
                    _ if rf64 => RF64_INFO,
                    Reading::Unpadded => UNPADDED_WAV_INFO,
                    Reading::Unfinished | Reading::Located => UNFINISHED_WAV_INFO,
                };
                blocks(file, info, payload)
            }
            Some(WavData::Mpeg { start, len }) => {
                let window =
                    Window::new(file, start, len).map_err(|e| DecodeError::open(path, e))?;
                MpaReader::try_probe_new(stream(Box::new(window)), FormatOptions::default())
            }
        }
    } else {
        return Ok(None);
    };
    reader.map(Some).map_err(|e| DecodeError::Corrupt {
        path: path.into(),
        at_seconds: 0.0,
        reason: e.to_string(),
    })
}

/// Where the samples of a file of fixed-size blocks lie — WAV (RIFF, RF64, BW64) with PCM,
/// float, µ-law or A-law samples, SPHERE with uncompressed samples, AIFC with IMA4 — read
/// from the file's first bytes `head` (of `file_len`), so that the part of a remote file a
/// request reads can be fetched alone (Note [Ranged reads of remote files]). `None` for any
/// other file, and for a header that does not end within `head`.
pub(crate) fn block_layout(head: &[u8], file_len: u64) -> Option<Payload> {
    let at = |offset: usize, tag: &[u8]| head.get(offset..offset + tag.len()) == Some(tag);
    let mut cursor = std::io::Cursor::new(head);
    if at(0, b"NIST_1A") {
        match sphere::parse(head, file_len).ok()? {
            sphere::Samples::Blocks(payload) => Some(payload),
            sphere::Samples::Shorten { .. } => None,
        }
    } else if at(0, b"FORM") && at(8, b"AIFC") {
        aifc::parse(&mut cursor, file_len, false).ok()?
    } else if at(8, b"WAVE") && (at(0, b"RIFF") || at(0, b"RF64") || at(0, b"BW64")) {
        match riff::layout(&mut cursor, file_len, !at(0, b"RIFF")).ok()? {
            WavData::Pcm(payload, _) => Some(payload),
            WavData::Mpeg { .. } => None,
        }
    } else {
        None
    }
}

fn blocks(
    file: std::fs::File,
    info: FormatInfo,
    payload: blocks::Payload,
) -> symphonia::core::errors::Result<Box<dyn FormatReader>> {
    BlockReader::new(stream(Box::new(file)), info, payload)
        .map(|r| Box::new(r) as Box<dyn FormatReader>)
}

fn stream(source: Box<dyn symphonia::core::io::MediaSource>) -> MediaSourceStream<'static> {
    MediaSourceStream::new(
        source,
        MediaSourceStreamOptions {
            buffer_len: 256 * 1024,
        },
    )
}
