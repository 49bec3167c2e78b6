//! Progress bars shared by the subcommands.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `total` files (files/s, plus a message); hidden when asked.
pub fn files_progress(total: usize, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
