use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Decoder panics are caught per file and reported as that file's error; the default hook
    // would also print a backtrace-style message that reads like a crash of the whole tool.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    audiodecode::cli::run(audiodecode::cli::Cli::parse())
}
