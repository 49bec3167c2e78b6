//! What can go wrong in labeling before or around the audio (the audio's own errors are
//! `DecodeError`s, recorded per file).

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// Options this build or model cannot honour (device, compute type, language, task).
    #[error("{0}")]
    InvalidOptions(String),
    /// The model cannot be found, read or loaded; the message says where we looked.
    #[error("{0}")]
    Model(String),
    /// CTranslate2 failed on a batch (the whole batch's files get this error).
    #[error("{0}")]
    Inference(String),
    /// Voice activity detection cannot run (ONNX Runtime or the Silero model missing).
    #[error(transparent)]
    Vad(#[from] crate::vad::VadError),
}
