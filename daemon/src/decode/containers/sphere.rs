//! NIST SPHERE (`.sph`, `.wv1`; TIMIT, WSJ, Switchboard, Fisher): a text header of
//! `name -type value` lines, then interleaved samples. Linear PCM of 1–4 bytes in either
//! byte order, µ-law and A-law are read as blocks; Shorten-compressed linear PCM
//! (`pcm,embedded-shorten-v2.00`) by the Shorten decoder.

use symphonia::core::codecs::audio::well_known::*;
use symphonia::core::codecs::audio::AudioCodecId;

use super::blocks::{channels_for, Payload};

/// Header sizes written in practice are 1024; anything up to this is accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How a SPHERE file's samples are stored.
#[derive(Debug)]
pub(crate) enum Samples {
    Blocks(Payload),
    /// A Shorten stream from `start` (its own header names the sample type and channels).
    Shorten {
        start: u64,
        sample_rate: u32,
        frames: Option<u64>,
    },
}

/// The samples of a SPHERE file whose header is (at least the start of) `head`, and whose
/// length is `file_len`; the error says what is not supported.
pub(crate) fn parse(head: &[u8], file_len: u64) -> Result<Samples, String> {
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next().map(|l| l.trim_ascii_end()) != Some(b"NIST_1A".as_slice()) {
        return Err("not a NIST SPHERE header".into());
    }
    let header_bytes: usize = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse().ok())
        .filter(|n| (16..=MAX_HEADER_BYTES).contains(n))
        .ok_or("NIST SPHERE header size is missing or out of range")?;
    // Cut in bytes before decoding: the header may hold non-UTF-8 bytes.
    let text = String::from_utf8_lossy(&head[..header_bytes.min(head.len())]);
    let mut fields = Fields::default();
    let mut ended = false;
    for line in text.lines().skip(2) {
        let line = line.trim();
        if line == "end_head" {
            ended = true;
            break;
        }
        fields.take(line);
    }
    if !ended {
        return Err("NIST SPHERE header has no end_head".into());
    }
    payload(&fields, header_bytes as u64, file_len)
}

#[derive(Default)]
struct Fields {
    sample_rate: Option<u64>,
    channel_count: Option<u64>,
    sample_n_bytes: Option<u64>,
    sample_count: Option<u64>,
    byte_format: Option<String>,
    coding: Option<String>,
}

impl Fields {
    /// One `name -type value` line; others (comments, unknown fields) are ignored.
    fn take(&mut self, line: &str) {
        let mut parts = line.splitn(3, char::is_whitespace);
        let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let value = value.trim();
        let int = || {
            if kind == "-i" {
                value.parse::<u64>().ok()
            } else {
                // Some writers give numbers as reals ("-r 16000.000000").
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| *v >= 0.0)
                    .map(|v| v as u64)
            }
        };
        match name {
            "sample_rate" => self.sample_rate = int(),
            "channel_count" => self.channel_count = int(),
            "sample_n_bytes" => self.sample_n_bytes = int(),
            "sample_count" => self.sample_count = int(),
            "sample_byte_format" => self.byte_format = Some(value.to_string()),
            "sample_coding" => self.coding = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
}

fn payload(fields: &Fields, start: u64, file_len: u64) -> Result<Samples, String> {
    let coding = fields.coding.as_deref().unwrap_or("pcm");
    if coding.contains("embedded-shorten") {
        let sample_rate = sample_rate(fields)?;
        return Ok(Samples::Shorten {
            start,
            sample_rate,
            frames: fields.sample_count,
        });
    }
    let channels = fields
        .channel_count
        .unwrap_or(1)
        .try_into()
        .ok()
        .and_then(channels_for)
        .ok_or("NIST SPHERE channel_count is 0 or out of range")?;
    let sample_rate = sample_rate(fields)?;
    let (codec, bytes) = match coding {
        "pcm" => {
            let bytes = fields.sample_n_bytes.unwrap_or(2);
            (linear_codec(bytes, fields.byte_format.as_deref())?, bytes)
        }
        "ulaw" | "mu-law" | "u-law" => (CODEC_ID_PCM_MULAW, 1),
        "alaw" | "a-law" => (CODEC_ID_PCM_ALAW, 1),
        other => {
            return Err(format!(
                "NIST SPHERE sample_coding '{other}' is not read natively"
            ))
        }
    };
    let frame_bytes = bytes * channels.count() as u64;
    let available = file_len.saturating_sub(start);
    // The header's count is the length; without one the samples run to the end of the file.
    let declared_len = match fields.sample_count {
        Some(frames) => frames.checked_mul(frame_bytes),
        None => Some(available - available % frame_bytes),
    };
    Ok(Samples::Blocks(Payload::pcm(
        codec,
        sample_rate,
        channels,
        (bytes * 8) as u32,
        start,
        declared_len,
    )))
}

fn sample_rate(fields: &Fields) -> Result<u32, String> {
    fields
        .sample_rate
        .and_then(|r| u32::try_from(r).ok())
        .filter(|r| *r > 0)
        .ok_or_else(|| "NIST SPHERE header has no sample_rate".into())
}

/// Linear PCM of `bytes` per sample. `sample_byte_format` is "01" little-endian, "10"
/// big-endian (and "0123"/"3210" for 4-byte samples); single bytes are signed.
fn linear_codec(bytes: u64, order: Option<&str>) -> Result<AudioCodecId, String> {
    let big = match order {
        None => false,
        Some(o) if o.starts_with('0') || o == "1" => false,
        Some(o) if o.starts_with('1') || o.starts_with('3') => true,
        Some(o) => {
            return Err(format!(
                "NIST SPHERE sample_byte_format '{o}' is not supported"
            ))
        }
    };
    Ok(match (bytes, big) {
        (1, _) => CODEC_ID_PCM_S8,
        (2, false) => CODEC_ID_PCM_S16LE,
        (2, true) => CODEC_ID_PCM_S16BE,
        (3, false) => CODEC_ID_PCM_S24LE,
        (3, true) => CODEC_ID_PCM_S24BE,
        (4, false) => CODEC_ID_PCM_S32LE,
        (4, true) => CODEC_ID_PCM_S32BE,
        _ => {
            return Err(format!(
                "NIST SPHERE sample_n_bytes {bytes} is not supported"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(parsed: Result<Samples, String>) -> Payload {
        match parsed {
            Ok(Samples::Blocks(p)) => p,
            Ok(Samples::Shorten { .. }) => panic!("not blocks"),
            Err(e) => panic!("{e}"),
        }
    }

    fn header(fields: &str) -> Vec<u8> {
        let mut h = format!("NIST_1A\n   1024\n{fields}end_head\n").into_bytes();
        h.resize(1024, b' ');
        h
    }

    #[test]
    fn reads_the_fields_that_locate_and_code_the_samples() {
        let h = header(
            "database_id -s5 TIMIT\nsample_count -i 46797\nsample_rate -i 16000\n\
             channel_count -i 1\nsample_byte_format -s2 01\nsample_n_bytes -i 2\n\
             sample_sig_bits -i 16\n",
        );
        let p = blocks(parse(&h, 1024 + 2 * 46797));
        assert_eq!(p.codec, CODEC_ID_PCM_S16LE);
        assert_eq!(
            (p.sample_rate, p.bits_per_sample, p.start),
            (16000, Some(16), 1024)
        );
        assert_eq!(p.declared_len, Some(2 * 46797));
        assert_eq!(p.channels.count(), 1);
    }

    #[test]
    fn codings_byte_orders_and_channels() {
        let stereo_ulaw = header(
            "sample_rate -i 8000\nchannel_count -i 2\nsample_coding -s4 ulaw\nsample_n_bytes -i 1\n",
        );
        let p = blocks(parse(&stereo_ulaw, 1024 + 800));
        assert_eq!((p.codec, p.channels.count()), (CODEC_ID_PCM_MULAW, 2));
        // No sample_count: to the end of the file, whole frames only.
        assert_eq!(p.declared_len, Some(800));
        let big =
            header("sample_rate -r 16000.0\nsample_n_bytes -i 2\nsample_byte_format -s2 10\n");
        assert_eq!(blocks(parse(&big, 2048)).codec, CODEC_ID_PCM_S16BE);
        let alaw = header("sample_rate -i 8000\nsample_coding -s4 alaw\n");
        assert_eq!(blocks(parse(&alaw, 2048)).codec, CODEC_ID_PCM_ALAW);
    }

    #[test]
    fn shorten_is_recognised_and_what_is_not_read_says_why() {
        let shorten =
            header("sample_rate -i 16000\nsample_coding -s26 pcm,embedded-shorten-v2.00\n");
        assert!(matches!(
            parse(&shorten, 4096),
            Ok(Samples::Shorten {
                start: 1024,
                sample_rate: 16000,
                frames: None
            })
        ));
        let odd = header("sample_rate -i 16000\nsample_coding -s3 adp\n");
        assert!(parse(&odd, 4096).unwrap_err().contains("'adp'"));
        assert!(parse(&header("channel_count -i 1\n"), 4096)
            .unwrap_err()
            .contains("sample_rate"));
        assert!(parse(&header("sample_rate -i 8000\nchannel_count -i 0\n"), 4096).is_err());
        assert!(parse(b"NIST_1A\n   99999999\n", 4096).is_err());
        let mut unterminated = b"NIST_1A\n   1024\nsample_rate -i 8000\n".to_vec();
        unterminated.resize(1024, b' ');
        assert!(parse(&unterminated, 4096).unwrap_err().contains("end_head"));
    }
}
