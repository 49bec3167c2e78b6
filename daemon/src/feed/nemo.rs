//! NeMo tarred audio as a dataset: the tarred manifest (JSONL: `audio_filepath` — the
//! member's name —, `duration`, `text`, optional `offset`, `shard_id`) and its tars
//! (`audio_{0..127}.tar`, or NeMo's `audio__OP_0..127_CL_.tar`), local or remote. Each
//! manifest line is one item; durations come from the manifest, not the audio.

use std::collections::HashMap;
use std::path::Path;

use crate::feed::item::ItemRange;
use crate::feed::manifest::{
    assign_labels, manifest_text, ManifestError, RawLabel, Resolved, Row, TEXT_FIELDS,
};
use crate::feed::webdataset::{expand_braces, index_all, json_label};
use crate::store::tar as shards;

/// `sources`: the tarred manifest, then the tar paths or patterns (in shard order).
/// `label_field` names a manifest field, as for manifests.
///
/// A line's `shard_id` names its tar: by the number in the tar's name where every tar is
/// named as NeMo names them (`audio_3.tar` holds shard 3), else by position in the list.
/// Given some of a dataset's numbered tars (one Ray read task's shard, or NeMo's
/// "scatter" of tars over ranks), the lines of the other shards are left out.
pub fn resolve(sources: &[String], label_field: Option<&str>) -> Result<Resolved, ManifestError> {
    let Some((manifest, patterns)) = sources.split_first().filter(|(_, p)| !p.is_empty()) else {
        return Err(ManifestError::new(
            "a NeMo tarred dataset needs its manifest, then its tar files".into(),
        ));
    };
    let mut tars = Vec::new();
    for pattern in patterns {
        tars.extend(expand_braces(
            &pattern.replace("_OP_", "{").replace("_CL_", "}"),
        )?);
    }
    let field = label_field.unwrap_or("label");
    let text_field = TEXT_FIELDS.contains(&field);
    let text = manifest_text(Path::new(manifest))?;
    let mut rows = Vec::new();
    let mut groups = Vec::new();
    let mut ranges = Vec::new();
    let mut durations = Vec::new();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| ManifestError::new(format!("{manifest}:{}: invalid JSON: {e}", n + 1)))?;
        entries.push((n, entry));
    }
    // With a `shard_id` on every line the tars are not opened here (a remote dataset is not
    // downloaded before its first batch): a tar is indexed when its first member is read.
    // Only lines without one need every tar's index, to find their member.
    let by_name = if entries.iter().all(|(_, e)| shard_id(e).is_some()) {
        HashMap::new()
    } else {
        members_by_name(&tars)
    };
    // Numbers in the tars' names count only where the manifest uses them all: a dataset
    // named from 1 while its shard ids start at 0 is read by position.
    let ids: std::collections::HashSet<u64> =
        entries.iter().filter_map(|(_, e)| shard_id(e)).collect();
    let numbered = shard_numbers(&tars).filter(|numbers| numbers.keys().all(|k| ids.contains(k)));
    let mut left_out = 0usize;
    for (n, entry) in &entries {
        let at = || format!("{manifest}:{}", n + 1);
        let name = entry
            .get("audio_filepath")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ManifestError::new(format!("{}: no \"audio_filepath\" field", at())))?;
        let shard = match shard_id(entry) {
            Some(id) => match &numbered {
                Some(numbers) => match numbers.get(&id) {
                    Some(&position) => position,
                    None => {
                        left_out += 1;
                        continue;
                    }
                },
                None => usize::try_from(id)
                    .ok()
                    .filter(|&i| i < tars.len())
                    .ok_or_else(|| {
                        ManifestError::new(format!(
                            "{}: shard_id {id} but {} tar files were given",
                            at(),
                            tars.len()
                        ))
                    })?,
            },
            None => match by_name
                .get(name)
                .or_else(|| by_name.get(shards::base_name(name)))
            {
                Some(&position) => position,
                // Some numbered tars given: the member is in one of the others.
                None if numbered.is_some() => {
                    left_out += 1;
                    continue;
                }
                None => 0,
            },
        };
        let offset = entry.get("offset").and_then(serde_json::Value::as_f64);
        let duration = entry.get("duration").and_then(serde_json::Value::as_f64);
        let label = json_label(Some(entry), field);
        let text = entry
            .get("text")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let (label, text) = match label {
            RawLabel::Name(t) if text_field => (RawLabel::None, Some(t)),
            label => (label, text),
        };
        rows.push(Row {
            path: shards::member_path(&tars[shard], name),
            label,
            text,
        });
        groups.push(shard as u32);
        // `duration` is the segment's length when an offset selects a segment.
        ranges.push(ItemRange {
            offset: offset.unwrap_or(0.0),
            duration: offset.and(duration),
        });
        durations.push(duration);
    }
    if rows.is_empty() {
        let why = if left_out > 0 {
            format!("none of its {left_out} lines belongs to the tar files given")
        } else {
            "manifest has no items".to_string()
        };
        return Err(ManifestError::new(format!("{manifest}: {why}")));
    }
    if left_out > 0 {
        log::info!("{manifest}: {left_out} lines belong to shards not given; left out");
    }
    let mut resolved = assign_labels(rows, false)?;
    resolved.groups = Some(groups);
    resolved.ranges = Some(ranges);
    resolved.durations = Some(durations);
    Ok(resolved)
}

/// Which tar (by position) holds each member name, from every tar's index (fetching remote
/// tars); a tar that cannot be read is logged, its lines fail when read.
fn members_by_name(tars: &[String]) -> HashMap<String, usize> {
    let mut by_name = HashMap::new();
    for (i, index) in index_all(tars).iter().enumerate() {
        match index {
            Ok(index) => {
                for member in &index.members {
                    by_name.entry(member.name.clone()).or_insert(i);
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }
    by_name
}

fn shard_id(entry: &serde_json::Value) -> Option<u64> {
    entry.get("shard_id").and_then(serde_json::Value::as_u64)
}

/// The shard number in each tar's name (`audio_12.tar` → 12) when every tar has a distinct
/// one, as NeMo names them: shard number → position in `tars`.
fn shard_numbers(tars: &[String]) -> Option<HashMap<u64, usize>> {
    let mut numbers = HashMap::with_capacity(tars.len());
    for (position, tar) in tars.iter().enumerate() {
        let name = tar.rsplit('/').next().unwrap_or(tar);
        let stem = name.strip_suffix(".tar")?;
        let digits = stem.rsplit('_').next()?;
        let number: u64 = digits.parse().ok()?;
        if numbers.insert(number, position).is_some() {
            return None;
        }
    }
    Some(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_names_give_shard_numbers_only_when_each_has_its_own() {
        let tars = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let numbers = shard_numbers(&tars(&["s3://b/audio_3.tar", "/d/audio_12.tar"]));
        assert_eq!(numbers, Some(HashMap::from([(3, 0), (12, 1)])));
        assert_eq!(shard_numbers(&tars(&["/d/shard-000.tar"])), None);
        assert_eq!(
            shard_numbers(&tars(&["/a/audio_1.tar", "/b/audio_1.tar"])),
            None
        );
    }
}
