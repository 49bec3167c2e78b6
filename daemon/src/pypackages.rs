//! Files that Python packages install: models (Whisper, Silero VAD) and runtime libraries
//! (ONNX Runtime) come from PyPI wheels, so the daemon asks the Python interpreter where a
//! package lives instead of downloading anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Where Python imports `module` from, asking the interpreter in `AUDIODECODE_PYTHON`
/// (default `python3`). The error says which package is missing and for which interpreter.
pub fn module_dir(module: &str) -> Result<PathBuf, String> {
    module_dirs(&[module])
        .pop()
        .unwrap_or_else(|| Err(format!("Python package {module} (not looked up)")))
}

/// [`module_dir`] of each of `modules`, in order, from one run of the interpreter (a run
/// costs ~0.1 s through a pyenv shim, and a labeling run needs five lookups). Packages
/// found are remembered for the process; missing ones are asked again next time (they may
/// have been installed since).
pub fn module_dirs(modules: &[&str]) -> Vec<Result<PathBuf, String>> {
    static FOUND: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let python = std::env::var("AUDIODECODE_PYTHON").unwrap_or_else(|_| "python3".into());
    let remembered = |m: &str| -> Option<PathBuf> {
        let found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        found.get(&format!("{python}\0{m}")).cloned()
    };
    let unknown: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|m| remembered(m).is_none())
        .collect();
    let mut failure = None;
    if !unknown.is_empty() {
        match ask_python(&python, &unknown) {
            Ok(dirs) => {
                let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
                for (module, dir) in unknown.iter().zip(dirs) {
                    if let Some(dir) = dir {
                        found.insert(format!("{python}\0{module}"), dir);
                    }
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    modules
        .iter()
        .map(|m| {
            remembered(m).ok_or_else(|| match &failure {
                Some(e) => format!("Python package {m} (cannot run {python}: {e})"),
                None => format!("Python package {m} (not installed for {python})"),
            })
        })
        .collect()
}

/// One line per module: its directory, or an empty line when Python cannot import it.
fn ask_python(python: &str, modules: &[&str]) -> Result<Vec<Option<PathBuf>>, String> {
    let names = modules
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        "import importlib.util as u\n\
         for m in [{names}]:\n\
         \ttry: s = u.find_spec(m)\n\
         \texcept Exception: s = None\n\
         \tprint(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')"
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    Ok(modules
        .iter()
        .map(|_| {
            lines
                .next()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
        })
        .collect())
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_answers_each_module_in_order() {
        let dirs = module_dirs(&["email", "no_such_module_for_audiodecode", "json"]);
        assert_eq!(dirs.len(), 3);
        let email = dirs[0]
            .as_ref()
            .expect("the standard library's email package");
        assert!(email.ends_with("email") && email.is_dir(), "{email:?}");
        let missing = dirs[1].as_ref().expect_err("no such module");
        assert!(
            missing.contains("no_such_module_for_audiodecode") && missing.contains("not installed")
        );
        assert_eq!(dirs[2].as_ref().map(|d| d.ends_with("json")), Ok(true));
        // Remembered: the same answer again.
        assert_eq!(module_dir("email").as_ref().ok(), Some(email));
    }
}
