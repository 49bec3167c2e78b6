//! AIFC with Apple IMA4 ADPCM (`ima4`), which symphonia's AIFF reader refuses although its
//! ADPCM decoder reads IMA4 (it does for CAF). Every packet holds 64 frames of one channel
//! in 34 bytes and starts from its own header, so packets decode independently and a seek
//! lands on any packet. Other AIFC compression types are left to symphonia.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::audio::well_known::CODEC_ID_ADPCM_IMA_QT;

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
    sample_rate: u32,
    compression: [u8; 4],
}

/// The IMA4 payload of an AIFC file (`FORM….AIFC`); `Ok(None)` for other compression types.
pub(crate) fn parse<R: Read + Seek>(
    file: &mut R,
    file_len: u64,
) -> Result<Option<Payload>, String> {
    let io = |e: std::io::Error| format!("AIFC header: {e}");
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
                let mut fields = [0u8; 22];
                if size < 22 {
                    return Err("AIFC COMM chunk is too short".into());
                }
                file.read_exact(&mut fields).map_err(io)?;
                let parsed = common_of(&fields)?;
                if &parsed.compression != b"ima4" {
                    return Ok(None);
                }
                common = Some(parsed);
            }
            b"SSND" => {
                let common = common.ok_or("AIFC has no COMM chunk before its SSND")?;
                let mut fields = [0u8; 8];
                file.read_exact(&mut fields).map_err(io)?;
                let offset = u64::from(u32::from_be_bytes([
                    fields[0], fields[1], fields[2], fields[3],
                ]));
                let start = body + 8 + offset;
                let held = size
                    .saturating_sub(8 + offset)
                    .min(file_len.saturating_sub(start));
                return ima4(&common, start, held).map(Some);
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
        Some(_) => Err("AIFC has no SSND chunk".into()),
        None => Ok(None),
    }
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

fn common_of(f: &[u8; 22]) -> Result<Common, String> {
    let rate =
        extended_to_u32(&f[8..18]).ok_or("AIFC sample rate is not a positive integer rate")?;
    Ok(Common {
        channels: u16::from_be_bytes([f[0], f[1]]),
        frames: u32::from_be_bytes([f[2], f[3], f[4], f[5]]),
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
        parse(&mut Cursor::new(bytes), bytes.len() as u64)
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
    fn other_compressions_are_left_to_symphonia() {
        assert!(parsed(&aifc(b"sowt", 1, 4, &[0; 8])).unwrap().is_none());
        assert!(parsed(&aifc(b"NONE", 1, 4, &[0; 8])).unwrap().is_none());
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
