//! Silero VAD through ONNX Runtime, opened at run time (`ort` with `load-dynamic`): the
//! library comes from the PyPI `onnxruntime` wheel and the model (v6, the "sequence" export
//! that takes every 32 ms window of a recording in one call) from the `faster-whisper` or
//! `silero-vad` wheel. Nothing is linked or downloaded at build time; what is missing is
//! named when detection is first asked for.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::segments::WINDOW;
use super::VadError;

/// Samples of the previous window the model sees before each window.
const CONTEXT: usize = 64;
/// Windows per model call (320 s of audio): bounds the input tensor, as faster-whisper does.
const WINDOWS_PER_CALL: usize = 10_000;
/// LSTM state size of the v6 model.
const STATE: usize = 128;

/// Where the model is looked for, in order: (Python package, file inside it).
const MODEL_PACKAGES: &[(&str, &str)] = &[
    ("faster_whisper", "assets/silero_vad_v6.onnx"),
    ("silero_vad", "data/silero_vad_16k_sequence.onnx"),
];

/// Silero VAD ready to run. Sessions are pooled: each call borrows one (a session runs one
/// call at a time), so labeling workers detect speech in parallel.
pub struct SpeechDetector {
    environment: Environment,
    model: PathBuf,
    sessions: Mutex<Vec<Session>>,
}

impl SpeechDetector {
    /// Opens ONNX Runtime and the model; the error names what is missing and where we looked.
    pub fn load() -> Result<Self, VadError> {
        // ONNX Runtime's package and the model's in one interpreter run; the lookups
        // below remember them.
        let modules: Vec<&str> = std::iter::once("onnxruntime")
            .chain(MODEL_PACKAGES.iter().map(|(module, _)| *module))
            .collect();
        crate::pypackages::module_dirs(&modules);
        let library = onnxruntime_library()?;
        let environment = open_runtime(&library)?;
        let model = model_file()?;
        let detector = Self {
            environment,
            model,
            sessions: Mutex::new(Vec::new()),
        };
        // Fail now, not at the first file, if the model cannot be loaded.
        let session = detector.new_session()?;
        detector.give_back(session);
        Ok(detector)
    }

    /// The process's detector, loaded at the first call that succeeds (a daemon serving
    /// many requests opens the runtime and the model once; a failure is retried, so
    /// installing ONNX Runtime while the daemon runs is enough).
    pub fn shared() -> Result<&'static SpeechDetector, VadError> {
        static SHARED: Mutex<Option<&'static SpeechDetector>> = Mutex::new(None);
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(detector) = *shared {
            return Ok(detector);
        }
        // Leaked once per process: it lives as long as the process anyway.
        let detector: &'static SpeechDetector = Box::leak(Box::new(Self::load()?));
        *shared = Some(detector);
        Ok(detector)
    }

    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// One speech probability per [`WINDOW`] samples of `samples` (16 kHz mono), for the
    /// recording padded with zeros to a whole number of windows plus one, as
    /// faster-whisper pads it.
    pub fn probabilities(&self, samples: &[f32]) -> Result<Vec<f32>, VadError> {
        let windows = samples.len() / WINDOW + 1;
        let mut padded = samples.to_vec();
        padded.resize(windows * WINDOW, 0.0);
        // faster-whisper zeroes the last 64 samples of the padded recording (its context
        // slice is a view); doing the same keeps the probabilities equal to its own.
        let tail = padded.len() - CONTEXT;
        padded[tail..].fill(0.0);
        let mut session = self.take_session()?;
        let result = run_windows(&mut session, &padded, windows);
        self.give_back(session);
        result
    }

    fn take_session(&self) -> Result<Session, VadError> {
        let pooled = self.sessions.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(session) => Ok(session),
            None => self.new_session(),
        }
    }

    fn give_back(&self, session: Session) {
        if let Ok(mut pool) = self.sessions.lock() {
            pool.push(session);
        }
    }

    fn new_session(&self) -> Result<Session, VadError> {
        let fail = |e: ort::Error| {
            VadError::Runtime(format!(
                "{}: cannot load the model: {e}",
                self.model.display()
            ))
        };
        // One thread per call, as faster-whisper runs it: detection runs on the labeling
        // workers, beside the model, and must not compete with it for cores.
        let builder = Session::builder(&self.environment).map_err(fail)?;
        let builder = builder.with_intra_threads(1).map_err(|e| fail(e.into()))?;
        let mut builder = builder.with_inter_threads(1).map_err(|e| fail(e.into()))?;
        builder.commit_from_file(&self.model).map_err(fail)
    }
}

/// Runs the model over `padded` (a whole number of windows), each window preceded by the
/// last 64 samples of the window before it (zeros for the first), carrying the LSTM state
/// from call to call.
fn run_windows(
    session: &mut Session,
    padded: &[f32],
    windows: usize,
) -> Result<Vec<f32>, VadError> {
    let fail = |e: ort::Error| VadError::Runtime(e.to_string());
    let mut h = vec![0.0f32; STATE];
    let mut c = vec![0.0f32; STATE];
    let mut probabilities = Vec::with_capacity(windows);
    let mut first = 0usize;
    while first < windows {
        let count = WINDOWS_PER_CALL.min(windows - first);
        let mut input = Vec::with_capacity(count * (CONTEXT + WINDOW));
        for w in first..first + count {
            let at = w * WINDOW;
            match at.checked_sub(CONTEXT) {
                Some(from) => input.extend_from_slice(&padded[from..at]),
                None => input.extend(std::iter::repeat_n(0.0, CONTEXT)),
            }
            input.extend_from_slice(&padded[at..at + WINDOW]);
        }
        let inputs = ort::inputs![
            "input" => Tensor::from_array(([count, CONTEXT + WINDOW], input)).map_err(fail)?,
            "h" => Tensor::from_array(([1usize, 1, STATE], h)).map_err(fail)?,
            "c" => Tensor::from_array(([1usize, 1, STATE], c)).map_err(fail)?,
        ];
        let outputs = session.run(inputs).map_err(fail)?;
        let extract = |name: &str| -> Result<Vec<f32>, VadError> {
            let value = outputs.get(name).ok_or_else(|| {
                VadError::Runtime(format!(
                    "the model has no output '{name}' (not a Silero VAD v6 sequence model)"
                ))
            })?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(fail)?;
            Ok(data.to_vec())
        };
        let speech = extract("speech_probs")?;
        if speech.len() != count {
            return Err(VadError::Runtime(format!(
                "the model gave {} probabilities for {count} windows",
                speech.len()
            )));
        }
        probabilities.extend(speech);
        h = extract("hn")?;
        c = extract("cn")?;
        first += count;
    }
    Ok(probabilities)
}

/// Opens ONNX Runtime and its environment once per process (later calls reuse them).
fn open_runtime(library: &Path) -> Result<Environment, VadError> {
    static OPENED: OnceLock<Result<Environment, String>> = OnceLock::new();
    OPENED
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| format!("ONNX Runtime: {e}"))?
                .with_name("audiodecode-vad")
                .build()
                .map_err(|e| format!("ONNX Runtime ({}): {e}", library.display()))
        })
        .clone()
        .map_err(VadError::Missing)
}

/// The file an environment variable names: `None` when it is unset, an error naming the
/// variable when the file is not there (an explicit setting is never silently ignored).
fn file_from_env(var: &str) -> Result<Option<PathBuf>, VadError> {
    match std::env::var_os(var).map(PathBuf::from) {
        None => Ok(None),
        Some(path) if path.is_file() => Ok(Some(path)),
        Some(path) => Err(VadError::Missing(format!(
            "{var}={}: no such file",
            path.display()
        ))),
    }
}

/// `ORT_DYLIB_PATH` (ort's own variable) or `AUDIODECODE_ONNXRUNTIME`, else the library
/// in the `onnxruntime` Python package.
fn onnxruntime_library() -> Result<PathBuf, VadError> {
    for var in ["AUDIODECODE_ONNXRUNTIME", "ORT_DYLIB_PATH"] {
        if let Some(path) = file_from_env(var)? {
            return Ok(path);
        }
    }
    let missing = |why: String| {
        VadError::Missing(format!(
            "voice activity detection needs ONNX Runtime: {why}. Install it with \
             `pip install onnxruntime`, set AUDIODECODE_ONNXRUNTIME to libonnxruntime, or turn \
             VAD off (--vad-filter false)"
        ))
    };
    let capi = crate::pypackages::module_dir("onnxruntime")
        .map_err(missing)?
        .join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .map_err(|e| missing(format!("{}: {e}", capi.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
            })
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| missing(format!("no libonnxruntime in {}", capi.display())))
}

/// `AUDIODECODE_VAD_MODEL`, else the Silero v6 model shipped in a Python package.
fn model_file() -> Result<PathBuf, VadError> {
    if let Some(path) = file_from_env("AUDIODECODE_VAD_MODEL")? {
        return Ok(path);
    }
    let mut looked = Vec::new();
    for (module, file) in MODEL_PACKAGES {
        match crate::pypackages::module_dir(module) {
            Ok(dir) if dir.join(file).is_file() => return Ok(dir.join(file)),
            Ok(dir) => looked.push(format!("{} (missing)", dir.join(file).display())),
            Err(why) => looked.push(why),
        }
    }
    Err(VadError::Missing(format!(
        "voice activity detection needs the Silero VAD model; looked in: {}. Install it with \
         `pip install faster-whisper` (or silero-vad), set AUDIODECODE_VAD_MODEL, or turn VAD \
         off (--vad-filter false)",
        looked.join("; ")
    )))
}
