//! Gzip-compressed tar shards (`.tar.gz`, `.tgz`), inflated whole into a copy the object
//! cache holds.
//!
//! Note [Compressed shards]: gzip has no index, so no member of a compressed tar can be
//! reached at an offset. A compressed shard, local or remote, is inflated once into a copy
//! the object cache keeps (a memory file, or the `--object-cache` directory) under the
//! cache's one byte bound, and read there as a plain tar: its index is built from the copy
//! and its members read from it. Sidecars and ranged reads do not apply, so the first
//! stream over them opens only after its compressed shards are fetched and inflated (one at
//! a time: what is held stays within the bound plus the one shard being inflated); the
//! indexes it learns are kept (Note [Learnt shard indexes]), so a later stream — a restarted
//! daemon, a resumed job — opens at once and inflates a shard when it first reads it. A copy
//! evicted before its samples are read is inflated again (the shard fetched again): the
//! cache should hold the shards an epoch reads at once. A shard that inflates to more than
//! the bound is an error naming the bound, never unbounded memory or disk (a gzip bomb).
//! Tars compressed otherwise (bzip2, xz, zstd) are refused by the client.

use std::io::Write;
use std::path::Path;

use crate::store::{LocalCopy, Stamp, StoreError};

/// Names of gzip-compressed tar shards.
pub const COMPRESSED_SUFFIXES: [&str; 2] = [".tar.gz", ".tgz"];

/// Whether `shard` names a gzip-compressed tar (by its name; a URL's query is not part of
/// it).
pub fn is_compressed(shard: &str) -> bool {
    let name = match crate::store::has_query(shard) {
        true => shard.split(['?', '#']).next().unwrap_or(shard),
        false => shard,
    };
    let name = name.to_ascii_lowercase();
    COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The inflated copy of the compressed shard `shard` and the shard's version: the copy held
/// when it is of version `expected` (any held version when `None`: a stream checked its
/// shards when it opened), else one inflated now.
pub fn inflated_copy(
    shard: &str,
    expected: Option<Stamp>,
) -> Result<(LocalCopy, Stamp), StoreError> {
    let key = format!("inflated:{shard}");
    let (body, stamp) = crate::store::cache::objects()
        .derived(&key, expected, |sink, most| inflate(shard, sink, most))?;
    Ok((LocalCopy::of(shard, body)?, stamp))
}

/// Inflates `shard` into `sink`, at most `most` bytes; the shard's version. One shard is
/// inflated at a time: each may take the cache's whole bound before the cache counts it, so
/// eight at once (a stream indexing its shards) could hold eight times the bound.
fn inflate(shard: &str, sink: &mut dyn Write, most: u64) -> Result<Stamp, StoreError> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut inflater = Inflater {
        gzip: flate2::write::MultiGzDecoder::new(Bounded {
            inner: sink,
            left: most,
            over: false,
        }),
        damage: None,
    };
    let read = match crate::store::url_of(Path::new(shard)) {
        Some(url) => crate::store::stream(url, &mut inflater),
        None => inflate_local(shard, &mut inflater),
    };
    let finished = inflater.gzip.try_finish();
    let invalid = |reason: String| StoreError::Invalid {
        url: shard.to_string(),
        reason,
    };
    if inflater.gzip.get_ref().over {
        return Err(invalid(format!(
            "inflates to more than the {:.1} MB the object cache may hold (compressed shards \
             are read from an inflated copy; --object-cache DIR and --object-cache-bytes \
             raise the bound, or store the shard as a plain .tar)",
            most as f64 / 1e6
        )));
    }
    if let Some(damage) = inflater.damage {
        return Err(invalid(format!("not a readable gzip stream: {damage}")));
    }
    let stamp = read?;
    finished.map_err(|e| invalid(format!("the gzip stream is cut short ({e})")))?;
    Ok(stamp)
}

fn inflate_local(shard: &str, inflater: &mut Inflater<'_>) -> Result<Stamp, StoreError> {
    let local = |e: std::io::Error| StoreError::Local {
        url: shard.to_string(),
        reason: e.to_string(),
    };
    let mut file = crate::sys::open_regular_file(Path::new(shard)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                url: shard.to_string(),
            }
        } else {
            local(e)
        }
    })?;
    let stamp = crate::store::tar::file_stamp(&file.metadata().map_err(local)?);
    std::io::copy(&mut file, inflater).map_err(local)?;
    Ok(stamp)
}

/// The gzip decoder, keeping the first reason it refused the bytes (the write error the
/// fetch reports names the sink, not the damage).
struct Inflater<'a> {
    gzip: flate2::write::MultiGzDecoder<Bounded<'a>>,
    damage: Option<String>,
}

impl Write for Inflater<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.gzip.write(bytes).inspect_err(|e| {
            if !self.gzip.get_ref().over && self.damage.is_none() {
                self.damage = Some(e.to_string());
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.gzip.flush()
    }
}

/// A sink that takes at most `left` more bytes, and remembers being asked for more.
struct Bounded<'a> {
    inner: &'a mut dyn Write,
    left: u64,
    over: bool,
}

impl Write for Bounded<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() as u64 > self.left {
            self.over = true;
            return Err(std::io::Error::other("the inflated shard is too large"));
        }
        let n = self.inner.write(bytes)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_names_are_told_by_their_suffix() {
        assert!(is_compressed("/d/s-000.tar.gz"));
        assert!(is_compressed("s3://b/S-000.TGZ"));
        assert!(!is_compressed("/d/s-000.tar"));
        assert!(!is_compressed("/d/s-000.gz"));
    }

    fn inflated(bytes: &[u8], most: u64) -> (Result<Stamp, StoreError>, Vec<u8>) {
        let file = tempfile::Builder::new()
            .suffix(".tar.gz")
            .tempfile()
            .unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let mut out = Vec::new();
        let result = inflate(&file.path().to_string_lossy(), &mut out, most);
        (result, out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn members_concatenated_inflate_to_their_concatenation() {
        let mut both = gzip(b"first ");
        both.extend(gzip(b"second"));
        let (result, out) = inflated(&both, 1 << 20);
        assert!(result.is_ok());
        assert_eq!(out, b"first second");
    }

    #[test]
    fn damage_truncation_and_bombs_are_errors_that_say_which() {
        let data = vec![7u8; 100_000];
        let whole = gzip(&data);
        let cut = inflated(&whole[..whole.len() / 2], 1 << 20).0.unwrap_err();
        assert!(cut.to_string().contains("cut short"), "{cut}");
        let bomb = inflated(&whole, 50_000).0.unwrap_err();
        assert!(bomb.to_string().contains("inflates to more than"), "{bomb}");
        let mut garbled = whole.clone();
        garbled[20..40].fill(0xff);
        let damaged = inflated(&garbled, 1 << 20).0.unwrap_err();
        assert!(damaged.to_string().contains("gzip"), "{damaged}");
        let not_gzip = inflated(b"plain tar bytes, not gzip", 1 << 20)
            .0
            .unwrap_err();
        assert!(
            not_gzip.to_string().contains("not a readable gzip stream"),
            "{not_gzip}"
        );
    }
}
