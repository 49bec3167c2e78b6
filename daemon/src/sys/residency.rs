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

/// Returns the free pages of `malloc`'s heaps to the system. A stream calls it after each
/// batch: its decoded items (0.1-1 MB each, 32 to a batch) are freed then, and glibc's heaps
/// keep what is freed, so without it a serving daemon's anonymous memory stays at its
/// highest.
pub fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages back; it takes the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
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
        // libc's code: surely loaded, and called again right after. Reading smaps runs libc
        // again, and so do the tests running meanwhile (more of them every month), which
        // fault some of it back in: the best of ten tries counts, and a third gone is proof.
        let (before, after) = (0..10)
            .map(|_| {
                let before = resident_kb("libc.so");
                assert!(release_code_of(&["libc.so"]) > 0);
                (before, resident_kb("libc.so"))
            })
            .min_by_key(|&(before, after)| after * 1000 / before.max(1))
            .unwrap_or_default();
        assert!(
            after * 3 < before * 2,
            "{before} kB of libc's code resident, then {after} kB"
        );
        assert!(std::process::id() > 0 && fs::metadata("/").is_ok());
    }

    fn anonymous_kb() -> usize {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn freed_heap_pages_go_back_to_the_system() {
        // 40 MB of 100 kB blocks (under glibc's mmap threshold, so from a heap), touched;
        // every other one freed leaves 20 MB of free pages between live blocks, which
        // `free` alone cannot give back.
        let mut blocks: Vec<Vec<u8>> = (0..400).map(|i| vec![i as u8 | 1; 100_000]).collect();
        let kept: Vec<Vec<u8>> = blocks.drain(..).step_by(2).collect();
        let before = anonymous_kb();
        return_free_heap();
        let after = anonymous_kb();
        assert!(
            after + 8_000 < before,
            "anonymous memory {before} kB, {after} kB after returning free pages"
        );
        assert!(kept.iter().all(|b| b[99_999] != 0));
    }
}
