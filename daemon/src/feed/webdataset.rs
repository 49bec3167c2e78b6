//! WebDataset shards as a dataset: tar shards named in brace notation
//! (`train-{000000..000127}.tar`), local or remote, whose members group into samples by key
//! (`utt17.flac`, `utt17.txt`, `utt17.json` are one sample). Each sample is one item: its
//! audio member's path (`SHARD#MEMBER`, see `store::tar`), its label and text from the
//! sample's other members. Items remember their shard, for the shard-aware order (see
//! `sampler::sharded_batches`).

use std::collections::HashMap;

use crate::decode::AUDIO_EXTENSIONS;
use crate::feed::manifest::{assign_labels, ManifestError, RawLabel, Resolved, Row, TEXT_FIELDS};
use crate::store::tar::{self as shards, ShardIndex, TarMember};
use crate::store::StoreError;

/// Most shards one pattern may name (a typo like `{0..99999999}` is refused, not expanded).
pub(crate) const MAX_SHARDS: usize = 1_000_000;

/// `a-{000..002}.tar` → `a-000.tar a-001.tar a-002.tar`; `{x,y}` lists; several braces
/// multiply. Numeric ranges keep the width of their first bound's zero padding.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, ManifestError> {
    let bad = |why: &str| ManifestError::new(format!("{pattern}: {why}"));
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| bad("unclosed '{'"))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices: Vec<String> = if let Some((from, to)) = body.split_once("..") {
        let (a, b) = (from.trim(), to.trim());
        let first: u64 = a.parse().map_err(|_| bad("a range needs whole numbers"))?;
        let last: u64 = b.parse().map_err(|_| bad("a range needs whole numbers"))?;
        if last < first {
            return Err(bad("a range must not run backwards"));
        }
        if last - first >= MAX_SHARDS as u64 {
            return Err(bad("the range names too many shards"));
        }
        let width = if a.starts_with('0') { a.len() } else { 0 };
        (first..=last).map(|n| format!("{n:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let rests = expand_braces(tail)?;
    let mut out = Vec::with_capacity(choices.len() * rests.len());
    for choice in &choices {
        for rest in &rests {
            out.push(format!("{head}{choice}{rest}"));
        }
        if out.len() > MAX_SHARDS {
            return Err(bad("the pattern names too many shards"));
        }
    }
    Ok(out)
}

/// The tar shards under `source` in name order, when it is a directory (a local one, or a
/// prefix ending in `/`): every `.tar`, `.tar.gz` and `.tgz` below it; `None` for a shard
/// path or pattern. Shards of another format are an error (Note [Directories of shards]).
pub fn shards_under(source: &str) -> Result<Option<Vec<String>>, ManifestError> {
    let listed = match crate::store::url_of(std::path::Path::new(source)) {
        Some(url) if url.ends_with('/') => crate::feed::manifest::listed_below(url)?,
        Some(_) => return Ok(None),
        None if std::path::Path::new(source).is_dir() => {
            crate::feed::manifest::files_below(std::path::Path::new(source))?
                .into_iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        }
        None => return Ok(None),
    };
    let mut shards: Vec<String> = listed.into_iter().filter(|p| is_shard(p)).collect();
    shards.sort();
    if !shards.is_empty() {
        other_format(source, &shards)?;
    }
    Ok(Some(shards))
}

/// Note [Directories of shards]: a directory given as a dataset (or as a WebDataset source)
/// that holds tar shards and no audio files is read as the WebDataset of its shards, in
/// name order, with the default fields. Shards that look like another format's, whose
/// labels live outside the tars (Lhotse Shar's `recording.*.tar`, NeMo's `audio_N.tar`),
/// are an error naming the reader to use: read as a WebDataset they would lose their labels
/// without a word.
fn other_format(source: &str, shards: &[String]) -> Result<(), ManifestError> {
    let names: Vec<&str> = shards.iter().map(|s| shards::base_name(s)).collect();
    let dir = source.trim_end_matches('/');
    if names.iter().any(|n| n.starts_with("recording.")) {
        return Err(ManifestError::new(format!(
            "{source}: its recording.*.tar shards look like Lhotse Shar: read them with \
             AudioDataLoader.from_shar(\"{dir}\")"
        )));
    }
    let nemo = |n: &&str| {
        n.strip_prefix("audio_")
            .and_then(|rest| rest.strip_suffix(".tar"))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    };
    if names.iter().all(nemo) {
        return Err(ManifestError::new(format!(
            "{source}: its audio_N.tar shards look like NeMo tarred audio: read them with \
             AudioDataLoader.from_nemo(MANIFEST, \"{dir}/audio_{{0..{}}}.tar\")",
            names.len() - 1
        )));
    }
    Ok(())
}

/// Whether `source` is a local path with shell wildcards that names no file (a glob the
/// shell did not expand, as in a quoted `"shards/*.tar"`).
fn is_unexpanded_glob(source: &str) -> bool {
    crate::store::url_of(std::path::Path::new(source)).is_none()
        && source.contains(['*', '?'])
        && !std::path::Path::new(source).exists()
}

/// Whether `path` names a tar shard (an index sidecar's directory is not the dataset's).
pub(crate) fn is_shard(path: &str) -> bool {
    let name = path.to_ascii_lowercase();
    !name.contains("/.audiodecode-index/")
        && [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// WebDataset's split of a member name into sample key and field: the directory plus the
/// basename up to its first dot, and the rest (`dir/utt.seg1.flac` → `dir/utt`,
/// `seg1.flac`). Hidden members (macOS's `._utt.flac`, Note [Hidden files]) are no sample.
fn key_and_field(name: &str) -> Option<(&str, &str)> {
    if crate::feed::manifest::has_hidden_part(name) {
        return None;
    }
    let base_at = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_at..].find('.')? + base_at;
    Some((&name[..dot], &name[dot + 1..]))
}

fn is_audio_field(field: &str) -> bool {
    let ext = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    AUDIO_EXTENSIONS.contains(&ext.as_str())
}

/// Read the WebDataset shards `pattern` names. `label_field` is the member field (an
/// extension such as `cls` or `txt`) or a key of the sample's `.json` member that holds the
/// label; by default `cls`. Text comes from a `txt`/`text`/`transcript` member or the JSON's
/// `text`. Returns the items and each item's shard number.
pub fn resolve(sources: &[String], label_field: Option<&str>) -> Result<Resolved, ManifestError> {
    let mut shards = Vec::new();
    for source in sources {
        match shards_under(source)? {
            Some(listed) if listed.is_empty() => {
                return Err(ManifestError::new(format!(
                    "{source}: no tar shards in the directory"
                )));
            }
            Some(listed) => shards.extend(listed),
            None if is_unexpanded_glob(source) => {
                return Err(ManifestError::new(format!(
                    "{source}: no such shard; `*` and `?` are not expanded: name the shards \
                     with braces (train-{{000000..000063}}.tar) or give their directory"
                )));
            }
            None => shards.extend(expand_braces(source)?),
        }
    }
    let pattern = sources.join(" ");
    let indexes = index_all(&shards);
    let field = label_field.unwrap_or("cls");
    let mut rows = Vec::new();
    let mut groups = Vec::new();
    let mut unreadable = Vec::new();
    for (shard_no, index) in indexes.into_iter().enumerate() {
        let index = match index {
            Ok(index) => index,
            Err(e) => {
                // A shard that cannot be read (missing, forbidden, not a tar) is one item
                // that fails with the reason, so `on_error` reports it like a bad file and
                // the other shards still train; it is an error only when no shard reads.
                unreadable.push(e.to_string());
                rows.push(failing_row(&shards[shard_no], ""));
                groups.push(shard_no as u32);
                continue;
            }
        };
        for sample in samples(&index) {
            let Some(audio) = sample.iter().find(|m| is_audio_field(m.1)) else {
                log::warn!(
                    "{}: sample {} has no audio member; skipped",
                    index.shard,
                    sample[0].0
                );
                continue;
            };
            let (label, text) = sample_labels(&index, &sample, field)?;
            rows.push(Row {
                path: shards::member_path(&index.shard, &audio.2.name),
                label,
                text,
            });
            groups.push(shard_no as u32);
        }
        if let Some(damage) = &index.damage {
            // The members the damage cost cannot be listed; the shard's loss is an item
            // that fails with the reason, so `on_error` reports it like any bad file.
            log::warn!("{}: tar archive {damage}", index.shard);
            rows.push(failing_row(&index.shard, DAMAGED_ARCHIVE));
            groups.push(shard_no as u32);
        }
    }
    if unreadable.len() == shards.len() {
        return Err(ManifestError::new(format!(
            "{pattern}: no shard could be read: {}",
            unreadable.join("; ")
        )));
    }
    if rows.len() == unreadable.len() {
        return Err(ManifestError::new(format!(
            "{pattern}: no audio samples in the shards"
        )));
    }
    let mut resolved = assign_labels(rows, false)?;
    resolved.groups = Some(groups);
    Ok(resolved)
}

/// Members grouped into samples by key, in the order of each sample's first member. Each
/// entry is (key, field, member). WebDataset groups consecutive members only, but a shard
/// made with `tar cf x.tar *.flac *.txt` holds every audio member before every transcript:
/// read WebDataset's way each transcript would be a sample without audio, and each audio
/// sample would lose its label. So a member joins the latest sample of its key unless that
/// sample has its field already (then it starts the key's next sample, as a repeated key
/// does in WebDataset).
fn samples(index: &ShardIndex) -> Vec<Vec<(&str, &str, &TarMember)>> {
    let mut out: Vec<Vec<(&str, &str, &TarMember)>> = Vec::new();
    let mut latest: HashMap<&str, usize> = HashMap::new();
    for member in &index.members {
        let Some((key, field)) = key_and_field(&member.name) else {
            continue;
        };
        match latest.get(key) {
            Some(&at) if out[at].iter().all(|m| m.1 != field) => {
                out[at].push((key, field, member));
            }
            _ => {
                latest.insert(key, out.len());
                out.push(vec![(key, field, member)]);
            }
        }
    }
    out
}

/// Largest label or text member read (a `.txt` of a book is not a transcript).
const MAX_LABEL_BYTES: u64 = 1 << 20;

fn sample_labels(
    index: &ShardIndex,
    sample: &[(&str, &str, &TarMember)],
    field: &str,
) -> Result<(RawLabel, Option<String>), ManifestError> {
    let read = |m: &TarMember| -> Result<String, ManifestError> {
        if m.size > MAX_LABEL_BYTES {
            return Err(ManifestError::new(format!(
                "{}: member {} is too large for a label ({} bytes)",
                index.shard, m.name, m.size
            )));
        }
        let bytes = shards::read_member(index, m).map_err(|e| ManifestError::new(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    };
    let member = |names: &[&str]| {
        sample
            .iter()
            .find(|(_, f, _)| names.contains(f))
            .map(|s| s.2)
    };
    let json: Option<serde_json::Value> = match member(&["json"]) {
        Some(m) => serde_json::from_str(&read(m)?).ok(),
        None => None,
    };
    let mut text = match member(&["txt", "text", "transcript"]) {
        Some(m) => Some(read(m)?),
        None => None,
    };
    if text.is_none() {
        text = json
            .as_ref()
            .and_then(|j| j.get("text"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    let is_text = TEXT_FIELDS.contains(&field) || field == "txt";
    let value = match member(&[field]) {
        Some(m) => {
            let value = read(m)?;
            match value.parse::<i64>() {
                Ok(i) => RawLabel::Int(i),
                Err(_) => RawLabel::Name(value),
            }
        }
        None => json_label(json.as_ref(), field),
    };
    // A transcript field labels with text, not a class.
    Ok(match value {
        RawLabel::Name(t) if is_text => (RawLabel::None, Some(t)),
        label => (label, text),
    })
}

/// The member name that stands for what a damaged archive lost.
pub(crate) const DAMAGED_ARCHIVE: &str = "(damaged archive)";

/// An item for what a shard lost (a member the damage cost, or the whole unreadable shard
/// with `member` empty): decoding it fails with the shard's reason, so `on_error` reports
/// it like any bad file and the other shards still train.
pub(crate) fn failing_row(shard: &str, member: &str) -> Row {
    Row {
        path: shards::member_path(shard, member),
        label: RawLabel::None,
        text: None,
    }
}

/// The label under `field` of a JSON object: an integer, or a name.
pub(crate) fn json_label(json: Option<&serde_json::Value>, field: &str) -> RawLabel {
    match json.and_then(|j| j.get(field)) {
        Some(v) if v.is_i64() => RawLabel::Int(v.as_i64().unwrap_or(-1)),
        Some(serde_json::Value::String(s)) => RawLabel::Name(s.clone()),
        _ => RawLabel::None,
    }
}

/// Every shard's index, several at once (remote shards are fetched to be indexed), in
/// shard order.
pub(crate) fn index_all(shards: &[String]) -> Vec<Result<std::sync::Arc<ShardIndex>, StoreError>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    // A shard that fails here is remembered for the stream's epoch (Note [Failed shards]):
    // its failing item does not ask for it again.
    let failures = shards::ShardFailures::current();
    let results: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..shards::INDEX_THREADS.min(shards.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    let mut index_rest = || loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(shard) = shards.get(i) else { break };
                        done.push((i, shards::index(shard)));
                    };
                    match &failures {
                        Some(failures) => shards::ShardFailures::within(failures, index_rest),
                        None => index_rest(),
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut indexes: Vec<Option<Result<_, StoreError>>> = (0..shards.len()).map(|_| None).collect();
    for (i, result) in results {
        indexes[i] = Some(result);
    }
    indexes
        .into_iter()
        .zip(shards)
        .map(|(index, shard)| {
            index.unwrap_or_else(|| {
                Err(StoreError::Unreachable {
                    url: shard.clone(),
                    reason: "its indexing thread failed".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_in_pattern_order() {
        assert_eq!(
            expand_braces("s-{000..002}.tar").unwrap(),
            vec!["s-000.tar", "s-001.tar", "s-002.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}/x-{1..2}.tar").unwrap(),
            vec!["a/x-1.tar", "a/x-2.tar", "b/x-1.tar", "b/x-2.tar"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), vec!["plain.tar"]);
        assert!(expand_braces("x-{3..1}.tar").is_err());
        assert!(expand_braces("x-{1..2.tar").is_err());
        assert!(expand_braces("x-{0..99999999}.tar").is_err());
    }

    #[test]
    fn keys_are_the_basename_up_to_its_first_dot() {
        assert_eq!(
            key_and_field("d.x/utt.seg1.flac"),
            Some(("d.x/utt", "seg1.flac"))
        );
        assert_eq!(key_and_field("utt17.txt"), Some(("utt17", "txt")));
        assert_eq!(key_and_field("README"), None);
        assert_eq!(key_and_field("./utt17.txt"), Some(("./utt17", "txt")));
        // Note [Hidden files]: macOS's AppleDouble companions and hidden directories.
        assert_eq!(key_and_field("._utt17.flac"), None);
        assert_eq!(key_and_field("d/._utt17.flac"), None);
        assert_eq!(key_and_field("__MACOSX/d/utt17.flac"), None);
        assert_eq!(key_and_field(".cache/utt17.flac"), None);
        assert!(is_audio_field("seg1.flac"));
        assert!(!is_audio_field("json"));
    }
}
