//! AIFF and AIFC files symphonia's AIFF reader refuses or misreads: AIFC with Apple IMA4
//! ADPCM (`ima4`), which it refuses although its ADPCM decoder reads IMA4 (it does for CAF),
//! and PCM AIFF/AIFC whose header was never finished (Note [Unfinished WAV headers]: FFmpeg
//! writing AIFF to a pipe leaves the `SSND` size and `COMM` frame count 0, and cannot read
//! the file back; sox can). For IMA4 every packet holds 64 frames of one channel in 34
//! bytes and starts from its own header, so packets decode independently and a seek lands
//! on any packet. Everything else is left to symphonia.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::AudioCodecId;

use super::blocks::{channels_for, Payload};

const IMA4_PACKET_BYTES: u64 = 34;
const IMA4_PACKET_FRAMES: u64 = 64;
/// Chunks walked before giving up on finding `COMM` and `SSND`.
const MAX_CHUNKS: usize = 4096;

/// The fields of `COMM` that matter here.
struct Common {
    channels: u16,
    /// For IMA4, counted in packets per channel.
    frames: u32,
    bits: u16,
    sample_rate: u32,
    /// `NONE` for a plain AIFF.
    compression: [u8; 4],
}

/// The samples of an AIFC file, or of a plain AIFF (`aiff`: the form type is `AIFF`, whose
/// `COMM` names no compression), that are read here; `Ok(None)` for every other file.
pub(crate) fn parse<R: Read + Seek>(
    file: &mut R,
    file_len: u64,
    aiff: bool,
) -> Result<Option<Payload>, String> {
    let name = if aiff { "AIFF" } else { "AIFC" };
    let io = |e: std::io::Error| format!("{name} header: {e}");
    file.seek(SeekFrom::Start(12)).map_err(io)?;
    let mut common = None;
    for _ in 0..MAX_CHUNKS {
        let mut head = [0u8; 8];
        if file.read_exact(&mut head).is_err() {
            break;
        }
        let size = u64::from(u32::from_be_bytes([head[4], head[5], head[6], head[7]]));
        let body = file.stream_position().map_err(io)?;
        match &head[..4] {
            b"COMM" => {
                let need = if aiff { 18 } else { 22 };
                if size < need {
                    return Err(format!("{name} COMM chunk is too short"));
                }
                let mut fields = [0u8; 22];
                fields[18..].copy_from_slice(b"NONE");
                file.read_exact(&mut fields[..need as usize]).map_err(io)?;
                let parsed = common_of(&fields, name)?;
                if &parsed.compression != b"ima4" && pcm_codec(&parsed).is_none() {
                    return Ok(None);
                }
                common = Some(parsed);
            }
            b"SSND" => {
                let common = common.ok_or(format!("{name} has no COMM chunk before its SSND"))?;
                let mut fields = [0u8; 8];
                file.read_exact(&mut fields).map_err(io)?;
                let offset = u64::from(u32::from_be_bytes([
                    fields[0], fields[1], fields[2], fields[3],
                ]));
                let start = body + 8 + offset;
                let rest = file_len.saturating_sub(start);
                if &common.compression == b"ima4" {
                    let held = size.saturating_sub(8 + offset).min(rest);
                    return ima4(&common, start, held).map(Some);
                }
                // A size or count never written back: the samples run to the end of the file.
                let size_unstated = size == 0 || size == u64::from(u32::MAX);
                if !(size_unstated || common.frames == 0) || rest == 0 {
                    return Ok(None);
                }
                let held = if size_unstated {
                    rest
                } else {
                    size.saturating_sub(8 + offset).min(rest)
                };
                return unfinished_pcm(&common, start, held, name).map(Some);
            }
            _ => {}
        }
        let next = body + size + (size & 1);
        if next >= file_len {
            break;
        }
        file.seek(SeekFrom::Start(next)).map_err(io)?;
    }
    match common {
        Some(_) if !aiff => Err(format!("{name} has no SSND chunk")),
        _ => Ok(None),
    }
}

/// The PCM codec of an AIFF/AIFC `COMM`, as symphonia names it.
fn pcm_codec(common: &Common) -> Option<AudioCodecId> {
    Some(match (&common.compression, common.bits) {
        (b"NONE" | b"twos", 8) | (b"sowt", 8) => CODEC_ID_PCM_S8,
        (b"NONE" | b"twos", 16) => CODEC_ID_PCM_S16BE,
        (b"NONE" | b"twos", 24) | (b"in24", _) => CODEC_ID_PCM_S24BE,
        (b"NONE" | b"twos", 32) | (b"in32", _) => CODEC_ID_PCM_S32BE,
        (b"sowt", 16) => CODEC_ID_PCM_S16LE,
        (b"sowt", 24) => CODEC_ID_PCM_S24LE,
        (b"sowt", 32) => CODEC_ID_PCM_S32LE,
        (b"raw ", 8) => CODEC_ID_PCM_U8,
        (b"fl32" | b"FL32", _) => CODEC_ID_PCM_F32BE,
        (b"fl64" | b"FL64", _) => CODEC_ID_PCM_F64BE,
        (b"ulaw" | b"ULAW", _) => CODEC_ID_PCM_MULAW,
        (b"alaw" | b"ALAW", _) => CODEC_ID_PCM_ALAW,
        _ => return None,
    })
}

fn unfinished_pcm(common: &Common, start: u64, held: u64, name: &str) -> Result<Payload, String> {
    let codec = pcm_codec(common).ok_or(format!("{name} samples are not PCM"))?;
    let channels = channels_for(common.channels).ok_or(format!("{name} declares no channels"))?;
    if common.sample_rate == 0 {
        return Err(format!("{name} declares a sample rate of 0"));
    }
    let bits = match codec {
        CODEC_ID_PCM_S24BE | CODEC_ID_PCM_S24LE => 24,
        CODEC_ID_PCM_S32BE | CODEC_ID_PCM_S32LE | CODEC_ID_PCM_F32BE => 32,
        CODEC_ID_PCM_F64BE => 64,
        CODEC_ID_PCM_S16BE | CODEC_ID_PCM_S16LE => 16,
        _ => 8,
    };
    Ok(Payload::pcm(
        codec,
        common.sample_rate,
        channels,
        bits,
        start,
        Some(held),
    ))
}

fn ima4(common: &Common, start: u64, held: u64) -> Result<Payload, String> {
    let channels = channels_for(common.channels).ok_or("AIFC declares no channels")?;
    if common.sample_rate == 0 {
        return Err("AIFC declares a sample rate of 0".into());
    }
    let block_bytes = IMA4_PACKET_BYTES * u64::from(common.channels);
    // COMM counts packets; a writer that left it 0 is read to the end of SSND.
    let declared_len = match u64::from(common.frames) {
        0 => held - held % block_bytes,
        packets => packets * block_bytes,
    };
    Ok(Payload {
        codec: CODEC_ID_ADPCM_IMA_QT,
        sample_rate: common.sample_rate,
        channels,
        bits_per_sample: None,
        block_bytes,
        frames_per_block: IMA4_PACKET_FRAMES,
        start,
        declared_len: Some(declared_len),
    })
}

fn common_of(f: &[u8; 22], name: &str) -> Result<Common, String> {
    let rate = extended_to_u32(&f[8..18])
        .ok_or(format!("{name} sample rate is not a positive integer rate"))?;
    Ok(Common {
        channels: u16::from_be_bytes([f[0], f[1]]),
        frames: u32::from_be_bytes([f[2], f[3], f[4], f[5]]),
        bits: u16::from_be_bytes([f[6], f[7]]),
        sample_rate: rate,
        compression: [f[18], f[19], f[20], f[21]],
    })
}

/// An 80-bit IEEE 754 extended float (AIFF's sample rate), truncated to an integer as
/// FFmpeg does; `None` when negative, zero, or past `u32`.
fn extended_to_u32(b: &[u8]) -> Option<u32> {
    let sign_exp = u16::from_be_bytes([b[0], b[1]]);
    let mut m = [0u8; 8];
    m.copy_from_slice(&b[2..10]);
    let mantissa = u64::from_be_bytes(m);
    if sign_exp & 0x8000 != 0 || mantissa == 0 {
        return None;
    }
    // value = mantissa · 2^(exp − 16383 − 63)
    let shift = i32::from(sign_exp & 0x7FFF) - 16383 - 63;
    let value = if shift >= 0 {
        return None;
    } else if shift <= -64 {
        0
    } else {
        mantissa >> (-shift)
    };
    u32::try_from(value).ok().filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn extended(rate: u32) -> [u8; 10] {
        let bits = 31 - rate.leading_zeros();
        let exp = (16383 + bits) as u16;
        let mantissa = u64::from(rate) << (63 - bits);
        let mut out = [0u8; 10];
        out[..2].copy_from_slice(&exp.to_be_bytes());
        out[2..].copy_from_slice(&mantissa.to_be_bytes());
        out
    }

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = id.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_be_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn aifc(compression: &[u8; 4], channels: u16, packets: u32, data: &[u8]) -> Vec<u8> {
        let mut comm = channels.to_be_bytes().to_vec();
        comm.extend_from_slice(&packets.to_be_bytes());
        comm.extend_from_slice(&16u16.to_be_bytes());
        comm.extend_from_slice(&extended(22050));
        comm.extend_from_slice(compression);
        comm.extend_from_slice(b"\x00\x00");
        let mut ssnd = vec![0u8; 8];
        ssnd.extend_from_slice(data);
        let mut f = b"FORM\0\0\0\0AIFC".to_vec();
        f.extend(chunk(b"FVER", &[0xA2, 0x80, 0x51, 0x40]));
        f.extend(chunk(b"COMM", &comm));
        f.extend(chunk(b"SSND", &ssnd));
        f
    }

    fn parsed(bytes: &[u8]) -> Result<Option<Payload>, String> {
        parse(&mut Cursor::new(bytes), bytes.len() as u64, false)
    }

    /// A plain AIFF as FFmpeg writes one to a pipe: FORM, COMM frames and SSND sizes 0.
    fn piped_aiff(channels: u16, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut comm = channels.to_be_bytes().to_vec();
        comm.extend_from_slice(&0u32.to_be_bytes());
        comm.extend_from_slice(&bits.to_be_bytes());
        comm.extend_from_slice(&extended(16000));
        let mut f = b"FORM\0\0\0\0AIFF".to_vec();
        f.extend(chunk(b"COMM", &comm));
        f.extend_from_slice(b"SSND\0\0\0\0");
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn ima4_packets_are_located_and_counted() {
        let file = aifc(b"ima4", 2, 3, &[0; 3 * 68]);
        let p = parsed(&file).unwrap().unwrap();
        assert_eq!((p.codec, p.sample_rate), (CODEC_ID_ADPCM_IMA_QT, 22050));
        assert_eq!((p.block_bytes, p.frames_per_block), (68, 64));
        assert_eq!(
            (p.start, p.declared_len),
            (file.len() as u64 - 204, Some(204))
        );
        // A COMM count of 0: the packets SSND holds.
        let zero = aifc(b"ima4", 1, 0, &[0; 34 * 5 + 7]);
        assert_eq!(parsed(&zero).unwrap().unwrap().declared_len, Some(170));
    }

    #[test]
    fn finished_pcm_and_other_compressions_are_left_to_symphonia() {
        assert!(parsed(&aifc(b"sowt", 1, 4, &[0; 8])).unwrap().is_none());
        assert!(parsed(&aifc(b"NONE", 1, 4, &[0; 8])).unwrap().is_none());
        assert!(parsed(&aifc(b"MAC3", 1, 0, &[0; 8])).unwrap().is_none());
    }

    #[test]
    fn pcm_whose_header_was_never_finished_runs_to_the_end_of_the_file() {
        let file = piped_aiff(2, 16, &[0; 4 * 10 + 2]);
        let p = parse(&mut Cursor::new(&file), file.len() as u64, true)
            .unwrap()
            .unwrap();
        assert_eq!((p.codec, p.sample_rate), (CODEC_ID_PCM_S16BE, 16000));
        assert_eq!((p.block_bytes, p.channels.count()), (4, 2));
        assert_eq!(
            (p.start, p.declared_len),
            (file.len() as u64 - 42, Some(42))
        );
        // AIFC: the compression type picks the codec.
        let sowt = aifc(b"sowt", 1, 0, &[0; 8]);
        assert_eq!(parsed(&sowt).unwrap().unwrap().codec, CODEC_ID_PCM_S16LE);
        // Nothing after the header: nothing to read here (symphonia says it is empty).
        let empty = piped_aiff(1, 16, &[]);
        assert!(parse(&mut Cursor::new(&empty), empty.len() as u64, true)
            .unwrap()
            .is_none());
    }

    #[test]
    fn extended_rates() {
        for rate in [8000, 11025, 22050, 44100, 48000, 96000] {
            assert_eq!(extended_to_u32(&extended(rate)), Some(rate));
        }
        assert_eq!(extended_to_u32(&[0; 10]), None);
        assert_eq!(
            extended_to_u32(&[0x7F, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
