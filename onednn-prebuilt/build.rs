//! Finds the prebuilt oneDNN that `scripts/install-deps.sh` unpacks and hands its include
//! and library directories to ct2rs (as `DEP_DNNL_INCLUDE_PATH` / `DEP_DNNL_LIBRARY_PATH`,
//! the names its build script reads), then links `libdnnl.so` dynamically.

use std::env;
use std::path::PathBuf;

/// The oneDNN release the install script fetches (PyPI 2023.2.0 = oneDNN 3.2).
const ONEDNN_PACKAGE_VERSION: &str = "2023.2.0";

fn onednn_dir() -> PathBuf {
    if let Some(dir) = env::var_os("AUDIODECODE_ONEDNN_DIR") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/audiodecode")
        .join(format!("onednn-{ONEDNN_PACKAGE_VERSION}"))
}

fn main() {
    println!("cargo::rerun-if-env-changed=AUDIODECODE_ONEDNN_DIR");
    println!("cargo::rerun-if-env-changed=HOME");
    let dir = onednn_dir();
    let include = dir.join("include");
    let lib = dir.join("lib");
    if !include.join("dnnl.h").is_file() || !lib.join("libdnnl.so").exists() {
        // A build script has no other way to fail with a message.
        panic!(
            "prebuilt oneDNN not found in {} (needs include/dnnl.h and lib/libdnnl.so): \
             run `bash scripts/install-deps.sh`, or set AUDIODECODE_ONEDNN_DIR",
            dir.display()
        );
    }
    println!(
        "cargo::rerun-if-changed={}",
        lib.join("libdnnl.so").display()
    );
    println!("cargo::rustc-link-search=native={}", lib.display());
    println!("cargo::rustc-link-lib=dylib=dnnl");
    println!("cargo::metadata=INCLUDE_PATH={}", include.display());
    println!("cargo::metadata=LIBRARY_PATH={}", lib.display());
    println!("cargo::metadata=ROOT={}", dir.display());
}
