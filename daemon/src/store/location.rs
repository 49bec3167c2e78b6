//! A URL split into the store that serves it and the object's key, and the one client per
//! store (built once from the environment, then shared).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    S3,
    Gcs,
    Azure,
    Http,
}

/// The scheme of a URL the store reads, `None` for a local path.
pub(super) fn scheme_of(s: &str) -> Option<Scheme> {
    let (scheme, rest) = s.split_once("://")?;
    if rest.is_empty() {
        return None;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "s3" | "s3a" => Some(Scheme::S3),
        "gs" | "gcs" => Some(Scheme::Gcs),
        "az" | "azure" | "abfs" | "abfss" => Some(Scheme::Azure),
        "http" | "https" => Some(Scheme::Http),
        _ => None,
    }
}

/// One object: its URL as the user wrote it, the store's root URL and the key under it.
///
/// An `http(s)://` URL with a query string (a pre-signed S3 or GCS URL, a CDN token, a
/// `?download=1`) is one object whose URL is used exactly as written: its root is the whole
/// URL and its key empty, since object_store would drop the query from a key. Such a URL may
/// allow GET only (a signature covers the method), so its metadata comes from a GET too
/// (`fetch::head`), and it cannot be listed or have siblings (Note [Remote objects]).
#[derive(Clone, Debug)]
pub struct Location {
    url: String,
    scheme: Scheme,
    root: String,
    key: ObjectPath,
    /// The last part of the URL's path, decoded (names memory files and cache entries).
    name: String,
    with_query: bool,
}

impl Location {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::Invalid {
            url: url.to_string(),
            reason,
        };
        let scheme = scheme_of(url).ok_or_else(|| invalid("not an object URL".into()))?;
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("names no bucket or host".into()))?;
        if scheme != Scheme::Http && parsed.query().is_some() {
            return Err(invalid("object URLs take no query string".into()));
        }
        let path = ObjectPath::from_url_path(parsed.path())
            .map_err(|e| invalid(format!("not a valid object key: {e}")))?;
        let name = path.filename().unwrap_or("object").to_string();
        let with_query = parsed.query().is_some();
        let (root, key) = if with_query {
            (
                parsed[..url::Position::AfterQuery].to_string(),
                ObjectPath::default(),
            )
        } else {
            let root = match parsed.port() {
                Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
                None => format!("{}://{host}", parsed.scheme()),
            };
            (root, path)
        };
        Ok(Self {
            url: url.to_string(),
            scheme,
            root,
            key,
            name,
            with_query,
        })
    }

    /// Whether the URL carries a query string (used exactly as written; see the type).
    pub(super) fn with_query(&self) -> bool {
        self.with_query
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server (scheme, host and port) or bucket the object is in.
    pub(super) fn server(&self) -> &str {
        let after_scheme = self.root.find("://").map_or(0, |i| i + 3);
        let end = self.root[after_scheme..]
            .find('/')
            .map_or(self.root.len(), |i| after_scheme + i);
        &self.root[..end]
    }

    pub(super) fn key(&self) -> &ObjectPath {
        &self.key
    }

    /// The last part of the key (for names of memory files and cache entries).
    pub(super) fn key_name(&self) -> &str {
        &self.name
    }

    /// The URL of the object `key` in the same store.
    pub(super) fn sibling(&self, key: &ObjectPath) -> String {
        // Escaped where a URL would cut or decode the key: `a#1.wav`, `b?.wav`, `c%41.wav`.
        let escaped = key
            .as_ref()
            .replace('%', "%25")
            .replace('#', "%23")
            .replace('?', "%3F");
        format!("{}/{escaped}", self.root)
    }

    /// The client for this object's store (one per bucket or host, made on first use).
    pub(super) fn store(&self) -> Result<Arc<dyn ObjectStore>, StoreError> {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(&self.root) {
            return Ok(Arc::clone(store));
        }
        if self.with_query && stores.len() >= MAX_STORES {
            // A client per URL with a query: the map would grow with every file of a
            // dataset of signed URLs.
            stores.retain(|root, _| !root.contains('?'));
        }
        let store = self.build().map_err(|e| StoreError::Invalid {
            url: self.url.clone(),
            reason: format!("cannot set up a client for {}: {e}", self.root),
        })?;
        stores.insert(self.root.clone(), Arc::clone(&store));
        Ok(store)
    }

    fn build(&self) -> object_store::Result<Arc<dyn ObjectStore>> {
        // Every store is wrapped in a LimitStore: at most `max_requests` requests in flight.
        fn limited(store: impl ObjectStore) -> Arc<dyn ObjectStore> {
            Arc::new(object_store::limit::LimitStore::new(
                store,
                super::fetch::max_requests(),
            ))
        }
        let root = self.root.as_str();
        Ok(match self.scheme {
            Scheme::S3 => {
                // Every AWS_* setting applies (as `from_env`), over our client options; a
                // plain-http endpoint (a local S3-compatible server) is allowed as given.
                let plain_http = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .is_ok_and(|e| e.to_ascii_lowercase().starts_with("http://"));
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_client_options(client_options(plain_http))
                    .with_retry(retry());
                for (key, value) in std::env::vars() {
                    if let Some(key) = key.strip_prefix("AWS_") {
                        if let Ok(config) = format!("aws_{}", key.to_ascii_lowercase()).parse() {
                            builder = builder.with_config(config, value);
                        }
                    }
                }
                limited(builder.with_url(root).build()?)
            }
            Scheme::Gcs => limited(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_client_options(client_options(false))
                    .with_retry(retry())
                    .with_url(root)
                    .build()?,
            ),
            Scheme::Azure => limited(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_client_options(client_options(false))
                    .with_retry(retry())
                    .with_url(root)
                    .build()?,
            ),
            Scheme::Http => limited(
                object_store::http::HttpBuilder::new()
                    .with_client_options(client_options(root.starts_with("http://")))
                    .with_retry(retry())
                    .with_url(root)
                    .build()?,
            ),
        })
    }
}

/// Clients kept before those of URLs with a query (one per object) are dropped.
const MAX_STORES: usize = 256;

/// Bounded connects; no whole-request timeout (a large shard may take minutes), since the
/// fetch bounds the wait for each chunk instead.
fn client_options(allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout_disabled()
}

/// Transient failures (5xx, 429, resets before the body) are retried with exponential
/// backoff for up to a minute.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_and_paths_are_not_urls() {
        assert_eq!(scheme_of("s3://bucket/a.wav"), Some(Scheme::S3));
        assert_eq!(scheme_of("GS://bucket/a.wav"), Some(Scheme::Gcs));
        assert_eq!(scheme_of("az://container/a.wav"), Some(Scheme::Azure));
        assert_eq!(scheme_of("https://host/a.wav"), Some(Scheme::Http));
        assert_eq!(scheme_of("/data/s3://x"), None);
        assert_eq!(scheme_of("file.wav"), None);
        assert_eq!(scheme_of("ftp://host/a.wav"), None);
        assert_eq!(scheme_of("s3://"), None);
    }

    #[test]
    fn a_location_splits_into_root_and_key() {
        let l = Location::parse("s3://bucket/dir/a%20b.wav").unwrap();
        assert_eq!(l.root, "s3://bucket");
        assert_eq!(l.key.as_ref(), "dir/a b.wav");
        assert_eq!(l.key_name(), "a b.wav");
        let h = Location::parse("http://127.0.0.1:8080/x/y.flac").unwrap();
        assert_eq!(h.root, "http://127.0.0.1:8080");
        assert_eq!(h.server(), "http://127.0.0.1:8080");
        assert_eq!(h.key.as_ref(), "x/y.flac");
        assert!(matches!(
            Location::parse("s3:///key.wav"),
            Err(StoreError::Invalid { .. })
        ));
    }

    #[test]
    fn siblings_parse_back_to_their_keys() {
        let l = Location::parse("s3://bucket/dir/").unwrap();
        for key in ["d/a#1.wav", "d/b?.wav", "d/c%41 x+y.wav"] {
            let url = l.sibling(&ObjectPath::parse(key).unwrap());
            assert_eq!(Location::parse(&url).unwrap().key.as_ref(), key, "{url}");
        }
    }

    #[test]
    fn a_url_with_a_query_is_one_object_used_as_written() {
        let url = "https://b.s3.amazonaws.com/d/a%20b.wav?X-Amz-Signature=ab%2Fc&X-Amz-Expires=60";
        let l = Location::parse(&format!("{url}#fragment")).unwrap();
        assert!(l.with_query());
        assert_eq!(l.root, url);
        assert_eq!(l.server(), "https://b.s3.amazonaws.com");
        assert_eq!(l.key.as_ref(), "");
        assert_eq!(l.key_name(), "a b.wav");
        assert!(!Location::parse("https://h/a.wav").unwrap().with_query());
        assert!(matches!(
            Location::parse("s3://bucket/a.wav?versionId=3"),
            Err(StoreError::Invalid { .. })
        ));
    }
}
