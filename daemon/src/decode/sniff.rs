//! Names a file's format from its first bytes, for error messages about formats symphonia
//! has no reader or decoder for ("Monkey's Audio (APE)", "WAV with format tag 0x0161
//! (WMA)"), so that a user without FFmpeg learns what the file is and what would read it.

use std::io::Read;
use std::path::Path;

/// Bytes looked at; a WAV's `fmt ` chunk or an AIFC's `COMM` chunk is near the start.
const HEAD_BYTES: u64 = 4096;

/// What the file looks like, when its first bytes say.
pub(crate) fn describe(path: &Path) -> Option<String> {
    describe_bytes(&head_of(path)?)
}

/// The format, when the first bytes name one symphonia has no reader for. Such a file
/// goes straight to FFmpeg: symphonia's probe scans past unknown bytes for a signature it
/// knows, and finds one inside a WavPack, APE or TAK file (their embedded RIFF header),
/// which it then decodes as PCM: noise, not an error.
pub(crate) fn foreign_format(path: &Path) -> Option<&'static str> {
    foreign_magic(&head_of(path)?).filter(|name| !READ_NATIVELY.contains(name))
}

/// Formats symphonia has no reader for that `decode::containers` reads; what those readers
/// refuse still reaches FFmpeg, as an unsupported file.
const READ_NATIVELY: &[&str] = &[NIST_SPHERE, RF64];
const NIST_SPHERE: &str = "NIST SPHERE";
const RF64: &str = "RF64/BW64 WAV";

/// The name of a format symphonia has no reader for, from the first bytes.
fn foreign_magic(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if (at(0, b"RF64") || at(0, b"BW64")) && at(8, b"WAVE") {
        return Some(RF64);
    }
    MAGIC
        .iter()
        .find(|(offset, magic, _)| at(*offset, magic))
        .map(|(_, _, name)| *name)
}

fn head_of(path: &Path) -> Option<Vec<u8>> {
    let file = crate::sys::open_regular_file(path).ok()?;
    let mut head = Vec::new();
    file.take(HEAD_BYTES).read_to_end(&mut head).ok()?;
    Some(head)
}

/// Signatures (offset, bytes, name) of formats symphonia has no reader for.
const MAGIC: &[(usize, &[u8], &str)] = &[
    (0, b"NIST_1A", NIST_SPHERE),
    (0, b"MAC ", "Monkey's Audio (APE)"),
    (0, b"wvpk", "WavPack"),
    (0, b"TTA1", "TTA"),
    (0, b"tBaK", "TAK"),
    (0, b"MPCK", "Musepack"),
    (0, b"MP+", "Musepack"),
    (0, b"ajkg", "Shorten"),
    // Neither symphonia nor FFmpeg reads it; symphonia's probe found MPEG sync words in
    // mutagen's and atldotnet's samples and "decoded" them (damaged noise).
    (0, b"OFR ", "OptimFROG"),
    (0, b"DSD ", "DSF (DSD)"),
    (0, b"FRM8", "DSDIFF (DSD)"),
    (0, b"#!AMR", "AMR"),
    (0, b".snd", "Sun/NeXT AU"),
    (0, b"Creative Voice File", "Creative VOC"),
    (
        0,
        &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11],
        "ASF (WMA)",
    ),
    (0, &[0x0B, 0x77], "AC-3/E-AC-3"),
    (28, b"Speex   ", "Speex in Ogg"),
];

fn describe_bytes(head: &[u8]) -> Option<String> {
    if let Some(name) = foreign_magic(head) {
        return Some(name.to_string());
    }
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("Matroska/WebM".into());
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return wav_format(head)
            .map(|tag| format!("WAV with format tag 0x{tag:04x}{}", tag_name(tag)));
    }
    if at(0, b"FORM") && at(8, b"AIFC") {
        return aifc_compression(head).map(|c| format!("AIFC with '{c}' compression"));
    }
    if at(4, b"ftyp") {
        let brand = head.get(8..12).map(String::from_utf8_lossy)?;
        return Some(format!("MP4 family (brand '{}')", brand.trim()));
    }
    if at(0, b"ID3") {
        let inner = head.get(id3_length(head)?..)?;
        return describe_bytes(inner)
            .or_else(|| inner.starts_with(b"fLaC").then(|| "FLAC".into()))
            .map(|f| format!("{f} behind an ID3 tag"));
    }
    None
}

/// The format tag of a RIFF/WAVE file's `fmt ` chunk.
fn wav_format(head: &[u8]) -> Option<u16> {
    let body = find_chunk(head, 12, b"fmt ", u32::from_le_bytes)?;
    Some(u16::from_le_bytes(body.get(0..2)?.try_into().ok()?))
}

/// The compression type of an AIFC file's `COMM` chunk (after channels, frames, sample
/// size and the 80-bit rate).
fn aifc_compression(head: &[u8]) -> Option<String> {
    let body = find_chunk(head, 12, b"COMM", u32::from_be_bytes)?;
    Some(String::from_utf8_lossy(body.get(18..22)?).into_owned())
}

/// The body of the first chunk named `id` at or after `offset`, in a RIFF/IFF chunk list
/// whose sizes `size` decodes (little-endian for RIFF, big-endian for IFF).
fn find_chunk<'a>(
    head: &'a [u8],
    mut offset: usize,
    id: &[u8; 4],
    size: fn([u8; 4]) -> u32,
) -> Option<&'a [u8]> {
    loop {
        let len = size(head.get(offset + 4..offset + 8)?.try_into().ok()?) as usize;
        let body_start = offset + 8;
        if head.get(offset..offset + 4)? == id {
            return head.get(body_start..(body_start + len).min(head.len()));
        }
        offset = body_start.checked_add(len)?.checked_add(len & 1)?;
    }
}

/// Length of an ID3v2 tag (header, syncsafe size, optional footer).
fn id3_length(head: &[u8]) -> Option<usize> {
    let b = head.get(6..10)?;
    let size = b
        .iter()
        .fold(0usize, |acc, &x| (acc << 7) | usize::from(x & 0x7F));
    let footer = if head.get(5)? & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

fn tag_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => " (MS ADPCM)",
        0x0006 => " (A-law)",
        0x0007 => " (µ-law)",
        0x0011 => " (IMA ADPCM)",
        0x0031 => " (GSM 6.10)",
        0x0050 => " (MPEG audio)",
        0x0055 => " (MP3)",
        0x0160..=0x0162 => " (WMA)",
        0x0163 => " (WMA Lossless)",
        0x2000 => " (AC-3)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_with_tag(tag: u16) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVE".to_vec();
        v.extend_from_slice(b"LIST\x04\0\0\0abcd"); // a chunk before `fmt ` is skipped
        v.extend_from_slice(b"fmt \x10\0\0\0");
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&[0; 14]);
        v
    }

    #[test]
    fn names_wav_payloads_and_magic_numbers() {
        assert_eq!(
            describe_bytes(&wav_with_tag(0x55)).as_deref(),
            Some("WAV with format tag 0x0055 (MP3)")
        );
        assert_eq!(
            describe_bytes(b"MAC \x96\x0f").as_deref(),
            Some("Monkey's Audio (APE)")
        );
        assert_eq!(
            describe_bytes(b"NIST_1A\n   1024\n").as_deref(),
            Some("NIST SPHERE")
        );
        assert_eq!(
            foreign_magic(b"OFR \x0f\0\0\0\xff\xfb\x90\x64"),
            Some("OptimFROG")
        );
        assert_eq!(describe_bytes(b"plain text"), None);
    }

    #[test]
    fn looks_behind_an_id3_tag_and_into_aifc() {
        let mut id3 = b"ID3\x04\x00\x00\x00\x00\x00\x02xy".to_vec();
        id3.extend_from_slice(b"fLaC\0\0\0\x22");
        assert_eq!(
            describe_bytes(&id3).as_deref(),
            Some("FLAC behind an ID3 tag")
        );
        let mut aifc = b"FORM\0\0\0\0AIFC".to_vec();
        aifc.extend_from_slice(b"COMM\0\0\0\x18");
        aifc.extend_from_slice(&[0; 18]);
        aifc.extend_from_slice(b"ima4");
        assert_eq!(
            describe_bytes(&aifc).as_deref(),
            Some("AIFC with 'ima4' compression")
        );
        assert_eq!(
            describe_bytes(b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\x7f"),
            None
        );
    }
}
