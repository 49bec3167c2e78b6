//! Files that readers and crashes never see half-written.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Writes `path` through a temporary file beside it, synced and renamed into place, so
/// readers and crashes never see a partial file.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // Special files (/dev/null, FIFOs) cannot be replaced by a rename; copy into them.
        if is_special(path) {
            std::io::copy(&mut File::open(&tmp)?, &mut File::create(path)?)?;
            std::fs::remove_file(&tmp)
        } else {
            std::fs::rename(&tmp, path)
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() && !is_special(path) => p.to_path_buf(),
        _ if is_special(path) => std::env::temp_dir(),
        _ => PathBuf::from("."),
    };
    dir.join(format!(".{name}.{}.partial", unique_suffix()))
}

/// A suffix no other write in progress uses: the process and a count within it (two
/// threads writing one path at once each rename their own file; with the process id
/// alone the second rename failed with "No such file or directory").
pub fn unique_suffix() -> String {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}
