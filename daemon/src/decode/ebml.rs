//! Whether a Matroska/WebM file ends where its last element ends.
//!
//! Note [Live WebM ends]: a writer that cannot seek back — a browser's `MediaRecorder`, a
//! live encoder, `ffmpeg ... -f webm -` — leaves the segment's and the clusters' sizes
//! "unknown", so the file's end is the only end there is. symphonia's reader meets it as
//! an unexpected end of file, which made every such recording "truncated": refused by
//! strict decoding and by the HTTP service (which turns damage into a 400) although
//! nothing was missing. The reader asks this walk when that happens: every element's
//! header and data lie within the file and the last one ends exactly at its end (a clean
//! end), or one runs past it (the file was cut: truncated, as before).

use std::io::{BufReader, Read};
use std::path::Path;

const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;

/// Elements walked at most (a long recording has one block per 20 ms frame).
const MAX_ELEMENTS: usize = 50_000_000;

/// True when every element of the file lies within it and the last one ends at its end.
pub(crate) fn ends_cleanly(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut file = BufReader::with_capacity(64 * 1024, file);
    let mut at = 0u64;
    for _ in 0..MAX_ELEMENTS {
        if at == len {
            return true;
        }
        let Some((id, id_len)) = vint(&mut file, true) else {
            return false;
        };
        let Some((size, size_len)) = vint(&mut file, false) else {
            return false;
        };
        let size = (size != all_ones(size_len)).then_some(size);
        at += u64::from(id_len) + u64::from(size_len);
        // The segment and its clusters are walked into (their sizes may be unknown);
        // every other element is stepped over whole.
        if id == u64::from(SEGMENT) || id == u64::from(CLUSTER) {
            continue;
        }
        let Some(size) = size else {
            return false; // only the segment and clusters may leave their size open
        };
        let Some(end) = at.checked_add(size).filter(|&end| end <= len) else {
            return false;
        };
        let Ok(step) = i64::try_from(size) else {
            return false;
        };
        if file.seek_relative(step).is_err() {
            return false;
        }
        at = end;
    }
    false
}

/// An EBML variable-length integer and its length in bytes: an element ID with its length
/// marker kept (`keep_marker`), or a size without it. `None` when the file ends within it.
fn vint<R: Read>(reader: &mut R, keep_marker: bool) -> Option<(u64, u32)> {
    let mut first = [0u8; 1];
    reader.read_exact(&mut first).ok()?;
    let len = first[0].leading_zeros() + 1;
    if len > 8 {
        return None;
    }
    let mut value = u64::from(first[0]);
    if !keep_marker {
        value &= (1u64 << (8 - len)) - 1;
    }
    let mut rest = [0u8; 7];
    let rest = &mut rest[..len as usize - 1];
    reader.read_exact(rest).ok()?;
    for &b in rest.iter() {
        value = (value << 8) | u64::from(b);
    }
    Some((value, len))
}

/// The size a `len`-byte size field holds when it means "unknown": every value bit set.
fn all_ones(len: u32) -> u64 {
    (1u64 << (7 * len)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(id: &[u8], size: &[u8], body: &[u8]) -> Vec<u8> {
        [id, size, body].concat()
    }

    fn ends_cleanly_bytes(bytes: &[u8]) -> bool {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        ends_cleanly(file.path())
    }

    #[test]
    fn a_live_file_ends_cleanly_unless_cut_inside_an_element() {
        let header = element(
            &[0x1A, 0x45, 0xDF, 0xA3],
            &[0x84],
            &[0x42, 0x86, 0x81, 0x01],
        );
        let unknown = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let block = element(&[0xA3], &[0x85], &[0x81, 0, 0, 0x80, 0xAA]);
        let mut live = header.clone();
        live.extend_from_slice(&[0x18, 0x53, 0x80, 0x67]);
        live.extend_from_slice(&unknown);
        for _ in 0..3 {
            live.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0xFF]); // cluster, size unknown
            live.extend(element(&[0xE7], &[0x81], &[0]));
            live.extend_from_slice(&block);
            live.extend_from_slice(&block);
        }
        assert!(ends_cleanly_bytes(&live));
        assert!(
            !ends_cleanly_bytes(&live[..live.len() - 2]),
            "cut in a block"
        );
        assert!(
            !ends_cleanly_bytes(&live[..live.len() - block.len() + 1]),
            "cut in a header"
        );
        assert!(
            ends_cleanly_bytes(&live[..live.len() - block.len()]),
            "cut between blocks"
        );
        // A known size running past the end is a cut file.
        let mut stated = header;
        stated.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x88]);
        stated.extend(element(&[0xEC], &[0x90], &[0; 4]));
        assert!(!ends_cleanly_bytes(&stated));
    }
}
