//! How `label` names its inputs in its outputs: the `audio_filepath` of a JSONL line (relative
//! to the manifest's own directory, as manifests are read), the keys `--resume` matches done
//! lines by, and the per-input file names of `--format`.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::cli::output::claim_name;

/// Input paths as one output sees them. Built once per run: it caches each directory's
/// physical path.
pub struct PathRule {
    /// The working directory, which relative inputs are relative to.
    cwd: Option<PathBuf>,
    /// The output manifest's directory (physical) when it is not the working directory;
    /// `None` keeps relative inputs as given (they are relative to it already).
    out_dir: Option<PathBuf>,
    /// Directory → its physical path (`None`: it does not exist).
    physical_dirs: HashMap<PathBuf, Option<PathBuf>>,
}

impl PathRule {
    /// The rule for a manifest at `out`, whose directory exists.
    pub fn for_manifest(out: &Path) -> Self {
        let cwd = std::env::current_dir().ok();
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
        let out_dir = dir.and_then(|d| d.canonicalize().ok()).filter(|d| {
            cwd.as_ref()
                .and_then(|c| c.canonicalize().ok())
                .is_none_or(|c| c != *d)
        });
        Self {
            // Without a working directory relative inputs cannot be placed: keep them.
            out_dir: out_dir.filter(|_| cwd.is_some()),
            cwd,
            physical_dirs: HashMap::new(),
        }
    }

    /// A rule that only computes keys (names relative to the working directory).
    pub fn keys_only() -> Self {
        Self {
            cwd: std::env::current_dir().ok(),
            out_dir: None,
            physical_dirs: HashMap::new(),
        }
    }

    /// `input` (a URL, or a path relative to the working directory) as the manifest writes
    /// it: URLs and absolute paths as given, relative paths relative to the manifest's
    /// directory, so that a reader of the manifest finds them wherever it runs.
    pub fn written(&mut self, input: &str) -> String {
        let Some(out_dir) = self.out_dir.clone() else {
            return input.to_string();
        };
        if is_url(input) || Path::new(input).is_absolute() {
            return input.to_string();
        }
        let target = self.key_path(self.cwd.clone().as_deref(), input);
        relative_to(&out_dir, &target)
            .to_string_lossy()
            .into_owned()
    }

    /// The identity of an input (relative to the working directory): its absolute path with
    /// the directories resolved physically, or the URL.
    pub fn input_key(&mut self, input: &str) -> String {
        if is_url(input) {
            return input.to_string();
        }
        let cwd = self.cwd.clone();
        self.key_path(cwd.as_deref(), input)
            .to_string_lossy()
            .into_owned()
    }

    /// The identity of a manifest line's `audio_filepath` (relative to the manifest's
    /// directory), comparable with [`Self::input_key`].
    pub fn line_key(&mut self, written: &str) -> String {
        if is_url(written) {
            return written.to_string();
        }
        let base = self.out_dir.clone().or_else(|| self.cwd.clone());
        self.key_path(base.as_deref(), written)
            .to_string_lossy()
            .into_owned()
    }

    /// `path` joined to `base`, `.` and `..` resolved, and its directory made physical where
    /// it exists (so `a/../b` means what the kernel makes of it, and one file reached by two
    /// spellings has one key). The file name itself is kept: a symbolic link to an audio file
    /// stays the input it was.
    fn key_path(&mut self, base: Option<&Path>, path: &str) -> PathBuf {
        let joined = match base {
            Some(base) => base.join(path),
            None => PathBuf::from(path),
        };
        let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
            return normalize(&joined);
        };
        let parent = parent.to_path_buf();
        let physical = self
            .physical_dirs
            .entry(parent.clone())
            .or_insert_with(|| parent.canonicalize().ok())
            .clone();
        match physical {
            Some(dir) => dir.join(name),
            None => normalize(&joined),
        }
    }
}

/// `path` with `.` dropped and `..` taking off the component before it, without looking at
/// the file system (for paths that do not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `target` as a path relative to `dir`; both absolute and normalized.
fn relative_to(dir: &Path, target: &Path) -> PathBuf {
    let dir: Vec<Component> = dir.components().collect();
    let target: Vec<Component> = target.components().collect();
    let common = dir.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..dir.len() {
        out.push("..");
    }
    for component in &target[common..] {
        out.push(component);
    }
    out
}

/// Where each input's `--format` file goes in `dir`: its stem with `extension`; inputs whose
/// stems collide (case aside, for case-insensitive file systems) add a short hash of their
/// absolute path (`x-1a2b3c4d.srt`). A name depends only on its input and on whether another
/// input shares its stem, never on the inputs' order, so `--resume` finds each input's file
/// after inputs are added.
pub fn format_paths(
    dir: &Path,
    inputs: &[String],
    extension: &str,
    rule: &mut PathRule,
) -> Vec<PathBuf> {
    let stems: Vec<String> = inputs
        .iter()
        .map(|input| {
            // The last segment of a path or URL (a URL's query is not part of its name).
            let name = input.split(['?', '#']).next().unwrap_or(input);
            Path::new(name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "audio".into())
        })
        .collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    for stem in &stems {
        *count.entry(stem.to_lowercase()).or_default() += 1;
    }
    let mut taken = HashSet::new();
    inputs
        .iter()
        .zip(&stems)
        .map(|(input, stem)| {
            let base = if count[&stem.to_lowercase()] > 1 {
                let hash = fnv1a(rule.input_key(input).as_bytes());
                format!("{stem}-{:08x}", hash as u32)
            } else {
                stem.clone()
            };
            // Two inputs with one name: only an input that is itself a duplicate spelling of
            // another, or a 32-bit hash collision; keep them apart rather than overwrite.
            dir.join(claim_name(&mut taken, &base, extension))
        })
        .collect()
}

/// Whether `path` is a URL, kept as given: an object's, or a `file:` URL (absolute, and
/// not a relative path whose first directory is `file:`).
fn is_url(path: &str) -> bool {
    crate::store::is_url(path) || crate::store::is_file_url(path)
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hashers promise neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative_to(Path::new("/a/b"), Path::new("/a/c/x.wav")),
            Path::new("../c/x.wav")
        );
        assert_eq!(
            relative_to(Path::new("/a"), Path::new("/a/b/x.wav")),
            Path::new("b/x.wav")
        );
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
    }

    #[test]
    fn a_manifest_elsewhere_names_inputs_from_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(root.join("corpus/sub")).expect("mkdir");
        std::fs::create_dir_all(root.join("out")).expect("mkdir");
        let mut rule = PathRule {
            cwd: Some(root.join("corpus")),
            out_dir: Some(root.join("out")),
            physical_dirs: HashMap::new(),
        };
        assert_eq!(rule.written("sub/a.wav"), "../corpus/sub/a.wav");
        assert_eq!(rule.written("/abs/a.wav"), "/abs/a.wav");
        assert_eq!(rule.written("s3://b/a.wav"), "s3://b/a.wav");
        assert_eq!(rule.written("file:///abs/a.wav"), "file:///abs/a.wav");
        let written = rule.written("sub/../a.wav");
        assert_eq!(written, "../corpus/a.wav");
        assert_eq!(rule.line_key(&written), rule.input_key("a.wav"));
    }

    #[test]
    fn format_names_depend_on_the_input_not_its_position() {
        let mut rule = PathRule::keys_only();
        let dir = Path::new("out");
        let two = [
            "a/x.wav".to_string(),
            "b/x.flac".to_string(),
            "y.wav".into(),
        ];
        let three = [
            "0/x.wav".to_string(),
            two[0].clone(),
            two[1].clone(),
            two[2].clone(),
        ];
        let before = format_paths(dir, &two, "json", &mut rule);
        let after = format_paths(dir, &three, "json", &mut rule);
        assert_eq!(before[..], after[1..]);
        assert_eq!(before[2], dir.join("y.json"));
        assert_ne!(before[0], before[1]);
        assert!(before[0].to_string_lossy().starts_with("out/x-"));
    }
}
