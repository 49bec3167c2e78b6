//! Transcription inside the daemon: the last model used stays loaded, so a Python session's
//! calls pay the model load once.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audiodecode_protocol::{ErrorInfo, Response, TranscribeSpec};

use super::error::LabelError;
use super::run::{auto_batch_size, label_files, speech_detector, Schedule, DEFAULT_BLOCK_FILES};
use super::{ModelKey, WhisperEngine};

#[derive(Default)]
pub struct ModelCache {
    /// One model at a time bounds memory; a different key replaces it.
    loaded: Mutex<Option<Arc<WhisperEngine>>>,
}

impl ModelCache {
    pub fn get(&self, key: &ModelKey) -> Result<Arc<WhisperEngine>, LabelError> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| LabelError::Model("model cache poisoned".to_string()))?;
        if let Some(engine) = loaded.as_ref().filter(|e| &e.key == key) {
            return Ok(Arc::clone(engine));
        }
        // Drop the old model before loading the new one.
        *loaded = None;
        let engine = Arc::new(WhisperEngine::load(key)?);
        *loaded = Some(Arc::clone(&engine));
        Ok(engine)
    }
}

/// Serves one `Transcribe` request: a `Transcribed` push per file, then the final reply.
pub fn serve_transcribe(
    spec: &TranscribeSpec,
    models: &ModelCache,
    (workers, item_deadline): (usize, Duration),
    cancel: &AtomicBool,
    push: &mut dyn FnMut(Response),
) -> Response {
    let fail = |e: LabelError| Response::Error(ErrorInfo::bad_request(e.to_string()));
    let key = match ModelKey::from_options(&spec.options, workers) {
        Ok(key) => key,
        Err(e) => return fail(e),
    };
    let engine = match models.get(&key) {
        Ok(engine) => engine,
        Err(e) => return fail(e),
    };
    if let Err(e) = engine.check_options(&spec.options) {
        return fail(e);
    }
    let vad = match speech_detector(&spec.options) {
        Ok(vad) => vad,
        Err(e) => return fail(e),
    };
    let batch_size = match spec.options.batch_size {
        0 => auto_batch_size(key.cuda),
        n => n as usize,
    };
    let mut errors = 0u64;
    let mut files = 0u64;
    label_files(
        &|| Some(&*engine),
        vad,
        &spec.paths,
        &spec.options,
        Schedule {
            workers,
            batch_size,
            pack: true,
            block_files: DEFAULT_BLOCK_FILES,
            strict: false,
            item_deadline,
        },
        cancel,
        &mut |events| {
            for event in events {
                files += 1;
                errors += u64::from(event.label.error.is_some());
                push(Response::Transcribed {
                    index: event.index as u64,
                    record: event.label.to_json_line(),
                });
            }
        },
    );
    Response::TranscribeDone { files, errors }
}
