//! A byte-bounded LRU cache of clean decoded audio (decoded, downmixed and resampled, but
//! not cropped or augmented), shared by every stream of the daemon.
//!
//! Entries are keyed by (path, rate, channel mode, quality) and remember the file's size and
//! modification time: a file that changed on disk is a miss (and its stale entry is
//! dropped), never a stale hit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::decode::resample::Quality;
use crate::decode::ChannelMode;
use crate::decode::DecodedAudio;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub path: PathBuf,
    pub sample_rate: u32,
    pub mode: ChannelMode,
    pub quality: Quality,
    /// A lenient decode of a damaged file holds audio a strict one refuses: a strict
    /// stream must not be served the lenient stream's entry.
    pub lenient: bool,
}

/// What identifies the file's content without reading it: size and modification time, or
/// for a remote object its size and ETag's hash (`tag`, 0 for files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub tag: u64,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<Self> {
        // A shard's member: the version of the shard its stream checked when it opened (not
        // the member path taken for a URL: a HEAD of the shard per item, failing or not).
        if let Some((shard, _)) = path.to_str().and_then(crate::store::tar::split_member) {
            return crate::store::tar::trusted_stamp(shard).map(|stamp| Self {
                size: stamp.size,
                modified: None,
                tag: stamp.tag,
            });
        }
        if let Some(url) = crate::store::url_of(path) {
            let stamp = crate::store::stamp(url).ok()?;
            return Some(Self {
                size: stamp.size,
                modified: None,
                tag: stamp.tag,
            });
        }
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            size: meta.len(),
            modified: meta.modified().ok(),
            tag: 0,
        })
    }
}

struct Entry {
    audio: Arc<DecodedAudio>,
    stamp: FileStamp,
    bytes: u64,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<CacheKey, Entry>,
    /// Last use -> key; the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    bytes: u64,
    tick: u64,
}

pub struct AudioCache {
    capacity: u64,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub bytes: u64,
    pub capacity: u64,
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

fn size_of(audio: &DecodedAudio) -> u64 {
    audio.planes.iter().map(|p| p.len() as u64 * 4).sum()
}

impl AudioCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is a few
        // plain assignments), so keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached audio, if present and the file is unchanged since it was decoded.
    pub fn get(&self, key: &CacheKey, stamp: FileStamp) -> Option<Arc<DecodedAudio>> {
        let mut inner = self.lock();
        let found = match inner.entries.get(key) {
            Some(e) if e.stamp == stamp => Some((e.tick, Arc::clone(&e.audio))),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        };
        let Some((old_tick, audio)) = found else {
            drop(inner);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.remove(&old_tick);
        inner.order.insert(tick, key.clone());
        if let Some(e) = inner.entries.get_mut(key) {
            e.tick = tick;
        }
        drop(inner);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(audio)
    }

    /// Keep `audio`, evicting the least recently used entries to stay within capacity.
    /// Audio larger than the whole cache is not kept.
    pub fn insert(&self, key: CacheKey, stamp: FileStamp, audio: Arc<DecodedAudio>) {
        let bytes = size_of(&audio);
        if bytes > self.capacity {
            return;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.bytes + bytes > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key.clone());
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                audio,
                stamp,
                bytes,
                tick,
            },
        );
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            bytes: inner.bytes,
            capacity: self.capacity,
            entries: inner.entries.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.bytes;
        }
    }
}

/// Facts about files that are costly to learn and stay true while the file is unchanged
/// (invalidated like the audio cache, by size and modification time or ETag): declared
/// durations, so that opening a stream (which sizes slots and buckets from the headers)
/// does not re-read every header each epoch, and damage verdicts (`feed::verdict`).
pub struct FileMemo<V> {
    map: Mutex<HashMap<PathBuf, (FileStamp, V)>>,
}

/// Declared durations (seconds) by file.
pub type DurationCache = FileMemo<Option<f64>>;

/// What the daemon learns of files and keeps while they are unchanged, shared by every
/// stream.
#[derive(Default)]
pub struct FileFacts {
    pub durations: DurationCache,
    /// Whole-file damage verdicts, for items that decode part of a file (Note [Damage
    /// rule]); `None` where the file does not decode at all (its items fail on their own).
    pub verdicts: FileMemo<Option<crate::decode::integrity::Integrity>>,
}

/// About 100 bytes an entry: a cap of a few million keeps it well under a gigabyte.
const MEMO_ENTRIES: usize = 4_000_000;

impl<V> Default for FileMemo<V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> FileMemo<V> {
    /// What is known of `path`'s current version, without learning it.
    pub fn get(&self, path: &Path) -> Option<V> {
        let stamp = FileStamp::of(path)?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, v)| v.clone())
    }

    /// What is known of `path`, from memory when the file is unchanged, else from `learn`;
    /// `None` when the file cannot be stamped (missing, unreadable metadata).
    pub fn get_or_learn(&self, path: &Path, learn: impl FnOnce() -> V) -> Option<V> {
        let stamp = FileStamp::of(path)?;
        let lock = || self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, v)) = lock().get(path) {
            if *s == stamp {
                return Some(v.clone());
            }
        }
        let value = learn();
        let mut map = lock();
        if map.len() >= MEMO_ENTRIES {
            map.clear();
        }
        map.insert(path.to_path_buf(), (stamp, value.clone()));
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(frames: usize) -> Arc<DecodedAudio> {
        Arc::new(DecodedAudio {
            planes: vec![vec![0.5; frames]],
            sample_rate: 16000,
            damage: None,
        })
    }

    fn key(name: &str) -> CacheKey {
        CacheKey {
            path: PathBuf::from(name),
            sample_rate: 16000,
            mode: ChannelMode::Mono,
            quality: Quality::Hq,
            lenient: true,
        }
    }

    const STAMP: FileStamp = FileStamp {
        size: 1,
        modified: None,
        tag: 0,
    };

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let cache = AudioCache::new(1000);
        cache.insert(key("a"), STAMP, audio(100)); // 400 bytes
        cache.insert(key("b"), STAMP, audio(100));
        assert!(cache.get(&key("a"), STAMP).is_some()); // a is now the most recent
        cache.insert(key("c"), STAMP, audio(100)); // evicts b
        assert!(cache.get(&key("b"), STAMP).is_none());
        assert!(cache.get(&key("a"), STAMP).is_some());
        assert!(cache.get(&key("c"), STAMP).is_some());
        let s = cache.stats();
        assert!(s.bytes <= 1000);
        assert_eq!((s.entries, s.hits, s.misses), (2, 3, 1));
        cache.insert(key("huge"), STAMP, audio(1000)); // larger than the cache: not kept
        assert!(cache.get(&key("huge"), STAMP).is_none());
        assert_eq!(cache.stats().entries, 2);
    }

    #[test]
    fn durations_are_probed_once_per_file_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.wav");
        std::fs::write(&f, b"12345").expect("write");
        let cache = DurationCache::default();
        let mut probes = 0;
        for _ in 0..3 {
            cache.get_or_learn(&f, || {
                probes += 1;
                Some(1.5)
            });
        }
        assert_eq!(probes, 1);
        std::fs::write(&f, b"123456").expect("rewrite");
        assert_eq!(cache.get_or_learn(&f, || Some(2.0)), Some(Some(2.0)));
    }

    #[test]
    fn a_changed_file_is_a_miss_and_frees_its_entry() {
        let cache = AudioCache::new(10_000);
        cache.insert(key("a"), STAMP, audio(100));
        let changed = FileStamp {
            size: 2,
            modified: None,
            tag: 0,
        };
        assert!(cache.get(&key("a"), changed).is_none());
        assert_eq!(cache.stats().bytes, 0);
    }
}
