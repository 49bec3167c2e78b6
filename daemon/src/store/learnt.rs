//! Indexes of remote tar shards learnt by fetching them, kept on local disk for later
//! streams (Note [Learnt shard indexes]): one JSON file per shard URL, in the sidecar's
//! format plus the URL and version it was learnt from, in a directory bounded in bytes
//! (least recently used out first).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use crate::store::Stamp;

/// Where learnt indexes are kept; set empty, none are.
pub const INDEX_CACHE_ENV: &str = "AUDIODECODE_INDEX_CACHE";

/// Bytes the directory may hold: about 20 million members' entries. Past it, the least
/// recently used indexes go (a shard whose index went is fetched again when next streamed).
const MAX_BYTES: u64 = 1 << 30;

/// The directory, `None` when turned off.
fn dir() -> Option<PathBuf> {
    match std::env::var_os(INDEX_CACHE_ENV) {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(
            crate::pypackages::user_cache_dir()
                .join("audiodecode")
                .join("shard-indexes"),
        ),
    }
}

/// The file that keeps the learnt index of `shard`: its URL's hash (the file also names the
/// URL, so a collision is a miss, never another shard's index).
pub(super) fn path_of(shard: &str) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    shard.hash(&mut hasher);
    Some(dir()?.join(format!("{:016x}.idx", hasher.finish())))
}

/// The index learnt for this version of `shard` (JSON, as a sidecar), if one was kept; a hit
/// counts as a use for the bound.
pub(super) fn read(shard: &str, stamp: Stamp) -> Option<serde_json::Value> {
    let path = path_of(shard)?;
    let parsed: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let same = parsed["format"] == super::tar::SIDECAR_FORMAT
        && parsed["shard"] == shard
        && parsed["size"].as_u64() == Some(stamp.size)
        && parsed["tag"].as_u64() == Some(stamp.tag);
    if !same {
        return None;
    }
    if let Ok(file) = std::fs::File::options().append(true).open(&path) {
        let _ = file.set_modified(SystemTime::now());
    }
    Some(parsed)
}

/// Drops the learnt index of `shard`.
pub(super) fn forget(shard: &str) {
    if let Some(path) = path_of(shard) {
        let _ = std::fs::remove_file(path);
    }
}

/// Keeps `index` (JSON, as a sidecar) as learnt from this version of `shard`; a failure to
/// write it is only logged (the next stream fetches the shard again).
pub(super) fn keep(shard: &str, stamp: Stamp, mut index: serde_json::Value) {
    let Some(path) = path_of(shard) else {
        return;
    };
    index["shard"] = shard.into();
    index["tag"] = stamp.tag.into();
    let text = index.to_string();
    // A reader never sees half an index.
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            crate::sys::write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))
        });
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                account(dir, text.len() as u64, MAX_BYTES);
            }
        }
        Err(e) => {
            log::warn!(
                "{shard}: cannot keep its index in {} ({e}); later streams fetch it again",
                path.display()
            );
        }
    }
}

/// Counts `written` bytes into the directory's total (learnt by one listing per process),
/// and when it passes `max_bytes` removes the least recently used indexes down to half of it.
fn account(dir: &Path, written: u64, max_bytes: u64) {
    static TOTAL: OnceLock<Mutex<Option<(PathBuf, u64)>>> = OnceLock::new();
    let mut total = TOTAL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let known = match &*total {
        Some((counted, bytes)) if counted == dir => bytes + written,
        _ => listed(dir).iter().map(|(_, bytes, _)| bytes).sum(),
    };
    let left = if known > max_bytes {
        trim(dir, max_bytes / 2)
    } else {
        known
    };
    *total = Some((dir.to_path_buf(), left));
}

/// The indexes in `dir`: path, bytes and last use.
fn listed(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "idx"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()?))
        })
        .collect()
}

/// Removes the least recently used indexes of `dir` until at most `keep_bytes` are left;
/// the bytes left.
fn trim(dir: &Path, keep_bytes: u64) -> u64 {
    let mut indexes = listed(dir);
    indexes.sort_by_key(|&(_, _, used)| std::cmp::Reverse(used));
    let mut kept = 0;
    for (path, bytes, _) in indexes {
        if kept + bytes <= keep_bytes {
            kept += bytes;
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_indexes_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(format!("{name}.idx"));
        let day = std::time::Duration::from_secs(86_400);
        for (k, name) in ["old", "middle", "new"].iter().enumerate() {
            std::fs::write(at(name), vec![b'x'; 100]).unwrap();
            let used = SystemTime::now() - day * (3 - k as u32);
            let file = std::fs::File::options()
                .append(true)
                .open(at(name))
                .unwrap();
            file.set_modified(used).unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), vec![b'x'; 1000]).unwrap();
        assert_eq!(listed(dir.path()).len(), 3, "only indexes are counted");
        assert_eq!(trim(dir.path(), 250), 200);
        assert!(!at("old").exists() && at("middle").exists() && at("new").exists());
        assert!(dir.path().join("other.txt").exists());
    }
}
