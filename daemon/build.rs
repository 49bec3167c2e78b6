//! Run-time search path for the prebuilt oneDNN that CTranslate2 links against: the
//! directory it was linked from (a cargo build), and `$ORIGIN/../lib`, where a `pip install`
//! puts both this binary's directory's sibling `lib/` and the `onednn-cpu-gomp` wheel's
//! `libdnnl.so.3`.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_DNNL_LIBRARY_PATH");
    if let Ok(dir) = std::env::var("DEP_DNNL_LIBRARY_PATH") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo::rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
}
