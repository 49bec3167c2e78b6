//! `file:` URLs (RFC 8089) as the local paths they name: `file:///data/a%20b.wav` is
//! `/data/a b.wav`. Tools that hand out URIs (fsspec, Hugging Face datasets, Lhotse, a
//! browser's copy of a path) write local files this way; read as a path it would be a
//! relative `file:` directory that never exists.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::store::StoreError;

/// Whether `s` is a `file:` URL (scheme compared case-insensitively).
pub fn is_file_url(s: &str) -> bool {
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("file:"))
}

/// The local path a `file:` URL names, percent-decoded; `None` for anything else. The host
/// must be empty or `localhost`: another machine's file is refused, never read as a local
/// path. A fragment (`file:///d/s.tar#utt.flac`, a shard's member) stays as written.
pub fn file_url_path(s: &str) -> Option<Result<PathBuf, StoreError>> {
    if !is_file_url(s) {
        return None;
    }
    let invalid = |reason: &str| StoreError::Invalid {
        url: s.to_string(),
        reason: reason.to_string(),
    };
    let rest = &s[5..];
    let (body, fragment) = match rest.split_once('#') {
        Some((body, fragment)) => (body, Some(fragment)),
        None => (rest, None),
    };
    if body.contains('?') {
        return Some(Err(invalid(
            "a file: URL takes no query string (write '?' in a name as %3F)",
        )));
    }
    let path = match body.strip_prefix("//") {
        Some(authority_and_path) => {
            let (host, path) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Some(Err(invalid(&format!(
                    "names a file on host {host:?}; only local files are read \
                     (file:///PATH or file://localhost/PATH)"
                ))));
            }
            path
        }
        // `file:/data/a.wav`, the short form RFC 8089 allows.
        None => body,
    };
    if !path.starts_with('/') {
        return Some(Err(invalid(
            "a file: URL names an absolute path (file:///PATH)",
        )));
    }
    let mut bytes: Vec<u8> = percent_decode(path).into_owned();
    if let Some(fragment) = fragment {
        bytes.push(b'#');
        bytes.extend_from_slice(fragment.as_bytes());
    }
    use std::os::unix::ffi::OsStringExt;
    Some(Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes))))
}

/// `s` as the daemon reads it: a `file:` URL as its local path, anything else (a path, an
/// object URL) unchanged.
pub fn local_form(s: &str) -> Result<Cow<'_, str>, StoreError> {
    match file_url_path(s) {
        None => Ok(Cow::Borrowed(s)),
        Some(path) => {
            let path = path?;
            match path.into_os_string().into_string() {
                Ok(text) => Ok(Cow::Owned(text)),
                Err(_) => Err(StoreError::Invalid {
                    url: s.to_string(),
                    reason: "names a path that is not UTF-8 text".into(),
                }),
            }
        }
    }
}

/// `%XX` escapes decoded to their bytes; a `%` not followed by two hex digits stays.
fn percent_decode(text: &str) -> Cow<'_, [u8]> {
    if !text.contains('%') {
        return Cow::Borrowed(text.as_bytes());
    }
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if raw[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn file_urls_name_local_paths() {
        let path = |s: &str| file_url_path(s).map(|r| r.ok());
        assert_eq!(
            path("file:///data/a%20b.wav"),
            Some(Some(PathBuf::from("/data/a b.wav")))
        );
        assert_eq!(
            path("FILE://localhost/data/x.flac"),
            Some(Some(PathBuf::from("/data/x.flac")))
        );
        assert_eq!(
            path("file:/data/x.flac"),
            Some(Some(PathBuf::from("/data/x.flac")))
        );
        assert_eq!(
            path("file:///d/s-%7B0..1%7D.tar#utt%201.flac"),
            Some(Some(PathBuf::from("/d/s-{0..1}.tar#utt%201.flac")))
        );
        assert_eq!(
            path("file:///d/100%.wav"),
            Some(Some(PathBuf::from("/d/100%.wav")))
        );
        assert_eq!(path("/data/file:///x.wav"), None);
        assert_eq!(path("s3://b/a.wav"), None);
        assert_eq!(
            local_form("file:///d/%C3%A9.wav").unwrap(),
            Path::new("/d/é.wav").to_str().unwrap()
        );
        assert_eq!(local_form("rel/a.wav").unwrap(), "rel/a.wav");
    }

    #[test]
    fn other_hosts_and_relative_file_urls_are_refused() {
        let err = local_form("file://nas01/share/a.wav").unwrap_err();
        assert!(err.to_string().contains("on host \"nas01\""), "{err}");
        assert!(local_form("file:a.wav").is_err());
        assert!(local_form("file:///a.wav?x=1").is_err());
    }
}
