//! Resolving a stream's dataset into items: explicit file lists, JSONL/CSV manifests and
//! directory trees.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use audiodecode_protocol::{Dataset, ItemInfo};

use crate::decode::AUDIO_EXTENSIONS;
use crate::feed::item::ItemRange;

/// Label fields whose string values are transcripts, not class names.
pub(crate) const TEXT_FIELDS: &[&str] = &["text", "transcript", "transcription", "sentence"];

/// The resolved dataset: items in dataset order, class names when labels were strings,
/// and for a sharded dataset each item's shard (the order keeps shards together).
#[derive(Debug, Default)]
pub struct Resolved {
    pub items: Vec<ItemInfo>,
    pub classes: Vec<String>,
    pub groups: Option<Vec<u32>>,
    /// Each item's part of its file, when the dataset states one.
    pub ranges: Option<Vec<ItemRange>>,
    /// Each item's duration as the dataset states it (`None` where it does not), so that
    /// bucketing and slot sizing need not read the audio.
    pub durations: Option<Vec<Option<f64>>>,
}

/// Why a dataset could not be resolved; URLs in it are shown without credentials.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::store::redacted(.0))]
pub struct ManifestError(String);

impl ManifestError {
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

/// A path as the daemon reads it: a `file:` URL as the local path it names (refused when it
/// names another host); paths and object URLs as written.
pub(crate) fn local_form(path: &str) -> Result<String, ManifestError> {
    crate::store::local_form(path)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| ManifestError(e.to_string()))
}

pub fn resolve(dataset: &Dataset) -> Result<Resolved, ManifestError> {
    match dataset {
        Dataset::Files { paths, labels } => {
            if let Some(labels) = labels {
                if labels.len() != paths.len() {
                    return Err(ManifestError(format!(
                        "{} labels for {} files",
                        labels.len(),
                        paths.len()
                    )));
                }
            }
            let items = paths
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    Ok(ItemInfo {
                        path: local_form(path)?,
                        label: labels.as_ref().map_or(-1, |l| l[i]),
                        text: None,
                    })
                })
                .collect::<Result<_, ManifestError>>()?;
            Ok(Resolved {
                items,
                classes: Vec::new(),
                ..Resolved::default()
            })
        }
        Dataset::Manifest { path, label_field } => {
            let field = label_field.as_deref().unwrap_or("label");
            read_manifest(Path::new(&local_form(path)?), field)
        }
        Dataset::Directory { path } => scan_directory(Path::new(&local_form(path)?)),
        Dataset::Shards {
            format,
            sources,
            label_field,
        } => {
            let field = label_field.as_deref();
            let sources = sources
                .iter()
                .map(|s| local_form(s))
                .collect::<Result<Vec<_>, _>>()?;
            let sources = &sources;
            match format.as_str() {
                "webdataset" => crate::feed::webdataset::resolve(sources, field),
                "shar" => crate::feed::shar::resolve(sources, field),
                "nemo" => crate::feed::nemo::resolve(sources, field),
                other => Err(ManifestError(format!(
                    "unknown shard format {other:?} (webdataset, shar, nemo)"
                ))),
            }
        }
    }
}

/// One manifest row before labels are assigned.
pub(crate) struct Row {
    pub path: String,
    pub label: RawLabel,
    pub text: Option<String>,
}

pub(crate) enum RawLabel {
    None,
    Int(i64),
    Name(String),
}

/// A manifest's text, from a file or a URL; gzip-compressed when its name ends in `.gz`.
pub(crate) fn manifest_text(path: &Path) -> Result<String, ManifestError> {
    let cannot = |e: &dyn std::fmt::Display| {
        ManifestError(format!("{}: cannot read manifest: {e}", path.display()))
    };
    let bytes = match crate::store::url_of(path) {
        Some(url) => crate::store::read(url).map_err(|e| ManifestError(e.to_string()))?,
        None => std::fs::read(path).map_err(|e| cannot(&e))?,
    };
    if crate::store::extension_of(path).is_some_and(|e| e == "gz") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
            .map_err(|e| cannot(&e))?;
        return Ok(text);
    }
    String::from_utf8(bytes).map_err(|e| cannot(&e))
}

/// The objects under the prefix `root` (ending in `/`), hidden ones left out (Note [Hidden
/// files]).
pub(crate) fn listed_below(root: &str) -> Result<Vec<String>, ManifestError> {
    let mut urls = crate::store::list(root).map_err(|e| ManifestError(e.to_string()))?;
    urls.retain(|u| !has_hidden_part(u.strip_prefix(root).unwrap_or(u)));
    Ok(urls)
}

/// The files of a directory or an object prefix, as paths or URLs, sorted; hidden ones left
/// out (Note [Hidden files]).
pub(crate) fn list_files(dir: &str) -> Result<Vec<String>, ManifestError> {
    if crate::store::is_url(dir) {
        return listed_below(&format!("{}/", dir.trim_end_matches('/')));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ManifestError(format!("{dir}: {e}")))?;
    let mut files: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter(|e| !is_hidden_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(files)
}

fn read_manifest(path: &Path, field: &str) -> Result<Resolved, ManifestError> {
    let text = manifest_text(path)?;
    let ext = crate::store::extension_of(path).unwrap_or_default();
    let rows = match ext.as_str() {
        "csv" => read_csv(path, &text, b',', field)?,
        "tsv" => read_csv(path, &text, b'\t', field)?,
        _ => read_jsonl(path, &text, field)?,
    };
    let text_labels = TEXT_FIELDS.contains(&field);
    let mut resolved = assign_labels(rows, text_labels)?;
    for item in &mut resolved.items {
        item.path = absolutize(path, &item.path)?;
    }
    if resolved.items.is_empty() {
        return Err(ManifestError(format!(
            "{}: manifest has no items",
            path.display()
        )));
    }
    Ok(resolved)
}

/// An item's path as the manifest at `manifest` means it: URLs and absolute paths as
/// written, relative ones against the manifest's own directory (or URL).
fn absolutize(manifest: &Path, path: &str) -> Result<String, ManifestError> {
    if crate::store::is_file_url(path) {
        return local_form(path);
    }
    let p = Path::new(path);
    if p.is_absolute() || crate::store::is_url(path) {
        return Ok(path.to_string());
    }
    if let Some(url) = crate::store::url_of(manifest) {
        return crate::store::join(url, path).map_err(|e| ManifestError(e.to_string()));
    }
    let base = manifest.parent().unwrap_or(Path::new("."));
    Ok(base.join(p).to_string_lossy().into_owned())
}

fn read_jsonl(path: &Path, text: &str, field: &str) -> Result<Vec<Row>, ManifestError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let where_ = || format!("{}:{}", path.display(), n + 1);
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| ManifestError(format!("{}: invalid JSON: {e}", where_())))?;
        let audio = ["audio_filepath", "path", "audio", "file"]
            .iter()
            .find_map(|k| value.get(*k).and_then(|v| v.as_str()))
            .ok_or_else(|| ManifestError(format!("{}: no \"audio_filepath\" field", where_())))?;
        // A labeling manifest records files it could not transcribe; they have no label
        // to train on.
        if value.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        let label = match value.get(field) {
            None | Some(serde_json::Value::Null) => RawLabel::None,
            Some(v) if v.is_i64() => RawLabel::Int(v.as_i64().unwrap_or(-1)),
            Some(serde_json::Value::String(s)) => RawLabel::Name(s.clone()),
            Some(other) => {
                return Err(ManifestError(format!(
                    "{}: field \"{field}\" must be an integer or a string, got {other}",
                    where_()
                )))
            }
        };
        let text = value
            .get("text")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        rows.push(Row {
            path: audio.to_string(),
            label,
            text,
        });
    }
    Ok(rows)
}

fn read_csv(
    path: &Path,
    text: &str,
    delimiter: u8,
    field: &str,
) -> Result<Vec<Row>, ManifestError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ManifestError(format!("{}: {e}", path.display())))?
        .clone();
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
    const PATH_COLUMNS: [&str; 4] = ["audio_filepath", "path", "audio", "file"];
    // Guessing a column would train on whatever the first one holds.
    let path_col = column(&PATH_COLUMNS).ok_or_else(|| {
        ManifestError(format!(
            "{}: no path column (one of {})",
            path.display(),
            PATH_COLUMNS.join(", ")
        ))
    })?;
    let label_col = column(&[field]);
    let text_col = column(&["text"]);
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| ManifestError(format!("{}:{}: {e}", path.display(), n + 2)))?;
        let get = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim);
        let Some(audio) = get(Some(path_col)).filter(|p| !p.is_empty()) else {
            return Err(ManifestError(format!(
                "{}:{}: empty path",
                path.display(),
                n + 2
            )));
        };
        let label = match get(label_col) {
            None | Some("") => RawLabel::None,
            Some(s) => s
                .parse()
                .map_or_else(|_| RawLabel::Name(s.to_string()), RawLabel::Int),
        };
        rows.push(Row {
            path: audio.to_string(),
            label,
            text: get(text_col).map(str::to_string),
        });
    }
    Ok(rows)
}

/// String labels become class ids in sorted order, unless they are transcripts.
///
/// Labels that mix integers and names are refused, naming an item of each: names get class
/// ids in sorted order from 0, which may be ids that integer labels already mean (`3` and
/// `dog` would both be class 0..n), and no rule can tell whether the integer `3` was meant
/// as the class `dog` or another one, so any mapping would train on silently merged
/// classes. The client refuses such `labels=` the same way (`map_labels`).
pub(crate) fn assign_labels(rows: Vec<Row>, text_labels: bool) -> Result<Resolved, ManifestError> {
    if !text_labels {
        let int = rows.iter().find_map(|r| match &r.label {
            RawLabel::Int(i) => Some((&r.path, i)),
            _ => None,
        });
        let name = rows.iter().find_map(|r| match &r.label {
            RawLabel::Name(n) => Some((&r.path, n)),
            _ => None,
        });
        if let (Some((int_path, int)), Some((name_path, name))) = (int, name) {
            return Err(ManifestError(format!(
                "labels mix class ids and class names ({int_path} has label {int}, \
                 {name_path} has label {name:?}): the names' ids would collide with the \
                 integers'; write every label as an integer or every label as a name"
            )));
        }
    }
    let classes: Vec<String> = if text_labels {
        Vec::new()
    } else {
        rows.iter()
            .filter_map(|r| match &r.label {
                RawLabel::Name(n) => Some(n.clone()),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let items = rows
        .into_iter()
        .map(|r| {
            let (label, text) = match r.label {
                RawLabel::Int(i) => (i, r.text),
                RawLabel::Name(n) if text_labels => (-1, Some(n)),
                RawLabel::Name(n) => (classes.binary_search(&n).map_or(-1, |i| i as i64), r.text),
                RawLabel::None => (-1, r.text),
            };
            ItemInfo {
                path: r.path,
                label,
                text,
            }
        })
        .collect();
    Ok(Resolved {
        items,
        classes,
        ..Resolved::default()
    })
}

fn scan_directory(root: &Path) -> Result<Resolved, ManifestError> {
    if let Some(url) = crate::store::url_of(root) {
        return scan_prefix(url);
    }
    if !root.is_dir() {
        return Err(ManifestError(format!(
            "{}: not a directory",
            root.display()
        )));
    }
    let mut files = files_below(root)?;
    files.retain(|path| is_audio(path));
    files.sort();
    if files.is_empty() {
        return without_audio(&root.to_string_lossy());
    }
    // The ImageFolder convention: the first directory level below the root is the class.
    let class_of = |p: &PathBuf| -> Option<String> {
        let rel = p.strip_prefix(root).ok()?;
        let mut parts = rel.components();
        let first = parts.next()?;
        parts
            .next()
            .map(|_| first.as_os_str().to_string_lossy().into_owned())
    };
    let rows = files
        .iter()
        .map(|p| Row {
            path: p.to_string_lossy().into_owned(),
            label: class_of(p).map_or(RawLabel::None, RawLabel::Name),
            text: None,
        })
        .collect();
    assign_labels(rows, false)
}

/// Note [Hidden files]: a name starting with `.` below a dataset's root, or a `__MACOSX`
/// directory, is not part of the dataset — in directories, object prefixes and tar shards
/// alike. macOS writes an AppleDouble companion `._NAME` beside every file it copies to a
/// non-Apple file system or into a tar (and `__MACOSX/._NAME` into a zip); with an audio
/// extension each one was an item that fails to decode, and under `on_error="raise"` the
/// first one stopped the epoch. `.Trash-1000/` holds deleted files, `.git/` history.
/// Python's glob, Hugging Face `datasets` and WebDataset's key pattern skip them too. The
/// root itself may be hidden: the user named it.
pub(crate) fn is_hidden_name(name: &str) -> bool {
    (name.starts_with('.') && name != "." && name != "..") || name == "__MACOSX"
}

/// Whether any part of the relative path `rel` (`/`-separated) is hidden (Note [Hidden
/// files]).
pub(crate) fn has_hidden_part(rel: &str) -> bool {
    rel.split('/').any(is_hidden_name)
}

/// Every file below the local directory `root`, in no order, hidden ones left out (Note
/// [Hidden files]). Symlinked directories are not followed (they can form cycles);
/// symlinked files are kept.
pub(crate) fn files_below(root: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ManifestError(format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            if is_hidden_name(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if !path.is_dir() {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// A "directory" in object storage: every audio object under the prefix, classes from the
/// first level below it, as for a local directory.
fn scan_prefix(url: &str) -> Result<Resolved, ManifestError> {
    let root = format!("{}/", url.trim_end_matches('/'));
    let mut urls = listed_below(&root)?;
    urls.retain(|u| is_audio(Path::new(u)));
    if urls.is_empty() {
        return without_audio(&root);
    }
    let rows = urls
        .iter()
        .map(|u| {
            let rel = u.strip_prefix(&root).unwrap_or(u);
            let class = rel.split_once('/').map(|(first, _)| first.to_string());
            Row {
                path: u.clone(),
                label: class.map_or(RawLabel::None, RawLabel::Name),
                text: None,
            }
        })
        .collect();
    assign_labels(rows, false)
}

/// A directory (or prefix) that holds no audio files: the WebDataset its tar shards make,
/// when it holds some (Note [Directories of shards]).
fn without_audio(root: &str) -> Result<Resolved, ManifestError> {
    match crate::feed::webdataset::shards_under(root)? {
        Some(shards) if !shards.is_empty() => {
            log::info!(
                "{root}: no audio files; reading its {} tar shards as a WebDataset",
                shards.len()
            );
            crate::feed::webdataset::resolve(&shards, None)
        }
        _ => Err(ManifestError(format!("{root}: no audio files found"))),
    }
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_mixing_ids_and_names_are_refused_naming_an_item_of_each() {
        let row = |path: &str, label| Row {
            path: path.into(),
            label,
            text: None,
        };
        let rows = vec![
            row("s.tar#a.wav", RawLabel::Int(3)),
            row("s.tar#b.wav", RawLabel::None),
            row("s.tar#c.wav", RawLabel::Name("dog".into())),
        ];
        let err = assign_labels(rows, false).unwrap_err().to_string();
        assert!(err.contains("s.tar#a.wav has label 3"), "{err}");
        assert!(err.contains("s.tar#c.wav has label \"dog\""), "{err}");
        // Transcripts are no classes: integers beside them stay labels.
        let rows = vec![
            row("a.wav", RawLabel::Int(3)),
            row("b.wav", RawLabel::Name("hello".into())),
        ];
        let resolved = assign_labels(rows, true).unwrap();
        assert_eq!(resolved.items[0].label, 3);
        assert_eq!(resolved.items[1].text.as_deref(), Some("hello"));
    }

    #[test]
    fn file_urls_in_manifests_are_local_paths() {
        let manifest = Path::new("/sets/m.jsonl");
        assert_eq!(
            absolutize(manifest, "file:///data/a%20b.wav").unwrap(),
            "/data/a b.wav"
        );
        assert_eq!(absolutize(manifest, "x.wav").unwrap(), "/sets/x.wav");
        assert!(absolutize(manifest, "file://nas/a.wav").is_err());
    }

    #[test]
    fn jsonl_string_labels_become_sorted_class_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("m.jsonl");
        std::fs::write(
            &m,
            "{\"audio_filepath\": \"a.wav\", \"label\": \"dog\"}\n\n\
             {\"audio_filepath\": \"/abs/b.wav\", \"label\": \"cat\", \"text\": \"hi\"}\n",
        )
        .expect("write");
        let r = read_manifest(&m, "label").expect("reads");
        assert_eq!(r.classes, vec!["cat", "dog"]);
        assert_eq!(r.items[0].label, 1);
        assert_eq!(r.items[0].path, dir.path().join("a.wav").to_string_lossy());
        assert_eq!(r.items[1].label, 0);
        assert_eq!(r.items[1].path, "/abs/b.wav");
        assert_eq!(r.items[1].text.as_deref(), Some("hi"));
    }

    #[test]
    fn labeling_error_lines_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("labels.jsonl");
        std::fs::write(
            &m,
            "{\"audio_filepath\": \"a.wav\", \"text\": \"hello\"}\n\
             {\"audio_filepath\": \"b.wav\", \"error\": \"b.wav: corrupt\"}\n",
        )
        .expect("write");
        let r = read_manifest(&m, "text").expect("reads");
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].text.as_deref(), Some("hello"));
    }

    #[test]
    fn text_field_gives_transcripts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("m.jsonl");
        std::fs::write(
            &m,
            "{\"audio_filepath\": \"a.wav\", \"text\": \"hello world\", \"duration\": 1.5}\n",
        )
        .expect("write");
        let r = read_manifest(&m, "text").expect("reads");
        assert!(r.classes.is_empty());
        assert_eq!(r.items[0].label, -1);
        assert_eq!(r.items[0].text.as_deref(), Some("hello world"));
    }

    #[test]
    fn csv_with_int_labels_and_errors_name_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("m.csv");
        std::fs::write(&m, "path,label\n\"x, y.wav\",3\nz.wav,7\n").expect("write");
        let r = read_manifest(&m, "label").expect("reads");
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[0].label, 3);
        assert!(r.items[0].path.ends_with("x, y.wav"));
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"audio_filepath\": \"a.wav\"}\n{not json}\n").expect("write");
        let err = read_manifest(&bad, "label").expect_err("bad line");
        assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
        let no_path = dir.path().join("no-path.csv");
        std::fs::write(
            &no_path,
            "name,label
a.wav,1
",
        )
        .expect("write");
        let err = read_manifest(&no_path, "label").expect_err("no path column");
        assert!(err.to_string().contains("no path column"), "{err}");
    }

    #[test]
    fn directory_classes_from_first_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        for p in ["dog/a.wav", "cat/x/b.flac", "root.mp3", "notes.txt"] {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, b"").expect("write");
        }
        let r = scan_directory(dir.path()).expect("scans");
        assert_eq!(r.classes, vec!["cat", "dog"]);
        let labels: Vec<i64> = r.items.iter().map(|i| i.label).collect();
        assert_eq!(labels, vec![0, 1, -1]);
    }
}
