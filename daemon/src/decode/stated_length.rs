//! Whether the length a file states at its start still covers the whole file.
//!
//! Note [Stated lengths that miss part of the file]: files joined end to end keep the
//! first part's header, and a decoder that trusts it loses every later part without a
//! word. Two kinds, checked when a file is opened (a few small reads, never a scan):
//! - MP3: the Xing/Info tag in the first frame states the stream's frames and bytes, and
//!   symphonia trims the decoded audio to that count (the gapless end). `cat a.mp3 b.mp3`
//!   (chapters, podcast parts, dataset preparation) lost 5 of 8 s of a generated test
//!   file; a tag counting 0 frames lost all of it. The tag is stale when it counts no
//!   frames, or when the file holds more stream bytes than it states (beyond trailing
//!   ID3v1/APEv2 tags and two frames' slack). FFmpeg decodes every frame the file holds.
//! - Ogg: a chained stream (links one after another: `cat a.ogg b.ogg`, internet-radio
//!   dumps) states the first link's length only. Its last page belongs to another logical
//!   stream (serial) than its first.
//!
//! The reader then takes the length as unknown and keeps every frame (an MP3's encoder
//! delay at the start is still removed); `reader.rs` follows each new link of a chain.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Stream bytes past the tag's count that are not yet a sign of another stream: two of
/// the largest MPEG-1 layer III frames, for writers that count a little differently.
const SLACK_BYTES: u64 = 2 * 1441;

/// Bytes searched for the first frame after the ID3v2 tag (symphonia also skips junk).
const SYNC_SEARCH: usize = 16 * 1024;

/// The counts a Xing/Info tag states, each only when its flag is set.
#[derive(Debug, PartialEq, Eq)]
struct XingCounts {
    frames: Option<u32>,
    bytes: Option<u32>,
}

/// True when `path` is an MP3 whose Xing/Info tag states fewer frames or bytes than the
/// file holds. Any file that cannot be read or has no such tag is not stale.
pub(crate) fn stale_xing_count(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let Some(first_frame_at) = first_frame(&mut file) else {
        return false;
    };
    let Some(head) = bytes_at(&mut file, first_frame_at, 512) else {
        return false;
    };
    let Some(counts) = xing_counts(&head) else {
        return false;
    };
    if counts.frames == Some(0) {
        return true;
    }
    let Some(stated) = counts.bytes else {
        return false;
    };
    let held = len
        .saturating_sub(first_frame_at)
        .saturating_sub(trailing_tags(&mut file, len));
    held > u64::from(stated) + SLACK_BYTES
}

/// Bytes at the end of an Ogg file searched for its last page: more than the largest page
/// (27 + 255 + 255 × 255 bytes), so the last page starts within them.
const LAST_PAGE_SEARCH: u64 = 66 * 1024;

/// True when the Ogg file at `path` ends with a page of another logical stream than the
/// one it starts with: a chain of links (or, for a file of several multiplexed streams, a
/// harmless "length unknown").
pub(crate) fn chained_ogg(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut first = [0u8; 27];
    if file.read_exact(&mut first).is_err() || &first[..4] != b"OggS" {
        return false;
    }
    let Some(tail) = bytes_at(
        &mut file,
        len.saturating_sub(LAST_PAGE_SEARCH),
        LAST_PAGE_SEARCH,
    ) else {
        return false;
    };
    last_page_serial(&tail).is_some_and(|serial| serial != &first[14..18])
}

/// The serial of the page that ends exactly where `tail` ends (a capture pattern inside
/// packet data does not: its "page" would end elsewhere).
fn last_page_serial(tail: &[u8]) -> Option<&[u8]> {
    (0..tail.len().saturating_sub(27)).rev().find_map(|at| {
        let page = &tail[at..];
        if &page[..4] != b"OggS" || page[4] != 0 {
            return None;
        }
        let segments = usize::from(page[26]);
        let table = page.get(27..27 + segments)?;
        let body: usize = table.iter().map(|&b| usize::from(b)).sum();
        (27 + segments + body == page.len()).then(|| &page[14..18])
    })
}

/// Where the first frame starts: after an ID3v2 tag, at the first frame sync.
fn first_frame(file: &mut std::fs::File) -> Option<u64> {
    let mut id3 = [0u8; 10];
    file.read_exact(&mut id3).ok()?;
    let mut at = 0u64;
    if &id3[..3] == b"ID3" {
        let size = id3[6..10]
            .iter()
            .fold(0u64, |acc, &b| (acc << 7) | u64::from(b & 0x7f));
        let footer = if id3[5] & 0x10 != 0 { 10 } else { 0 };
        at = 10 + size + footer;
    }
    let window = bytes_at(file, at, SYNC_SEARCH as u64)?;
    let sync = window
        .windows(2)
        .position(|w| w[0] == 0xff && w[1] & 0xe0 == 0xe0)?;
    Some(at + sync as u64)
}

/// The Xing/Info tag of a layer III frame starting at `frame[0]`, where its side
/// information ends.
fn xing_counts(frame: &[u8]) -> Option<XingCounts> {
    let header = frame.get(..4)?;
    let version = (header[1] >> 3) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let layer = (header[1] >> 1) & 3; // 1: layer III
    if layer != 1 || version == 1 {
        return None;
    }
    let mono = (header[3] >> 6) & 3 == 3;
    let side_info = match (version == 3, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    let tag = 4 + side_info;
    let id = frame.get(tag..tag + 4)?;
    if id != b"Xing" && id != b"Info" {
        return None;
    }
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
    };
    let flags = be(tag + 4)?;
    let mut at = tag + 8;
    let mut field = |flag: u32| -> Option<Option<u32>> {
        if flags & flag == 0 {
            return Some(None);
        }
        let value = be(at)?;
        at += 4;
        Some(Some(value))
    };
    let frames = field(1)?;
    let bytes = field(2)?;
    Some(XingCounts { frames, bytes })
}

/// Bytes of ID3v1 and APEv2 tags at the end of the file.
fn trailing_tags(file: &mut std::fs::File, len: u64) -> u64 {
    let mut end = len;
    let mut tail = [0u8; 3];
    if len >= 128
        && file.seek(SeekFrom::Start(len - 128)).is_ok()
        && file.read_exact(&mut tail).is_ok()
        && &tail == b"TAG"
    {
        end -= 128;
    }
    let mut footer = [0u8; 32];
    if end >= 32
        && file.seek(SeekFrom::Start(end - 32)).is_ok()
        && file.read_exact(&mut footer).is_ok()
        && &footer[..8] == b"APETAGEX"
    {
        let size = u64::from(u32::from_le_bytes([
            footer[12], footer[13], footer[14], footer[15],
        ]));
        let has_header = footer[23] & 0x80 != 0;
        end = end.saturating_sub(size + if has_header { 32 } else { 0 });
    }
    len - end
}

/// Up to `len` bytes of the file from `at` (fewer where it ends).
fn bytes_at(file: &mut std::fs::File, at: u64, len: u64) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(at)).ok()?;
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of an MPEG-1 layer III stereo frame with a Xing tag.
    fn frame_with_tag(flags: u32, frames: u32, bytes: u32) -> Vec<u8> {
        let mut f = vec![0xff, 0xfb, 0x90, 0x00];
        f.extend_from_slice(&[0; 32]);
        f.extend_from_slice(b"Xing");
        f.extend_from_slice(&flags.to_be_bytes());
        if flags & 1 != 0 {
            f.extend_from_slice(&frames.to_be_bytes());
        }
        if flags & 2 != 0 {
            f.extend_from_slice(&bytes.to_be_bytes());
        }
        f
    }

    #[test]
    fn tag_counts_are_read_where_the_side_information_ends() {
        assert_eq!(
            xing_counts(&frame_with_tag(3, 86, 5148)),
            Some(XingCounts {
                frames: Some(86),
                bytes: Some(5148)
            })
        );
        assert_eq!(
            xing_counts(&frame_with_tag(2, 0, 700)),
            Some(XingCounts {
                frames: None,
                bytes: Some(700)
            })
        );
        // Mono MPEG-1: 17 bytes of side information.
        let mut mono = vec![0xff, 0xfb, 0x90, 0xc0];
        mono.extend_from_slice(&[0; 17]);
        mono.extend_from_slice(b"Info\0\0\0\x01\0\0\0\x07");
        assert_eq!(xing_counts(&mono).and_then(|c| c.frames), Some(7));
        // Layer II has no such tag.
        assert_eq!(xing_counts(&[0xff, 0xfd, 0x90, 0x00, 0, 0]), None);
    }

    /// An Ogg page of `serial` holding `body` (one segment table entry per 255 bytes).
    fn ogg_page(serial: u32, body: &[u8]) -> Vec<u8> {
        let mut lacing = vec![255u8; body.len() / 255];
        lacing.push((body.len() % 255) as u8);
        let mut page = b"OggS\0\0".to_vec();
        page.extend_from_slice(&[0; 8]); // granule position
        page.extend_from_slice(&serial.to_le_bytes());
        page.extend_from_slice(&[0; 8]); // sequence number, CRC
        page.push(lacing.len() as u8);
        page.extend(lacing);
        page.extend_from_slice(body);
        page
    }

    #[test]
    fn the_last_page_is_the_one_that_ends_the_file() {
        let mut body = vec![7u8; 600];
        body[100..105].copy_from_slice(b"OggS\0"); // a capture pattern inside the data
        body[114..118].copy_from_slice(&9u32.to_le_bytes());
        let mut tail = ogg_page(1, &[1; 300]);
        tail.extend(ogg_page(2, &body));
        assert_eq!(last_page_serial(&tail), Some(&2u32.to_le_bytes()[..]));
        assert_eq!(
            last_page_serial(&tail[..tail.len() - 1]),
            None,
            "a cut page"
        );
    }

    #[test]
    fn a_file_longer_than_its_tag_states_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let mut whole = frame_with_tag(3, 10, 4000);
        whole.resize(4000, 0);
        assert!(!stale_xing_count(&write("whole.mp3", &whole)));
        let mut tagged = whole.clone();
        tagged.extend_from_slice(&[0x55; 5000]);
        let mut ape = b"APETAGEX".to_vec();
        ape.extend_from_slice(&2000u32.to_le_bytes());
        ape.extend_from_slice(&5000u32.to_le_bytes()); // the items and this footer
        ape.extend_from_slice(&[0; 16]); // items, flags (no header), reserved
        tagged[4000 + 5000 - 32..].copy_from_slice(&ape);
        let mut id3v1 = b"TAG".to_vec();
        id3v1.resize(128, 0);
        tagged.extend_from_slice(&id3v1);
        assert!(!stale_xing_count(&write("tagged.mp3", &tagged)));
        let mut joined = whole.clone();
        joined.extend_from_slice(&whole);
        assert!(stale_xing_count(&write("joined.mp3", &joined)));
        let mut counted_none = frame_with_tag(3, 0, 4000);
        counted_none.resize(4000, 0);
        assert!(stale_xing_count(&write("zero.mp3", &counted_none)));
        let mut id3v2 = b"ID3\x04\0\0\0\0\x01\0".to_vec(); // 128 bytes of frames
        id3v2.resize(138, 0);
        id3v2.extend_from_slice(&joined);
        assert!(stale_xing_count(&write("id3v2.mp3", &id3v2)));
    }
}
