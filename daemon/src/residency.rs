//! Giving back memory the daemon mapped but does not use.
//!
//! Loading CTranslate2's oneDNN runs its static initialisers, which fault in ~11 MB of its
//! machine code (each fault maps the neighbouring pages too). A daemon that only feeds
//! training jobs never runs that code again; until it labels, those pages only inflate its
//! resident set. Code pages of a shared library are never written, so dropping them is
//! safe: a later call faults them back in from the page cache.

use std::fs;

/// Libraries whose code only labeling runs.
const LABELING_LIBRARIES: &[&str] = &["libdnnl.so"];

/// Drops the resident code pages of the labeling libraries; returns the bytes of the
/// mappings released (0 where `/proc` is unavailable or they are not loaded).
pub fn release_labeling_code() -> usize {
    release_code_of(LABELING_LIBRARIES)
}

/// Drops the resident code pages of the loaded libraries whose path contains one of
/// `libraries`. Only executable, non-writable file mappings are touched: their pages are
/// exact copies of the file.
fn release_code_of(libraries: &[&str]) -> usize {
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut released = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or_default();
        let listed = libraries.iter().any(|lib| path.contains(lib));
        if !listed || perms != "r-xp" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: a private, read-only, executable file mapping holds no data of ours;
        // MADV_DONTNEED only unmaps its pages, which fault back in from the file.
        let result =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if result == 0 {
            released += end - start;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_kb(library: &str) -> usize {
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut inside = false;
        let mut total = 0;
        for line in smaps.lines() {
            if line.contains('-') && line.split_whitespace().count() >= 5 {
                inside = line.contains(library) && line.contains("r-xp");
            } else if inside {
                if let Some(kb) = line.strip_prefix("Rss:") {
                    total += kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                }
            }
        }
        total
    }

    #[test]
    fn released_code_leaves_the_resident_set_and_still_runs() {
        // libc's code: surely loaded, and called again right after.
        let before = resident_kb("libc.so");
        assert!(release_code_of(&["libc.so"]) > 0);
        // Reading smaps runs libc again, which faults a little of it back in.
        let after = resident_kb("libc.so");
        assert!(
            after * 2 < before,
            "{before} kB of libc's code resident, then {after} kB"
        );
        assert!(std::process::id() > 0 && fs::metadata("/").is_ok());
    }
}
