//! Requests on the store's own small tokio runtime, each wait bounded, each failure
//! classified (not found, forbidden, unreachable) and named by URL.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::{GetOptions, ObjectMeta};

use crate::store::{Location, Stamp, StoreError};

/// How long a request may wait for its answer, and a body for its next chunk, before the
/// server counts as unreachable. Retries of failed requests come on top, bounded by
/// `retry_timeout`.
const STALL: Duration = Duration::from_secs(60);

/// Default bound on requests in flight per store (bucket or host).
const MAX_REQUESTS: usize = 32;

/// Env override of [`MAX_REQUESTS`] (`--object-requests` sets it for the daemon).
pub const MAX_REQUESTS_ENV: &str = "AUDIODECODE_OBJECT_REQUESTS";

/// A body cut off mid-transfer is fetched again from the start this many times.
const BODY_ATTEMPTS: usize = 3;

pub(super) fn max_requests() -> usize {
    std::env::var(MAX_REQUESTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(MAX_REQUESTS)
}

/// The runtime all store requests run on. Callers are plain threads (pool workers, the
/// CLI), which block on their request; two threads drive every connection.
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("object-store")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn block_on<T>(
    location: &Location,
    future: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let runtime = runtime().map_err(|e| StoreError::Unreachable {
        url: location.url().to_string(),
        reason: format!("cannot start the network runtime: {e}"),
    })?;
    runtime.block_on(future)
}

/// The error a failed request becomes, by what the store answered.
pub(super) fn classify(location: &Location, err: object_store::Error) -> StoreError {
    let url = location.url().to_string();
    match err {
        object_store::Error::NotFound { .. } => StoreError::NotFound { url },
        object_store::Error::PermissionDenied { source, .. }
        | object_store::Error::Unauthenticated { source, .. } => StoreError::Forbidden {
            url,
            reason: source.to_string(),
        },
        object_store::Error::InvalidPath { source } => StoreError::Invalid {
            url,
            reason: source.to_string(),
        },
        other => {
            let reason = other.to_string();
            match answered_status(&reason) {
                Some(status) => StoreError::Answered {
                    url,
                    status,
                    reason,
                },
                None => StoreError::Unreachable { url, reason },
            }
        }
    }
}

/// The HTTP status a server answered with, from object_store's error text ("Server
/// returned non-2xx status code: 501 Not Implemented: …"). Its retry error, which holds the
/// status, is private to the crate; the text is pinned by Cargo.lock and checked by
/// tests/test_object_storage.py's server-error test.
fn answered_status(reason: &str) -> Option<u16> {
    const MARK: &str = "status code: ";
    let at = reason.find(MARK)? + MARK.len();
    let digits = reason.get(at..at + 3)?;
    digits
        .parse()
        .ok()
        .filter(|status| (400..600).contains(status))
}

fn stalled(location: &Location, what: &str) -> StoreError {
    StoreError::Unreachable {
        url: location.url().to_string(),
        reason: format!("no {what} within {} s", STALL.as_secs()),
    }
}

/// The stamp of an answer's metadata. A server that sends neither an ETag nor a
/// Last-Modified (object_store then states the epoch) gives no way to tell versions of the
/// same size apart: each answer gets a stamp of its own, so a copy is never taken for
/// current after its `FRESH` second — fetched again, never served stale.
pub(super) fn stamp_of(meta: &ObjectMeta) -> Stamp {
    use std::hash::{Hash, Hasher};
    static ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &meta.e_tag {
        Some(tag) => tag.hash(&mut hasher),
        None if meta.last_modified.timestamp_nanos_opt() == Some(0) => {
            ANSWERS
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .hash(&mut hasher);
            "no validator".hash(&mut hasher);
        }
        None => meta.last_modified.timestamp_nanos_opt().hash(&mut hasher),
    }
    Stamp {
        size: meta.size,
        tag: hasher.finish(),
    }
}

/// The object's metadata: a HEAD request, or for a URL with a query (which may be signed
/// for GET alone, as pre-signed S3 and GCS URLs are) the headers of a one-byte ranged GET,
/// whose `Content-Range` states the size — or of a whole GET, its body left unread, where
/// the server answers no range (it ignores them, or the object is empty).
pub(super) fn head(location: &Location) -> Result<ObjectMeta, StoreError> {
    let store = location.store()?;
    let key = location.key();
    block_on(location, async {
        let answered = |r: Result<Result<_, object_store::Error>, _>| {
            r.map_err(|_| stalled(location, "answer"))?
                .map_err(|e| classify(location, e))
        };
        if !location.with_query() {
            return answered(tokio::time::timeout(STALL, store.head(key)).await);
        }
        if !answers_no_ranges(location) {
            let first_byte = GetOptions {
                range: Some((0..1).into()),
                ..GetOptions::default()
            };
            match tokio::time::timeout(STALL, store.get_opts(key, first_byte)).await {
                Ok(Err(object_store::Error::NotSupported { .. })) => no_ranges_from(location),
                // An empty object has no first byte (416): its whole GET says so.
                Ok(Err(object_store::Error::Generic { .. })) => {}
                ranged => return answered(ranged.map(|r| r.map(|got| got.meta))),
            }
        }
        let whole = tokio::time::timeout(STALL, store.get(key)).await;
        answered(whole.map(|r| r.map(|got| got.meta)))
    })
}

/// GET the object into `sink` (rewound and cleared by `reset` before each attempt); its
/// metadata. A body that ends early (a dropped connection) or comes out of a different
/// length than the object's is fetched again.
/// An object larger than `max_bytes` (what the cache may hold) is refused before its body
/// is read, and a body longer than the object's stated size is cut off: memory and disk
/// never grow with what a server claims.
pub(super) fn get<W: Write>(
    location: &Location,
    max_bytes: u64,
    sink: &mut W,
    reset: &mut dyn FnMut(&mut W) -> std::io::Result<()>,
) -> Result<ObjectMeta, StoreError> {
    let store = location.store()?;
    let url = location.url();
    let mut last = None;
    for _ in 0..BODY_ATTEMPTS {
        if let Err(e) = reset(sink) {
            // A sink that cannot start again (a stream already handed on) ends the retries
            // with the broken transfer that asked for one, not with a local failure.
            return Err(last.unwrap_or_else(|| write_failed(url, &e)));
        }
        let answer = block_on(location, async {
            let result = tokio::time::timeout(STALL, store.get(location.key()))
                .await
                .map_err(|_| stalled(location, "answer"))?
                .map_err(|e| classify(location, e))?;
            let meta = result.meta.clone();
            if meta.size > max_bytes {
                return Err(StoreError::Invalid {
                    url: url.to_string(),
                    reason: format!(
                        "the object is {:.1} MB, more than the {:.1} MB the object cache may \
                         hold (--object-cache DIR and --object-cache-bytes raise it)",
                        meta.size as f64 / 1e6,
                        max_bytes as f64 / 1e6
                    ),
                });
            }
            let mut body = result.into_stream();
            let mut received = 0u64;
            loop {
                match tokio::time::timeout(STALL, body.next()).await {
                    Err(_) => return Err(stalled(location, "data")),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        return Err(StoreError::Unreachable {
                            url: url.to_string(),
                            reason: format!(
                                "transfer failed after {received} of {} bytes: {e}",
                                meta.size
                            ),
                        })
                    }
                    Ok(Some(Ok(chunk))) => {
                        received += chunk.len() as u64;
                        if received > meta.size {
                            return Err(StoreError::Invalid {
                                url: url.to_string(),
                                reason: format!(
                                    "the server sent more than the {} bytes it stated",
                                    meta.size
                                ),
                            });
                        }
                        sink.write_all(&chunk).map_err(|e| write_failed(url, &e))?;
                    }
                }
            }
            if received != meta.size {
                return Err(StoreError::Unreachable {
                    url: url.to_string(),
                    reason: format!("transfer ended after {received} of {} bytes", meta.size),
                });
            }
            Ok(meta)
        });
        match answer {
            Ok(meta) => return Ok(meta),
            Err(err @ StoreError::Unreachable { .. }) => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| stalled(location, "answer")))
}

/// Bytes `range` of the object (a ranged GET), retried like a whole GET when the
/// transfer is cut; fewer bytes than asked (the object is shorter) is an error. `None`
/// when the server answers with the whole object instead (it ignores `Range`, as Python's
/// `http.server` and many small static servers do).
pub(super) fn get_range(
    location: &Location,
    range: std::ops::Range<u64>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let store = location.store()?;
    let url = location.url();
    let wanted = range.end - range.start;
    let mut last = None;
    for _ in 0..BODY_ATTEMPTS {
        let answer = block_on(location, async {
            match tokio::time::timeout(STALL, store.get_range(location.key(), range.clone()))
                .await
                .map_err(|_| stalled(location, "answer"))?
            {
                Err(object_store::Error::NotSupported { .. }) => {
                    no_ranges_from(location);
                    Ok(None)
                }
                answer => answer.map(Some).map_err(|e| classify(location, e)),
            }
        });
        match answer {
            // "Not Implemented" to a Range header: a server without ranges that says so.
            Err(StoreError::Answered { status: 501, .. }) => {
                no_ranges_from(location);
                return Ok(None);
            }
            Ok(None) => return Ok(None),
            Ok(Some(bytes)) if bytes.len() as u64 == wanted => return Ok(Some(bytes.to_vec())),
            Ok(Some(bytes)) => {
                return Err(StoreError::Invalid {
                    url: url.to_string(),
                    reason: format!(
                        "asked for bytes {}..{}, got {}: the object is shorter",
                        range.start,
                        range.end,
                        bytes.len()
                    ),
                })
            }
            Err(err @ StoreError::Unreachable { .. }) => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| stalled(location, "answer")))
}

/// Roots of the stores (hosts) found to answer no byte ranges.
fn no_ranges() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static ROOTS: OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    ROOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether the location's server was found to answer ranged GETs with whole objects: its
/// objects are then fetched whole, without trying a range first.
pub(super) fn answers_no_ranges(location: &Location) -> bool {
    no_ranges().contains(location.server())
}

fn no_ranges_from(location: &Location) {
    if no_ranges().insert(location.server().to_string()) {
        log::warn!(
            "{}: the server answers no byte ranges; its objects are fetched whole (and must \
             fit the object cache)",
            location.server()
        );
    }
}

/// Writes `bytes` as the object (a PUT, retried by the store's client on failures).
pub(super) fn put(location: &Location, bytes: Vec<u8>) -> Result<(), StoreError> {
    let store = location.store()?;
    block_on(location, async {
        tokio::time::timeout(STALL, store.put(location.key(), bytes.into()))
            .await
            .map_err(|_| stalled(location, "answer"))?
            .map(|_| ())
            .map_err(|e| classify(location, e))
    })
}

fn write_failed(url: &str, err: &std::io::Error) -> StoreError {
    StoreError::Local {
        url: url.to_string(),
        reason: format!("cannot store the fetched bytes locally: {err}"),
    }
}

/// Every object under `location` taken as a prefix, as URLs in lexical order.
pub(super) fn list(location: &Location) -> Result<Vec<String>, StoreError> {
    if location.with_query() {
        return Err(StoreError::Invalid {
            url: location.url().to_string(),
            reason: "a URL with a query string names one object; it cannot be listed".into(),
        });
    }
    let store = location.store()?;
    let prefix = location.key();
    let metas = block_on(location, async {
        let mut listing = store.list(Some(prefix));
        let mut metas = Vec::new();
        loop {
            match tokio::time::timeout(STALL, listing.next()).await {
                Err(_) => return Err(stalled(location, "listing")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(classify(location, e)),
                Ok(Some(Ok(meta))) => metas.push(meta),
            }
        }
        Ok(metas)
    })?;
    let mut urls: Vec<String> = metas
        .iter()
        .map(|meta| location.sibling(&meta.location))
        .collect();
    urls.sort();
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_from_object_store_error_text() {
        let text = "Generic HTTP error: Error performing GET http://h/a.wav in 3ms - Server \
                    returned non-2xx status code: 501 Not Implemented: ";
        assert_eq!(answered_status(text), Some(501));
        assert_eq!(
            answered_status("error sending request: connection refused"),
            None
        );
        assert_eq!(answered_status("status code: 2"), None);
    }
}
