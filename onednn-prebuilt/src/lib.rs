//! Link-only crate: its build script points ct2rs's CTranslate2 build at a prebuilt oneDNN.
