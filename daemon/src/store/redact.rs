//! URLs as people see them: the one display form of a URL (or of any text that quotes
//! URLs) used wherever one reaches an error message, a log line or a progress line.
//!
//! A URL may carry credentials: a password (`https://user:pass@host/a.wav`) or a pre-signed
//! URL's signature and token in its query. Shown as written they end up in CI logs, bug
//! reports and shared notebooks, so the password and those query values read `***`; the
//! scheme, host, path, fragment (a shard's member) and the other parameters stay, so the
//! user can still tell which object failed. What is requested over the wire, and what is
//! written as data (a manifest's `audio_filepath`), is never this form.

use std::borrow::Cow;
use std::path::Path;

/// What a hidden secret reads as.
const HIDDEN: &str = "***";

/// Query parameters whose values are secrets (names compared case-insensitively): AWS and
/// GCS pre-signed URLs, Azure SAS tokens (`sig`), and the common generic names.
const SECRET_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sig",
    "token",
    "access_token",
    "key",
    "signature",
    "password",
    "secret",
];

/// `text` (a URL, a path, or a message quoting URLs) with every URL's password and secret
/// query values replaced by `***`. Text without them is returned as is.
pub fn redacted(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let passwordless = hide_passwords(text);
    match hide_secret_params(&passwordless) {
        Cow::Borrowed(_) => passwordless,
        Cow::Owned(hidden) => Cow::Owned(hidden),
    }
}

/// A path (which may hold a URL) in its display form: see [`redacted`].
pub fn shown(path: &Path) -> String {
    redacted(&path.to_string_lossy()).into_owned()
}

/// Whether `c` may appear in a URL's authority (`user:pass@host:port`); anything else
/// (`/`, `?`, `#`, white space, quotes, brackets of the surrounding text) ends it.
fn in_authority(c: char) -> bool {
    !matches!(
        c,
        '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']' | '`'
    ) && !c.is_whitespace()
}

/// Every `scheme://user:password@` with the password hidden (the user name stays: it tells
/// which account was used).
fn hide_passwords(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..]
            .find(|c: char| !in_authority(c))
            .map_or(text.len(), |i| start + i);
        let authority = &text[start..end];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                out.push_str(&text[done..start + colon + 1]);
                out.push_str(HIDDEN);
                done = start + at;
            }
        }
        from = end.max(start);
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

/// Whether `c` ends a query parameter's value (the next parameter, the fragment, or the
/// end of the URL in the surrounding text).
fn ends_value(c: char) -> bool {
    matches!(
        c,
        '&' | '#' | '"' | '\'' | '<' | '>' | ')' | ']' | '`' | ';'
    ) || c.is_whitespace()
}

/// Every `?NAME=VALUE` or `&NAME=VALUE` whose NAME is a secret, with VALUE hidden.
fn hide_secret_params(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    for (at, _) in text.match_indices(['?', '&']) {
        let name_start = at + 1;
        if name_start < done || !in_url_query(text, at) {
            continue;
        }
        let rest = &text[name_start..];
        let Some(eq) = rest.find('=') else { continue };
        let name = &rest[..eq];
        if name.contains(ends_value) || !is_secret(name) {
            continue;
        }
        let value_start = name_start + eq + 1;
        let value_end = text[value_start..]
            .find(ends_value)
            .map_or(text.len(), |i| value_start + i);
        if value_end == value_start {
            continue;
        }
        out.push_str(&text[done..value_start]);
        out.push_str(HIDDEN);
        done = value_end;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

/// Whether the `?` or `&` at byte `at` is in a URL's query: the word it ends (the text
/// since the last white space, quote or bracket) holds a `://` and a `?`. A local file
/// named `a&key=1.wav` is shown as it is.
fn in_url_query(text: &str, at: usize) -> bool {
    let word = text[..=at]
        .rsplit(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '(' | '[' | '`'))
        .next()
        .unwrap_or("");
    word.contains("://") && word.contains('?')
}

/// Whether a parameter name (as written, perhaps percent-encoded) names a secret.
fn is_secret(name: &str) -> bool {
    let decoded = percent_decoded(name);
    SECRET_PARAMS
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
}

fn percent_decoded(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("{text}=").as_bytes())
        .next()
        .map(|(name, _)| name.into_owned().into_bytes())
        .unwrap_or_default();
    Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_of_the_url_kept() {
        assert_eq!(
            redacted("https://user:s3cret@host:8080/dir/a.wav"),
            "https://user:***@host:8080/dir/a.wav"
        );
        // A password may hold '@' (unescaped by careless writers): the last '@' ends it.
        assert_eq!(redacted("http://u:p@ss@h/a.wav"), "http://u:***@h/a.wav");
        // A user name alone is no secret; neither is an '@' in the path.
        assert_eq!(
            redacted("https://user@host/a.wav"),
            "https://user@host/a.wav"
        );
        assert_eq!(redacted("s3://b/x@y:z.wav"), "s3://b/x@y:z.wav");
        assert!(matches!(redacted("/data/a.wav"), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_query_values_are_hidden_whatever_their_case() {
        let url = "https://b.s3.amazonaws.com/d/a.wav?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F1\
                   &X-Amz-Signature=abc123&X-Amz-Security-Token=tok&x-amz-expires=60";
        assert_eq!(
            redacted(url),
            "https://b.s3.amazonaws.com/d/a.wav?X-Amz-Algorithm=AWS4&X-Amz-Credential=***\
             &X-Amz-Signature=***&X-Amz-Security-Token=***&x-amz-expires=60"
        );
        assert_eq!(
            redacted("https://acct.blob.core.windows.net/c/a.wav?sv=2022&SIG=zz%3D&se=1"),
            "https://acct.blob.core.windows.net/c/a.wav?sv=2022&SIG=***&se=1"
        );
        assert_eq!(
            redacted("https://h/a.wav?X-Goog-Signature=1&X-Goog-Credential=2&download=1"),
            "https://h/a.wav?X-Goog-Signature=***&X-Goog-Credential=***&download=1"
        );
        for name in [
            "token",
            "access_token",
            "key",
            "signature",
            "password",
            "Secret",
        ] {
            assert_eq!(
                redacted(&format!("https://h/a.wav?{name}=v&n=2")),
                format!("https://h/a.wav?{name}=***&n=2")
            );
        }
        // Names that merely contain a secret's name are not secrets.
        assert_eq!(
            redacted("https://h/a.wav?monkey=1"),
            "https://h/a.wav?monkey=1"
        );
    }

    #[test]
    fn urls_quoted_in_messages_are_hidden_and_members_kept() {
        let message = "https://u:pw@h/s-0.tar?sig=abc&n=1#k/a.flac: access denied: Error \
                       performing GET https://u:pw@h/s-0.tar?sig=abc&n=1 in 2ms (status 403)";
        assert_eq!(
            redacted(message),
            "https://u:***@h/s-0.tar?sig=***&n=1#k/a.flac: access denied: Error performing \
             GET https://u:***@h/s-0.tar?sig=***&n=1 in 2ms (status 403)"
        );
        assert_eq!(
            redacted("error sending request for url (http://h/a.wav?token=t1)"),
            "error sending request for url (http://h/a.wav?token=***)"
        );
        assert_eq!(
            shown(Path::new("http://a:b@h/x.wav")),
            "http://a:***@h/x.wav".to_string()
        );
    }

    #[test]
    fn local_names_that_look_like_queries_are_shown_as_they_are() {
        assert!(matches!(redacted("/data/a&key=1.wav"), Cow::Borrowed(_)));
        assert!(matches!(
            redacted("/d/x?token=2.wav: not found"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            redacted("/d/b&sig=1.wav and s3://b/c.wav?sig=2 (https://h/x?a=1&token=3)"),
            "/d/b&sig=1.wav and s3://b/c.wav?sig=*** (https://h/x?a=1&token=***)"
        );
    }
}
