//! Lhotse Shar as a dataset: `cuts.NNNNNN.jsonl(.gz)` read in lockstep with
//! `recording.NNNNNN.tar`, whose members are the cuts' audio (`CUT_ID.flac`, …) — local
//! directories or object prefixes. Each cut is one item: its audio member, its start and
//! duration within it, its supervisions' text, a label from its custom fields or its first
//! supervision. Durations come from the cuts, not the audio.

use std::collections::BTreeMap;
use std::path::Path;

use crate::feed::item::ItemRange;
use crate::feed::manifest::{
    assign_labels, list_files, manifest_text, ManifestError, RawLabel, Resolved, Row, TEXT_FIELDS,
};
use crate::feed::webdataset::json_label;
use crate::store::tar as shards;

/// The shard number in `cuts.000012.jsonl.gz` or `recording.000012.tar`.
fn shard_number(name: &str, field: &str, extensions: &[&str]) -> Option<u32> {
    let rest = name.strip_prefix(field)?.strip_prefix('.')?;
    let (number, ext) = rest.split_once('.')?;
    extensions.contains(&ext).then(|| number.parse().ok())?
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One Shar directory's shards: (cuts manifest, recording tar) by shard number. A source
/// that is one `cuts.N.jsonl(.gz)` file is that one shard (a Ray read task's).
fn shards_of(dir: &str) -> Result<Vec<(String, String)>, ManifestError> {
    if let Some(n) = shard_number(file_name(dir), "cuts", &["jsonl", "jsonl.gz"]) {
        let parent = dir.rsplit_once('/').map_or(".", |(parent, _)| parent);
        return Ok(vec![(
            dir.to_string(),
            format!("{parent}/recording.{n:06}.tar"),
        )]);
    }
    let files = list_files(dir)?;
    let mut cuts = BTreeMap::new();
    let mut recordings = BTreeMap::new();
    for file in &files {
        let name = file_name(file);
        if let Some(n) = shard_number(name, "cuts", &["jsonl", "jsonl.gz"]) {
            cuts.insert(n, file.clone());
        } else if let Some(n) = shard_number(name, "recording", &["tar"]) {
            recordings.insert(n, file.clone());
        }
    }
    if cuts.is_empty() {
        return Err(ManifestError::new(format!(
            "{dir}: no cuts.NNNNNN.jsonl.gz: not a Lhotse Shar directory"
        )));
    }
    Ok(cuts
        .into_iter()
        .map(|(n, cuts)| {
            // A missing tar is named as Lhotse would write it, and fails per item.
            let tar = recordings
                .remove(&n)
                .unwrap_or_else(|| format!("{}/recording.{n:06}.tar", dir.trim_end_matches('/')));
            (cuts, tar)
        })
        .collect())
}

/// Read the Shar directories `sources`. `label_field` is a key of the cuts' `custom`
/// fields, of their first supervision (`speaker`, `language`, …) or of the cut itself;
/// text is the supervisions' text.
pub fn resolve(sources: &[String], label_field: Option<&str>) -> Result<Resolved, ManifestError> {
    let mut pairs = Vec::new();
    for dir in sources {
        pairs.extend(shards_of(dir)?);
    }
    // The recording tars are not opened here: the cuts give each shard's items, their
    // ranges and durations, and a tar is indexed (fetched, when remote) when its first
    // member is read — a stream starts without downloading the dataset. A member is named
    // `ID.*`: the cut's audio whatever its extension (`store::tar`, `ShardIndex::member`).
    let field = label_field.unwrap_or("");
    let text_field = TEXT_FIELDS.contains(&field);
    let mut rows = Vec::new();
    let mut groups = Vec::new();
    let mut ranges = Vec::new();
    let mut durations = Vec::new();
    for (shard_no, (cuts_path, tar)) in pairs.iter().enumerate() {
        let text = manifest_text(Path::new(cuts_path))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let cut: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| ManifestError::new(format!("{cuts_path}:{}: {e}", n + 1)))?;
            let id = cut.get("id").and_then(|v| v.as_str()).ok_or_else(|| {
                ManifestError::new(format!("{cuts_path}:{}: cut without an id", n + 1))
            })?;
            let start = cut
                .get("start")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let duration = cut.get("duration").and_then(serde_json::Value::as_f64);
            let supervisions = cut.get("supervisions").and_then(|s| s.as_array());
            let texts: Vec<&str> = supervisions
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("text").and_then(|t| t.as_str()))
                .collect();
            let label = [
                cut.get("custom"),
                supervisions.and_then(|s| s.first()),
                Some(&cut),
            ]
            .into_iter()
            .map(|source| json_label(source, field))
            .find(|l| !matches!(l, RawLabel::None))
            .unwrap_or(RawLabel::None);
            let (label, text) = match label {
                RawLabel::Name(t) if text_field => (RawLabel::None, Some(t)),
                label => (label, (!texts.is_empty()).then(|| texts.join(" "))),
            };
            rows.push(Row {
                path: shards::member_path(tar, &shards::any_audio_member(id)),
                label,
                text,
            });
            groups.push(shard_no as u32);
            ranges.push(ItemRange {
                offset: start,
                duration,
            });
            durations.push(duration);
        }
    }
    let mut resolved = assign_labels(rows, false)?;
    resolved.groups = Some(groups);
    resolved.ranges = Some(ranges);
    resolved.durations = Some(durations);
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_numbers_come_from_lhotse_names() {
        assert_eq!(
            shard_number("cuts.000012.jsonl.gz", "cuts", &["jsonl", "jsonl.gz"]),
            Some(12)
        );
        assert_eq!(
            shard_number("cuts.000003.jsonl", "cuts", &["jsonl", "jsonl.gz"]),
            Some(3)
        );
        assert_eq!(
            shard_number("recording.000001.tar", "recording", &["tar"]),
            Some(1)
        );
        assert_eq!(
            shard_number("features.000001.tar", "recording", &["tar"]),
            None
        );
        assert_eq!(shard_number("cuts.x.jsonl", "cuts", &["jsonl"]), None);
    }
}
