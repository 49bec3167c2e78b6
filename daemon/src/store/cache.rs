//! Fetched objects by URL: in memory files, or in the `--object-cache` directory, bounded
//! in bytes, least recently used out first, revalidated after `FRESH`. See Note [Remote
//! objects].

use std::collections::HashMap;
use std::fs::File;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::store::fetch::{self, stamp_of};
use crate::store::turns::Turns;
use crate::store::{memory_file, Location, Stamp, StoreError};
use crate::sys::MemFile;

/// A copy checked this recently is served without asking the store again: one item's
/// stamp check, probe and decode make one request, not three.
const FRESH: Duration = Duration::from_secs(1);

/// Memory files kept for reuse when there is no cache directory and the command line set no
/// bound (the CLI sets one from the available memory).
const MEMORY_BYTES: u64 = 256 << 20;

/// Where fetched objects are kept (`--object-cache DIR`, `--object-cache-size`).
#[derive(Clone, Debug, Default)]
pub struct CacheConfig {
    pub dir: Option<PathBuf>,
    pub max_bytes: Option<u64>,
}

/// A fetched object's bytes at a local path. An evicted copy in the cache directory is
/// unlinked at once: its users hold it open (see `LocalCopy`).
pub(super) enum Body {
    Memory(MemFile),
    Disk(PathBuf),
}

impl Body {
    fn evict(&self) {
        if let Self::Disk(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct Entry {
    body: Arc<Body>,
    stamp: Stamp,
    bytes: u64,
    checked: Instant,
    used: u64,
}

pub(super) struct Objects {
    dir: Option<PathBuf>,
    capacity: u64,
    inner: Mutex<Inner>,
    /// URLs being fetched now: a second asker waits for that fetch instead of starting its
    /// own (two workers missing the same shard at once fetch it once).
    fetching: Turns,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Copies an earlier run left in the cache directory, by file name: adopted when their
    /// object is asked for unchanged, evicted first otherwise.
    orphans: HashMap<String, u64>,
    /// Stamps of objects checked but not held (read in parts, Note [Ranged reads of remote
    /// files]), trusted for `FRESH` like a held copy's.
    stamps: HashMap<String, (Stamp, Instant)>,
    bytes: u64,
    tick: u64,
}

/// Stamps of objects not held that are remembered at most (a few seconds' worth).
const MAX_STAMPS: usize = 4096;

static CONFIG: OnceLock<CacheConfig> = OnceLock::new();

pub(super) fn configure(config: CacheConfig) {
    let _ = CONFIG.set(config);
}

pub(super) fn objects() -> &'static Objects {
    static OBJECTS: OnceLock<Objects> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let config = CONFIG.get().cloned().unwrap_or_default();
        Objects::new(config)
    })
}

impl Objects {
    fn new(config: CacheConfig) -> Self {
        let dir = config.dir.filter(|dir| match std::fs::create_dir_all(dir) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "object cache {}: {e}; keeping objects in memory",
                    dir.display()
                );
                false
            }
        });
        let capacity = config.max_bytes.unwrap_or(match dir {
            Some(_) => 10 << 30,
            None => MEMORY_BYTES,
        });
        let mut inner = Inner::default();
        if let Some(dir) = &dir {
            inner.orphans = earlier_copies(dir);
            inner.bytes = inner.orphans.values().sum();
        }
        Self {
            dir,
            capacity,
            inner: Mutex::new(inner),
            fetching: Turns::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object's stamp: from a copy checked within `FRESH`, else by a HEAD request
    /// (which also revalidates the copy held, when it is unchanged).
    pub(super) fn stamp(&self, location: &Location) -> Result<Stamp, StoreError> {
        let url = location.url();
        if let Some(stamp) = self.fresh(url).map(|(_, stamp)| stamp) {
            return Ok(stamp);
        }
        let checked = self.lock().stamps.get(url).copied();
        if let Some((stamp, _)) = checked.filter(|(_, at)| at.elapsed() <= FRESH) {
            return Ok(stamp);
        }
        let stamp = stamp_of(&fetch::head(location)?);
        let mut inner = self.lock();
        match inner.entries.get_mut(url) {
            Some(entry) => {
                if entry.stamp == stamp {
                    entry.checked = Instant::now();
                }
            }
            None => {
                if inner.stamps.len() >= MAX_STAMPS {
                    inner.stamps.retain(|_, (_, at)| at.elapsed() <= FRESH);
                }
                inner
                    .stamps
                    .insert(url.to_string(), (stamp, Instant::now()));
            }
        }
        Ok(stamp)
    }

    /// A local copy of the object, fetched unless a current one is held.
    /// With the copy's stamp.
    pub(super) fn get(&self, location: &Location) -> Result<(Arc<Body>, Stamp), StoreError> {
        if let Some(fresh) = self.fresh(location.url()) {
            return Ok(fresh);
        }
        let held = self.lock().entries.get(location.url()).map(|e| e.stamp);
        if let Some(held) = held {
            if self.stamp(location)? == held {
                if let Some(fresh) = self.fresh(location.url()) {
                    return Ok(fresh);
                }
            }
        }
        self.fetch_once(location, |objects| objects.fresh(location.url()))
    }

    /// The copy held, however long ago it was checked (the caller vouches for the version,
    /// as a stream that checked its shards when it opened), else a fresh fetch; with the
    /// copy's stamp.
    pub(super) fn held(&self, location: &Location) -> Result<(Arc<Body>, Stamp), StoreError> {
        if let Some(copy) = self.any_copy(location.url()) {
            return Ok(copy);
        }
        self.fetch_once(location, |objects| objects.any_copy(location.url()))
    }

    /// Fetches the object and keeps the copy, unless a fetch of it is under way: then waits
    /// for that one and takes its copy (`reuse`), or fetches again when it failed or its
    /// copy was not kept.
    fn fetch_once(
        &self,
        location: &Location,
        reuse: impl Fn(&Self) -> Option<(Arc<Body>, Stamp)>,
    ) -> Result<(Arc<Body>, Stamp), StoreError> {
        let url = location.url();
        let _turn = self.fetching.take(url);
        if let Some(copy) = reuse(self) {
            return Ok(copy);
        }
        let (body, stamp, size) = self.fetch(location)?;
        let body = Arc::new(body);
        self.insert(url, Arc::clone(&body), stamp, size);
        Ok((body, stamp))
    }

    /// A copy made from an object rather than fetched (a compressed shard's inflated bytes,
    /// Note [Compressed shards]), kept under `key` beside fetched copies and within the same
    /// bound: the copy held when it is of version `expected` (any version when `None`), else
    /// the one `make` writes now, given the most bytes it may write; with its version.
    pub(super) fn derived(
        &self,
        key: &str,
        expected: Option<Stamp>,
        make: impl FnOnce(&mut dyn std::io::Write, u64) -> Result<Stamp, StoreError>,
    ) -> Result<(Arc<Body>, Stamp), StoreError> {
        let held = |objects: &Self| {
            objects
                .any_copy(key)
                .filter(|(_, stamp)| expected.is_none_or(|e| e == *stamp))
        };
        if let Some(copy) = held(self) {
            return Ok(copy);
        }
        let _turn = self.fetching.take(key);
        if let Some(copy) = held(self) {
            return Ok(copy);
        }
        let local = |e: std::io::Error| StoreError::Local {
            url: key.to_string(),
            reason: format!("cannot keep a copy: {e}"),
        };
        let (body, stamp, bytes) = match &self.dir {
            None => {
                let mut file = MemFile::new(key).map_err(local)?;
                let stamp = make(&mut file, self.capacity)?;
                let bytes = file.len().map_err(local)?;
                (Body::Memory(file), stamp, bytes)
            }
            Some(dir) => {
                let name = derived_name(key);
                let partial = dir.join(format!("{name}.{}.part", std::process::id()));
                let mut file = File::create(&partial).map_err(local)?;
                let made = make(&mut file, self.capacity)
                    .and_then(|stamp| Ok((stamp, file.metadata().map_err(local)?.len())));
                let (stamp, bytes) = match made {
                    Ok(made) => made,
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e);
                    }
                };
                let path = dir.join(format!("{name}-{:016x}.obj", stamp.tag));
                std::fs::rename(&partial, &path).map_err(local)?;
                (disk_body(path), stamp, bytes)
            }
        };
        let body = Arc::new(body);
        self.insert(key, Arc::clone(&body), stamp, bytes);
        Ok((body, stamp))
    }

    /// Whether a copy of `url` is held (checked or not).
    pub(super) fn holds(&self, url: &str) -> bool {
        self.lock().entries.contains_key(url)
    }

    /// The bytes the cache may hold.
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether copies are kept in a directory.
    pub(super) fn on_disk(&self) -> bool {
        self.dir.is_some()
    }

    /// The copy held of `url`, however long ago it was checked.
    fn any_copy(&self, url: &str) -> Option<(Arc<Body>, Stamp)> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(url)?;
        entry.used = tick;
        Some((Arc::clone(&entry.body), entry.stamp))
    }

    fn fresh(&self, url: &str) -> Option<(Arc<Body>, Stamp)> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(url)?;
        if entry.checked.elapsed() > FRESH {
            return None;
        }
        entry.used = tick;
        Some((Arc::clone(&entry.body), entry.stamp))
    }

    /// Fetch the object: its local copy, stamp and size.
    fn fetch(&self, location: &Location) -> Result<(Body, Stamp, u64), StoreError> {
        let rewind = |f: &mut File| {
            f.set_len(0)?;
            f.rewind().map(|_| ())
        };
        match &self.dir {
            None => {
                let mut file = memory_file(location)?;
                let meta = fetch::get(
                    location,
                    self.capacity,
                    &mut file,
                    &mut |f: &mut MemFile| {
                        f.truncate()?;
                        f.rewind().map(|_| ())
                    },
                )?;
                Ok((Body::Memory(file), stamp_of(&meta), meta.size))
            }
            Some(dir) => {
                // A copy named by URL and version is reused across runs; it is written
                // under a name of this process's, then renamed into place.
                let unwritable = |e: std::io::Error| StoreError::Local {
                    url: location.url().to_string(),
                    reason: format!("cannot write to the object cache {}: {e}", dir.display()),
                };
                let stamp = stamp_of(&fetch::head(location)?);
                let name = copy_name(location, stamp);
                let path = dir.join(&name);
                if let Some(size) = self.adopt(&name, &path, stamp) {
                    return Ok((disk_body(path), stamp, size));
                }
                let partial = dir.join(format!("{name}.{}.part", std::process::id()));
                let mut file = File::create(&partial).map_err(unwritable)?;
                let fetched =
                    fetch::get(location, self.capacity, &mut file, &mut |f: &mut File| {
                        rewind(f)
                    });
                let meta = match fetched {
                    Ok(meta) => meta,
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e);
                    }
                };
                let stamp = stamp_of(&meta);
                let path = dir.join(copy_name(location, stamp));
                std::fs::rename(&partial, &path).map_err(unwritable)?;
                Ok((disk_body(path), stamp, meta.size))
            }
        }
    }

    /// An earlier run's copy of this very version, taken back from the orphans.
    fn adopt(&self, name: &str, path: &Path, stamp: Stamp) -> Option<u64> {
        let mut inner = self.lock();
        let bytes = *inner.orphans.get(name)?;
        if bytes != stamp.size || !path.is_file() {
            return None;
        }
        inner.orphans.remove(name);
        inner.bytes -= bytes;
        Some(bytes)
    }

    fn insert(&self, url: &str, body: Arc<Body>, stamp: Stamp, bytes: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(url) {
            inner.bytes -= old.bytes;
            old.body.evict();
        }
        // Objects larger than the capacity were refused by the fetch; room is made by
        // dropping earlier runs' copies, then the least recently used.
        while inner.bytes + bytes > self.capacity {
            if let Some(name) = inner.orphans.keys().next().cloned() {
                if let (Some(size), Some(dir)) = (inner.orphans.remove(&name), &self.dir) {
                    inner.bytes -= size;
                    let _ = std::fs::remove_file(dir.join(name));
                }
                continue;
            }
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(url, _)| url.clone())
            else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.bytes;
                old.body.evict();
            }
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.bytes += bytes;
        inner.entries.insert(
            url.to_string(),
            Entry {
                body,
                stamp,
                bytes,
                checked: Instant::now(),
                used,
            },
        );
    }
}

fn disk_body(path: PathBuf) -> Body {
    Body::Disk(path)
}

/// The name of a version's copy: the URL's hash, the version's tag, the object's name.
fn copy_name(location: &Location, stamp: Stamp) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    location.url().hash(&mut hasher);
    let readable: String = location
        .key_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{:016x}-{:016x}-{readable}.obj", hasher.finish(), stamp.tag)
}

/// The file name of a derived copy: its key's hash (later runs find it among the earlier
/// copies, evicted first).
fn derived_name(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{:016x}-derived", hasher.finish())
}

/// Copies an earlier run left (`*.obj`), by name and size; partial downloads of processes
/// that are gone are removed.
fn earlier_copies(dir: &Path) -> HashMap<String, u64> {
    let mut copies = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return copies;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(rest) = name.strip_suffix(".part") {
            let writer_alive = rest
                .rsplit_once('.')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !writer_alive {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if name.ends_with(".obj") {
            if let Ok(meta) = entry.metadata() {
                copies.insert(name, meta.len());
            }
        }
    }
    copies
}
