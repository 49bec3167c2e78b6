//! Files that Python packages install: models (Whisper, Silero VAD) and runtime libraries
//! (ONNX Runtime) come from PyPI wheels, so the daemon asks the Python interpreter where a
//! package lives instead of downloading anything.

use std::path::PathBuf;
use std::process::Command;

/// Where Python imports `module` from, asking the interpreter in `AUDIODECODE_PYTHON`
/// (default `python3`). The error says which package is missing and for which interpreter.
pub fn module_dir(module: &str) -> Result<PathBuf, String> {
    let python = std::env::var("AUDIODECODE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import importlib.util as u; s = u.find_spec('{module}'); \
         print(list(s.submodule_search_locations)[0] if s else '')"
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("Python package {module} (cannot run {python}: {e})"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err(format!(
            "Python package {module} (not installed for {python})"
        ));
    }
    Ok(PathBuf::from(dir))
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}
