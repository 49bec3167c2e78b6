//! MP4 edit lists and iTunes gapless tags, for gapless AAC.
//!
//! AAC encoders prepend priming samples (1024 or 2112) and pad the last frame; MP4 records
//! the playable range in the audio track's edit list (`moov/trak/edts/elst`), and iTunes
//! (and encoders imitating it) in an `iTunSMPB` tag (`moov/udta/meta/ilst/----`) instead.
//! symphonia's MP4 reader ignores both, so this module reads them to trim the same frames
//! FFmpeg trims.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The playable range of the first audio track, in its sample-rate units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AudioEdit {
    /// Frames to drop at the start (encoder priming).
    pub skip: u64,
    /// Playable frames after `skip`, when the edit states a duration.
    pub frames: Option<u64>,
}

const MAX_DEPTH: usize = 6;

struct BoxHeader {
    kind: [u8; 4],
    /// Offset of the payload and the end of the box in the file.
    body: u64,
    end: u64,
}

fn read_header(f: &mut File, at: u64, limit: u64) -> Option<BoxHeader> {
    if at + 8 > limit {
        return None;
    }
    f.seek(SeekFrom::Start(at)).ok()?;
    let mut h = [0u8; 8];
    f.read_exact(&mut h).ok()?;
    let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let kind = [h[4], h[5], h[6], h[7]];
    let (size, body) = match size32 {
        0 => (limit - at, at + 8),
        1 => {
            let mut l = [0u8; 8];
            f.read_exact(&mut l).ok()?;
            (u64::from_be_bytes(l), at + 16)
        }
        n => (u64::from(n), at + 8),
    };
    let end = at.checked_add(size)?;
    (size >= body - at && end <= limit).then_some(BoxHeader { kind, body, end })
}

fn children(f: &mut File, start: u64, end: u64) -> Vec<BoxHeader> {
    let mut out = Vec::new();
    let mut at = start;
    while let Some(h) = read_header(f, at, end) {
        at = h.end;
        out.push(h);
    }
    out
}

fn read_body(f: &mut File, h: &BoxHeader, max: u64) -> Option<Vec<u8>> {
    let len = (h.end - h.body).min(max);
    f.seek(SeekFrom::Start(h.body)).ok()?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Timescale field of an `mvhd` or `mdhd` box (same layout for both).
fn timescale(body: &[u8]) -> Option<u64> {
    let at = if body.first()? == &1 { 20 } else { 12 };
    be_u32(body, at).map(u64::from).filter(|&t| t > 0)
}

/// Find a child box path like `[b"mdia", b"hdlr"]` under `parent`.
fn find(f: &mut File, parent: &BoxHeader, path: &[&[u8; 4]], depth: usize) -> Option<BoxHeader> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (first, rest) = path.split_first()?;
    let child = children(f, parent.body, parent.end)
        .into_iter()
        .find(|c| &c.kind == *first)?;
    if rest.is_empty() {
        Some(child)
    } else {
        find(f, &child, rest, depth + 1)
    }
}

/// Read the edit of the first audio track. `None` when the file has no usable edit list
/// (then nothing is trimmed, as before).
pub(crate) fn audio_edit(path: &Path) -> Option<AudioEdit> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let moov = children(&mut f, 0, len)
        .into_iter()
        .find(|b| &b.kind == b"moov")?;
    let mvhd = find(&mut f, &moov, &[b"mvhd"], 0)?;
    let movie_scale = timescale(&read_body(&mut f, &mvhd, 32)?)?;
    for trak in children(&mut f, moov.body, moov.end) {
        if &trak.kind != b"trak" {
            continue;
        }
        let Some(hdlr) = find(&mut f, &trak, &[b"mdia", b"hdlr"], 0) else {
            continue;
        };
        let handler = read_body(&mut f, &hdlr, 12)?;
        if handler.get(8..12) != Some(b"soun") {
            continue;
        }
        let mdhd = find(&mut f, &trak, &[b"mdia", b"mdhd"], 0)?;
        let media_scale = timescale(&read_body(&mut f, &mdhd, 32)?)?;
        let edit = find(&mut f, &trak, &[b"edts", b"elst"], 0)
            .and_then(|elst| read_body(&mut f, &elst, 1 << 16))
            .and_then(|body| parse_elst(&body, movie_scale, media_scale));
        // An edit list that skips nothing defers to the iTunes tag, as in FFmpeg. The
        // tag counts frames; AAC tracks use the sample rate as their timescale.
        let edit = match edit {
            Some(e) if e.skip > 0 => Some(e),
            edit => itunes_gapless(&mut f, &moov).or(edit),
        };
        // A fragmented file (`mvex`) carries audio in `moof` fragments after the edit
        // list was written; its duration covers only the `moov` part (a 3GP file read
        // 1.3 s short), so only the skip is kept, as FFmpeg does.
        let fragmented = find(&mut f, &moov, &[b"mvex"], 0).is_some();
        return edit.map(|e| AudioEdit {
            frames: e.frames.filter(|_| !fragmented),
            ..e
        });
    }
    None
}

/// The `iTunSMPB` tag: " 00000000 <delay> <padding> <frames> ..." in hexadecimal.
fn itunes_gapless(f: &mut File, moov: &BoxHeader) -> Option<AudioEdit> {
    let of_kind = |f: &mut File, parent: &BoxHeader, skip: u64, kind: &[u8; 4]| {
        children(f, parent.body + skip, parent.end)
            .into_iter()
            .filter(|c| &c.kind == kind)
            .collect::<Vec<_>>()
    };
    // A file may hold several `udta` boxes (an encoder's, a tagger's); ISO `meta` is a full
    // box (4 bytes of version and flags before its children), QuickTime's is not.
    for udta in of_kind(f, moov, 0, b"udta") {
        for meta in of_kind(f, &udta, 0, b"meta") {
            for skip in [4, 0] {
                for ilst in of_kind(f, &meta, skip, b"ilst") {
                    if let Some(edit) = smpb_in_ilst(f, &ilst) {
                        return Some(edit);
                    }
                }
            }
        }
    }
    None
}

fn smpb_in_ilst(f: &mut File, ilst: &BoxHeader) -> Option<AudioEdit> {
    for item in children(f, ilst.body, ilst.end) {
        if &item.kind != b"----" {
            continue;
        }
        let parts = children(f, item.body, item.end);
        let named = parts.iter().find(|p| &p.kind == b"name").and_then(|name| {
            // Version and flags, then the name.
            read_body(f, name, 64).map(|b| b.get(4..) == Some(&b"iTunSMPB"[..]))
        });
        if named != Some(true) {
            continue;
        }
        let data = parts.iter().find(|p| &p.kind == b"data")?;
        // Type and locale, then the text.
        let body = read_body(f, data, 512)?;
        return parse_smpb(body.get(8..)?);
    }
    None
}

fn parse_smpb(text: &[u8]) -> Option<AudioEdit> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text
        .split_whitespace()
        .map(|h| u64::from_str_radix(h, 16).ok());
    let (_, delay, _padding, frames) = (
        fields.next()??,
        fields.next()??,
        fields.next()??,
        fields.next()??,
    );
    (delay > 0 || frames > 0).then_some(AudioEdit {
        skip: delay,
        frames: (frames > 0).then_some(frames),
    })
}

/// The first edit that maps media (media_time >= 0) gives the skip and playable length;
/// leading empty edits (media_time -1) only delay presentation and are ignored.
fn parse_elst(body: &[u8], movie_scale: u64, media_scale: u64) -> Option<AudioEdit> {
    let version = *body.first()?;
    let count = be_u32(body, 4)? as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    (0..count.min(64)).find_map(|i| {
        let at = 8 + i * entry_len;
        let (duration, media_time) = if version == 1 {
            (be_u64(body, at)?, be_u64(body, at + 8)? as i64)
        } else {
            (
                u64::from(be_u32(body, at)?),
                i64::from(be_u32(body, at + 4)? as i32),
            )
        };
        (media_time >= 0).then(|| AudioEdit {
            skip: media_time as u64,
            frames: (duration > 0).then(|| {
                (u128::from(duration) * u128::from(media_scale) / u128::from(movie_scale)) as u64
            }),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_media_edit_wins_over_empty_edits() {
        let mut body = vec![0u8, 0, 0, 0, 0, 0, 0, 2];
        // An empty edit (media_time -1), then 44100 frames at movie scale 1000 from 1024.
        body.extend_from_slice(&500u32.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        body.extend_from_slice(&1000u32.to_be_bytes());
        body.extend_from_slice(&1024i32.to_be_bytes());
        body.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        assert_eq!(
            parse_elst(&body, 1000, 44100),
            Some(AudioEdit {
                skip: 1024,
                frames: Some(44100)
            })
        );
    }

    #[test]
    fn itunes_gapless_tag() {
        let tag = b" 00000000 00000840 000001CC 0000000000046E00 00000000 00000000";
        assert_eq!(
            parse_smpb(tag),
            Some(AudioEdit {
                skip: 2112,
                frames: Some(0x46E00)
            })
        );
        assert_eq!(parse_smpb(b" 00000000 zz"), None);
    }

    #[test]
    fn truncated_list_is_ignored() {
        assert_eq!(
            parse_elst(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 1000, 44100),
            None
        );
    }
}
