//! Objects behind URLs — `s3://`, `gs://`, `az://`, `http(s)://` — made readable as local
//! paths, so every stage that takes a path (decode, manifests, the feed, labeling) takes a
//! URL too. See Note [Remote objects].
//!
//! In short: a remote object is fetched whole into a memory file (or the `--object-cache`
//! directory) and decoded from there, unless only a part of a large one is wanted (Note
//! [Ranged reads of remote files]); a copy is revalidated a second after it was checked,
//! so a changed object is never served stale; every wait on the network is bounded.

mod blocks;
mod cache;
mod fetch;
mod file_url;
pub mod inflate;
pub mod learnt;
mod location;
mod redact;
pub mod tar;
mod turns;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cache::CacheConfig;
pub use fetch::MAX_REQUESTS_ENV;
pub use file_url::{file_url_path, is_file_url, local_form};
pub use location::Location;
pub use redact::{redacted, shown};

use crate::sys::MemFile;

/// Why a URL could not be read. Every variant names the URL, shown without its
/// credentials (`redacted`): a reason may quote the URL too (the HTTP client's errors do).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: not found", redacted(url))]
    NotFound { url: String },

    #[error("{}: access denied: {}", redacted(url), redacted(reason))]
    Forbidden { url: String, reason: String },

    #[error("{}: unreachable: {}", redacted(url), redacted(reason))]
    Unreachable { url: String, reason: String },

    /// The server was reached and answered the request with an error status that is
    /// neither "not found" nor "forbidden" (a 5xx after the client's retries, a 416).
    #[error(
        "{}: the server answered HTTP {status}: {}",
        redacted(url),
        redacted(reason)
    )]
    Answered {
        url: String,
        status: u16,
        reason: String,
    },

    /// A failure on this machine while handling fetched bytes (a full disk, no memory
    /// file): the store was fine, so the request is not retried.
    #[error("{}: {}", redacted(url), redacted(reason))]
    Local { url: String, reason: String },

    #[error("{}: {}", redacted(url), redacted(reason))]
    Invalid { url: String, reason: String },
}

impl StoreError {
    pub fn url(&self) -> &str {
        match self {
            Self::NotFound { url }
            | Self::Forbidden { url, .. }
            | Self::Unreachable { url, .. }
            | Self::Answered { url, .. }
            | Self::Local { url, .. }
            | Self::Invalid { url, .. } => url,
        }
    }
}

impl From<StoreError> for crate::error::DecodeError {
    fn from(err: StoreError) -> Self {
        let path = PathBuf::from(err.url());
        match err {
            StoreError::NotFound { .. } => Self::NotFound { path },
            StoreError::Invalid { reason, .. } => Self::InvalidRequest { path, reason },
            StoreError::Forbidden { reason, .. } => Self::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("access denied: {reason}"),
                ),
            },
            StoreError::Unreachable { reason, .. } => Self::Io {
                path,
                source: std::io::Error::other(format!("unreachable: {reason}")),
            },
            StoreError::Answered { status, reason, .. } => Self::Io {
                path,
                source: std::io::Error::other(format!(
                    "the server answered HTTP {status}: {reason}"
                )),
            },
            StoreError::Local { reason, .. } => Self::Io {
                path,
                source: std::io::Error::other(reason),
            },
        }
    }
}

/// Whether `s` names a remote object (a URL scheme the store reads) rather than a path.
pub fn is_url(s: &str) -> bool {
    location::scheme_of(s).is_some()
}

/// The URL a path holds, when it holds one.
pub fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| is_url(s))
}

/// A remote object readable at a local path for as long as this lives: a memory file, or
/// the cache directory's copy held open (so that evicting it cannot pull it from under a
/// decoder), both reached as `/proc/<pid>/fd/<n>`.
pub struct LocalCopy {
    _body: Arc<cache::Body>,
    _open: Option<std::fs::File>,
    path: PathBuf,
}

impl LocalCopy {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What identifies an object's content without fetching it: its size and a hash of its
/// ETag (or of its modification time when the store gives no ETag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub size: u64,
    pub tag: u64,
}

/// Whether `url` is an object URL with a query string (a signed URL): one object, used
/// exactly as written, that cannot be listed or have siblings.
pub fn has_query(url: &str) -> bool {
    Location::parse(url).is_ok_and(|l| l.with_query())
}

/// The lowercase extension of what `path` names — of a URL with a query string, of its
/// path before the query — by which manifests, shards and copied members are told apart.
pub fn extension_of(path: &Path) -> Option<String> {
    let text = path.to_string_lossy();
    let named = match has_query(&text) {
        true => text.split(['?', '#']).next().unwrap_or(&text),
        false => &text,
    };
    Path::new(named)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Fetch `url` (or take it from the cache, revalidated) as a local file.
pub fn local_copy(url: &str) -> Result<LocalCopy, StoreError> {
    Ok(current_copy(url)?.0)
}

/// [`local_copy`] with the copy's stamp.
pub fn current_copy(url: &str) -> Result<(LocalCopy, Stamp), StoreError> {
    let location = Location::parse(url)?;
    let (body, stamp) = cache::objects().get(&location)?;
    Ok((LocalCopy::of(url, body)?, stamp))
}

/// The copy of `url` held (not revalidated), else a fresh fetch, and its stamp: for
/// shards, whose version a stream checks once when it opens (see `tar`).
pub fn held_copy(url: &str) -> Result<(LocalCopy, Stamp), StoreError> {
    let location = Location::parse(url)?;
    let (body, stamp) = cache::objects().held(&location)?;
    Ok((LocalCopy::of(url, body)?, stamp))
}

impl LocalCopy {
    fn of(url: &str, body: Arc<cache::Body>) -> Result<Self, StoreError> {
        match body.as_ref() {
            cache::Body::Memory(file) => Ok(Self {
                path: file.path().to_path_buf(),
                _body: body,
                _open: None,
            }),
            cache::Body::Disk(copy) => {
                use std::os::fd::AsRawFd;
                let open = std::fs::File::open(copy).map_err(|e| StoreError::Local {
                    url: url.to_string(),
                    reason: format!("cached copy {}: {e}", copy.display()),
                })?;
                let path = format!("/proc/{}/fd/{}", std::process::id(), open.as_raw_fd());
                Ok(Self {
                    path: PathBuf::from(path),
                    _body: body,
                    _open: Some(open),
                })
            }
        }
    }
}

/// The object's current stamp (a HEAD request unless checked within `FRESH`).
pub fn stamp(url: &str) -> Result<Stamp, StoreError> {
    let location = Location::parse(url)?;
    cache::objects().stamp(&location)
}

/// The whole object as bytes (manifests, shard indexes).
pub fn read(url: &str) -> Result<Vec<u8>, StoreError> {
    let copy = local_copy(url)?;
    std::fs::read(copy.path()).map_err(|e| StoreError::Local {
        url: url.to_string(),
        reason: format!("cannot read the fetched copy: {e}"),
    })
}

/// The whole object streamed into `sink` as it arrives, neither cached nor held (a pass
/// over an object larger than memory: indexing a tar shard). A transfer cut off after bytes
/// were handed on is an error, not a retry: the sink cannot take them back.
pub fn stream(url: &str, sink: &mut dyn std::io::Write) -> Result<Stamp, StoreError> {
    let location = Location::parse(url)?;
    let mut written = CountingWriter {
        inner: sink,
        written: 0,
    };
    let meta = fetch::get(&location, u64::MAX, &mut written, &mut |w| {
        if w.written == 0 {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "the transfer broke off after {} bytes",
                w.written
            )))
        }
    })?;
    Ok(fetch::stamp_of(&meta))
}

struct CountingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    written: u64,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` as the object at `url` (index sidecars beside remote shards).
pub fn write(url: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
    let location = Location::parse(url)?;
    fetch::put(&location, bytes)
}

/// Bytes `range` of the object, by a ranged GET (not cached: a shard member read once an
/// epoch) — or, from a server that answers no byte ranges, from the whole object fetched
/// into the object cache once.
pub fn read_range(url: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, StoreError> {
    use std::os::unix::fs::FileExt;
    let location = Location::parse(url)?;
    if !fetch::answers_no_ranges(&location) {
        if let Some(bytes) = fetch::get_range(&location, range.clone())? {
            return Ok(bytes);
        }
    }
    let copy = held_copy(url).map_err(|e| match e {
        StoreError::Invalid { url, reason } => StoreError::Invalid {
            url,
            reason: format!("the server answers no byte ranges, so {reason}"),
        },
        other => other,
    })?;
    let cannot = |e: std::io::Error| StoreError::Local {
        url: url.to_string(),
        reason: format!("cannot read the fetched copy: {e}"),
    };
    let file = std::fs::File::open(copy.0.path()).map_err(cannot)?;
    let mut bytes = vec![0; usize::try_from(range.end - range.start).unwrap_or(0)];
    file.read_exact_at(&mut bytes, range.start)
        .map_err(|e| StoreError::Invalid {
            url: url.to_string(),
            reason: format!("asked for bytes {}..{}: {e}", range.start, range.end),
        })?;
    Ok(bytes)
}

/// A remote object read in parts by ranged GETs instead of fetched whole (Note [Ranged reads
/// of remote files]).
pub struct RangedObject {
    url: String,
    stamp: Stamp,
}

/// `Some` when `url` is better read in parts: no copy of it is held and it is larger than
/// an eighth of what the object cache may hold. Smaller objects are fetched whole and kept,
/// so that the next part wanted (the next item of a long recording) is read locally.
pub fn ranged_object(url: &str) -> Result<Option<RangedObject>, StoreError> {
    let location = Location::parse(url)?;
    let objects = cache::objects();
    if objects.holds(url) || fetch::answers_no_ranges(&location) {
        return Ok(None);
    }
    let stamp = objects.stamp(&location)?;
    if stamp.size <= objects.capacity() / 8 {
        return Ok(None);
    }
    Ok(Some(RangedObject {
        url: url.to_string(),
        stamp,
    }))
}

impl RangedObject {
    pub fn size(&self) -> u64 {
        self.stamp.size
    }

    /// The object's first `len` bytes (fewer when it is shorter), by one small ranged GET
    /// (kept a while: the next part of the file needs them too): a header, which may show
    /// that the object is better fetched whole after all.
    pub fn head(&self, len: u64) -> Result<Vec<u8>, StoreError> {
        blocks::head(&self.url, self.stamp, len)
    }

    /// A local copy as long as the object that holds `head` (its first bytes) and `ranges`
    /// of it (each rounded out to whole blocks, kept a while for the next part wanted);
    /// the rest is a hole that reads as zeros and takes no memory. The caller reads
    /// nothing else.
    pub fn partial_copy(
        &self,
        head: &[u8],
        ranges: &[std::ops::Range<u64>],
    ) -> Result<LocalCopy, StoreError> {
        let location = Location::parse(&self.url)?;
        let file = memory_file(&location)?;
        let unwritable = |e: std::io::Error| StoreError::Local {
            url: self.url.clone(),
            reason: format!("cannot write the fetched bytes to a memory file: {e}"),
        };
        file.set_len(self.stamp.size).map_err(unwritable)?;
        file.write_all_at(head, 0).map_err(unwritable)?;
        for range in ranges.iter().filter(|r| r.start < r.end) {
            let (start, end) = blocks::rounded_out(range, self.stamp.size);
            if start < end {
                let bytes = blocks::read(&self.url, self.stamp, start..end)?;
                file.write_all_at(&bytes, start).map_err(unwritable)?;
            }
        }
        LocalCopy::of(&self.url, Arc::new(cache::Body::Memory(file)))
    }
}

/// Every object under the prefix `url` (a "directory"), as URLs in lexical order.
pub fn list(url: &str) -> Result<Vec<String>, StoreError> {
    let location = Location::parse(url)?;
    fetch::list(&location)
}

/// Resolve `relative` against the URL of the object `base` (a manifest's own URL), as a
/// browser resolves a link: `s3://b/sets/train.jsonl` + `a/x.wav` → `s3://b/sets/a/x.wav`.
pub fn join(base: &str, relative: &str) -> Result<String, StoreError> {
    let parsed = url::Url::parse(base).map_err(|e| StoreError::Invalid {
        url: base.to_string(),
        reason: format!("not a valid URL: {e}"),
    })?;
    parsed
        .join(relative)
        .map(String::from)
        .map_err(|e| StoreError::Invalid {
            url: base.to_string(),
            reason: format!("cannot resolve {relative:?} against it: {e}"),
        })
}

/// The bytes the object cache may hold.
pub fn cache_capacity() -> u64 {
    cache::objects().capacity()
}

/// Whether fetched objects are kept in a directory (`--object-cache DIR`), across runs.
pub fn cache_on_disk() -> bool {
    cache::objects().on_disk()
}

/// Set the object cache once, at start (`--object-cache DIR`); memory only otherwise.
pub fn configure(config: CacheConfig) {
    cache::configure(config);
}

/// A fresh memory file for a fetched body (named after the object for `/proc` listings).
fn memory_file(location: &Location) -> Result<MemFile, StoreError> {
    MemFile::new(&format!("object:{}", location.key_name())).map_err(|e| StoreError::Local {
        url: location.url().to_string(),
        reason: format!("cannot create a memory file: {e}"),
    })
}
