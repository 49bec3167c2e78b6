//! `audiodecode label`: pseudo-transcribe a dataset into a JSONL manifest (or subtitle files).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Instant;

use audiodecode_protocol::{Dataset, TranscribeOptions};
use clap::Args;
use indicatif::ProgressBar;

use crate::cli::error::CliError;
use crate::cli::label_paths::{format_paths, PathRule};
use crate::cli::progress::files_progress;
use crate::cli::vad::VadOptionArgs;
use crate::feed::manifest;
use crate::feed::pool::DEFAULT_ITEM_DEADLINE;
use crate::label::record::TextFormat;
use crate::label::run::{auto_batch_size, speech_detector, Schedule, DEFAULT_BLOCK_FILES};
use crate::label::{label_files, FileLabel, LabelEvent, ModelKey, WhisperEngine};

/// The Whisper defaults, defined once in `TranscribeOptions::default` (the protocol crate):
/// the clap defaults below are read from it, so `label`, a `Transcribe` request and the
/// Python client (checked against it by a golden vector) cannot disagree.
fn defaults() -> TranscribeOptions {
    TranscribeOptions::default()
}

/// `--language` for "detect it per file" (`language: None`).
pub const AUTO_LANGUAGE: &str = "auto";

/// The default `--temperature`: the default fallback temperatures, comma separated.
fn default_temperatures() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let temperatures: Vec<String> = defaults()
            .temperatures
            .iter()
            .map(|t| format!("{t:?}"))
            .collect();
        temperatures.join(",")
    })
}

/// Which Whisper model runs where: shared by `label` and `serve --http`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// CTranslate2 model directory or name (tiny, tiny.en, base, base.en, small, …, large-v3,
    /// distil-large-v3).
    #[arg(long, default_value_t = defaults().model)]
    pub model: String,
    #[arg(long, default_value_t = defaults().device, value_parser = ["auto", "cpu", "cuda"])]
    pub device: String,
    /// auto: int8 on CPU, float16 on CUDA.
    #[arg(long, default_value_t = defaults().compute_type)]
    pub compute_type: String,
    /// Model threads (default: all cores).
    #[arg(long, default_value_t = defaults().threads)]
    pub threads: u32,
}

impl ModelArgs {
    /// The default options with this model.
    pub fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            model: self.model.clone(),
            device: self.device.clone(),
            compute_type: self.compute_type.clone(),
            threads: self.threads,
            ..defaults()
        }
    }
}

#[derive(Args, Debug)]
pub struct LabelArgs {
    /// Audio files, directories (searched recursively) or JSONL/CSV manifests.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output JSONL manifest; with --format, a directory for one file per input.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Write srt/vtt/txt/tsv/json files into --out DIR instead of one JSONL manifest.
    #[arg(long, value_enum)]
    pub format: Option<TextFormat>,
    /// Skip inputs already in the output (after a crash or a stop).
    #[arg(long)]
    pub resume: bool,
    /// Record damaged or truncated inputs as errors. By default what decodes around the
    /// damage is labelled and the damage is recorded in the line's `damage` field.
    #[arg(long)]
    pub strict: bool,
    /// Longest one file may take to decode, in seconds (default 300; env
    /// AUDIODECODE_ITEM_DEADLINE): a decode past it is abandoned and the file's line is an
    /// error, so one pathological file cannot stall the run.
    #[arg(long, env = "AUDIODECODE_ITEM_DEADLINE", value_parser = super::parse_deadline)]
    pub item_deadline: Option<u64>,
    /// Replace an existing output instead of refusing.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Label every n-th input starting at i (0-based), e.g. `--shard 2/8`.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode/feature workers (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// ≤30 s pieces per model call (default: 8 on CPU, 16 on CUDA).
    #[arg(long, default_value_t = defaults().batch_size)]
    pub batch_size: u32,
    /// Language code, or `auto` to detect it per file.
    #[arg(long, default_value_t = defaults().language.unwrap_or_else(|| AUTO_LANGUAGE.into()))]
    pub language: String,
    /// Re-detect the language for every ≤30 s piece (recordings that switch languages).
    #[arg(long)]
    pub multilingual: bool,
    #[arg(long, default_value_t = defaults().task, value_parser = ["transcribe", "translate"])]
    pub task: String,
    #[arg(long, default_value_t = defaults().beam_size)]
    pub beam_size: u32,
    /// Candidates sampled at each non-zero fallback temperature.
    #[arg(long, default_value_t = defaults().best_of)]
    pub best_of: u32,
    #[arg(long, default_value_t = defaults().patience)]
    pub patience: f32,
    /// Fallback temperatures, comma separated.
    #[arg(long, value_delimiter = ',', default_value = default_temperatures())]
    pub temperature: Vec<f32>,
    /// Fall back when the text compresses better than this (repetition); `none` disables.
    #[arg(long, default_value_t = Threshold(defaults().compression_ratio_threshold), value_parser = parse_threshold)]
    pub compression_ratio_threshold: Threshold,
    /// Fall back when the mean token log probability is below this; `none` disables.
    #[arg(
        long,
        default_value_t = Threshold(defaults().log_prob_threshold),
        value_parser = parse_threshold,
        allow_hyphen_values = true
    )]
    pub log_prob_threshold: Threshold,
    /// A window is silence when its no-speech probability is above this and its text is
    /// unlikely; `none` disables.
    #[arg(long, default_value_t = Threshold(defaults().no_speech_threshold), value_parser = parse_threshold)]
    pub no_speech_threshold: Threshold,
    /// Text given to the model as preceding context (spelling, names, style).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Words to favour (names, jargon).
    #[arg(long)]
    pub hotwords: Option<String>,
    /// Add per-word start/end/probability (cross-attention alignment).
    #[arg(long)]
    pub word_timestamps: bool,
    /// One segment per piece, no timestamp tokens (slightly faster).
    #[arg(long)]
    pub without_timestamps: bool,
    /// Transcribe only the speech Silero VAD finds (needs ONNX Runtime: `pip install
    /// onnxruntime faster-whisper`); `false` transcribes everything.
    #[arg(long, default_value_t = defaults().vad_filter, action = clap::ArgAction::Set)]
    pub vad_filter: bool,
    #[command(flatten)]
    pub vad: VadOptionArgs,
    /// Give every short clip a 30 s window of its own instead of packing several clips,
    /// separated by silence, into one window (packing is faster: the encoder's cost is per
    /// window; clips whose share of a packed result is unclear are decoded alone anyway).
    #[arg(long)]
    pub no_pack: bool,
    /// Label on a Ray cluster (`pip install 'audiodecode[ray]'`): `--ray=ADDRESS`, or
    /// `--ray` for $RAY_ADDRESS or a local one; the same output, resumable.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        value_name = "ADDRESS",
        conflicts_with_all = ["format", "shard"]
    )]
    pub ray: Option<String>,
    /// Files labelled together before their lines are written at once. A crash loses at
    /// most one block; larger blocks pack and batch a little better.
    #[arg(long, default_value_t = DEFAULT_BLOCK_FILES)]
    pub block: usize,
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), CliError> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("'{s}': expected i/n, e.g. 0/4")))?;
    let i: usize = i
        .trim()
        .parse()
        .map_err(|_| CliError::Usage(format!("'{s}': bad shard index")))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| CliError::Usage(format!("'{s}': bad shard count")))?;
    if n == 0 || i >= n {
        return Err(CliError::Usage(format!("'{s}': need 0 <= i < n")));
    }
    Ok((i, n))
}

/// A decoding threshold that `none` switches off.
#[derive(Clone, Copy, Debug)]
pub struct Threshold(pub Option<f32>);

/// As `--...-threshold` takes it (`{:?}` keeps a float's `.0`: `-1.0`, not `-1`).
impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("none"),
        }
    }
}

fn parse_threshold(s: &str) -> Result<Threshold, CliError> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Threshold(None));
    }
    s.parse::<f32>()
        .map(|v| Threshold(Some(v)))
        .map_err(|_| CliError::Usage(format!("'{s}': expected a number or 'none'")))
}

impl LabelArgs {
    pub fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            batch_size: self.batch_size,
            language: (self.language != AUTO_LANGUAGE).then(|| self.language.clone()),
            multilingual: self.multilingual,
            task: self.task.clone(),
            beam_size: self.beam_size,
            best_of: self.best_of,
            patience: self.patience,
            temperatures: self.temperature.clone(),
            compression_ratio_threshold: self.compression_ratio_threshold.0,
            log_prob_threshold: self.log_prob_threshold.0,
            no_speech_threshold: self.no_speech_threshold.0,
            initial_prompt: self.initial_prompt.clone(),
            hotwords: self.hotwords.clone(),
            word_timestamps: self.word_timestamps,
            without_timestamps: self.without_timestamps,
            vad_filter: self.vad_filter,
            vad: self.vad.apply(defaults().vad),
            ..self.model.options()
        }
    }
}

/// Every input expanded to audio file paths, in order, duplicates dropped.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<String>, CliError> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for input in inputs {
        let text = input.to_string_lossy().to_string();
        // A URL ending in `/` is a prefix in object storage: a directory.
        let remote_dir = crate::store::is_url(&text) && text.ends_with('/');
        let dataset = if remote_dir || input.is_dir() {
            Some(Dataset::Directory { path: text.clone() })
        } else {
            let ext = crate::store::extension_of(input);
            matches!(ext.as_deref(), Some("jsonl" | "json" | "csv")).then(|| Dataset::Manifest {
                path: text.clone(),
                label_field: None,
            })
        };
        let paths = match dataset {
            Some(dataset) => manifest::resolve(&dataset)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .items
                .into_iter()
                .map(|item| item.path)
                .collect(),
            // Missing or unreadable files become error lines, not a refusal to start.
            None => vec![text],
        };
        for path in paths {
            if seen.insert(path.clone()) {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Paths already labelled in a JSONL output. A torn last line (a crash mid-write) is cut.
fn labelled_paths(out: &Path) -> Result<HashSet<String>, CliError> {
    let mut done = HashSet::new();
    let Ok(mut file) = OpenOptions::new().read(true).write(true).open(out) else {
        return Ok(done);
    };
    let mut good_len = 0u64;
    let mut reader = BufReader::new(&mut file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| CliError::Failed(format!("{}: cannot read: {e}", out.display())))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(path) = value.get("audio_filepath").and_then(|p| p.as_str()) {
                done.insert(path.to_string());
            }
        }
        good_len += n as u64;
    }
    drop(reader);
    if file.metadata().map(|m| m.len()).unwrap_or(0) > good_len {
        file.set_len(good_len).map_err(|e| {
            CliError::Failed(format!(
                "{}: cannot cut a torn last line: {e}",
                out.display()
            ))
        })?;
    }
    Ok(done)
}

pub fn run_label(args: &LabelArgs) -> ExitCode {
    // Bad options are refused before any work, as the Python client refuses them: past
    // this point they would turn every file into an error line.
    let options = args.options();
    if let Err(e) = check_options(&options) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(address) = &args.ray {
        return crate::cli::ray::run_on_ray(args, address);
    }
    // Per-file errors are in the output and counted; the run succeeded when it labelled
    // at least one of its files (or had none left to do).
    match label(args, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The decoding options' ranges, as `audiodecode._whisper_options` checks them (the
/// model-dependent ones, language and task, are checked once it is loaded).
pub fn check_options(o: &TranscribeOptions) -> Result<(), CliError> {
    let bad = |message: String| Err(CliError::Usage(message));
    if o.beam_size == 0 {
        return bad("--beam-size must be at least 1".into());
    }
    if !(o.patience.is_finite() && o.patience > 0.0) {
        return bad(format!(
            "--patience must be a finite number > 0, not {}",
            o.patience
        ));
    }
    if o.temperatures.is_empty() {
        return bad("--temperature needs at least one value".into());
    }
    if let Some(t) = o
        .temperatures
        .iter()
        .find(|t| !(t.is_finite() && **t >= 0.0))
    {
        return bad(format!(
            "--temperature values must be finite numbers >= 0, not {t}"
        ));
    }
    let thresholds = [
        (
            "--compression-ratio-threshold",
            o.compression_ratio_threshold,
        ),
        ("--log-prob-threshold", o.log_prob_threshold),
        ("--no-speech-threshold", o.no_speech_threshold),
    ];
    for (flag, value) in thresholds {
        if let Some(v) = value.filter(|v| !v.is_finite()) {
            return bad(format!("{flag} must be a finite number or 'none', not {v}"));
        }
    }
    let vad = &o.vad;
    if !(0.0..=1.0).contains(&vad.threshold) {
        return bad(format!(
            "--vad-threshold must be within 0..1, not {}",
            vad.threshold
        ));
    }
    if let Some(neg) = vad.neg_threshold {
        if !(0.0..=1.0).contains(&neg) {
            return bad(format!(
                "--vad-neg-threshold must be within 0..1, not {neg}"
            ));
        }
        // Speech starts at or above the threshold and ends below the negative one: above
        // it, speech would end where it starts.
        if neg > vad.threshold {
            return bad(format!(
                "--vad-neg-threshold ({neg}) must not be above --vad-threshold ({})",
                vad.threshold
            ));
        }
    }
    crate::vad::check_options(vad).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(())
}

fn label(args: &LabelArgs, options: TranscribeOptions) -> Result<(), CliError> {
    let files = select_files(args)?;
    // Decide what is left to do and open the output before loading the model.
    let (output, todo) = open_output(args, &files)?;
    let skipped = files.len() - todo.len();
    if !args.quiet && skipped > 0 {
        eprintln!(
            "resuming: {skipped} of {} files already labelled",
            files.len()
        );
    }
    if todo.is_empty() {
        return Ok(());
    }
    let (key, schedule) = plan(args, &options)?;
    let paths: Vec<String> = todo.iter().map(|&k| files[k].clone()).collect();
    let mut sink = Sink::new(args, output, &todo);
    let cancel = AtomicBool::new(false);
    // Note [Start-up overlaps the model's load]: ONNX Runtime and the VAD model load while
    // the Whisper model does, and the workers decode and find the speech of the first
    // files before it has finished.
    let loaded = std::sync::OnceLock::new();
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let started = std::time::Instant::now();
            let engine = std::panic::catch_unwind(|| {
                WhisperEngine::load(&key)
                    .and_then(|engine| engine.check_options(&options).map(|()| engine))
                    .map_err(CliError::from)
            })
            .unwrap_or_else(|_| Err(CliError::Failed("loading the model panicked".into())));
            log::debug!("model loaded in {:.3} s", started.elapsed().as_secs_f64());
            // Always set, so no worker waits for a model that will not come.
            let _ = loaded.set(engine);
        });
        let vad = speech_detector(&options);
        let vad = match vad {
            Ok(vad) => vad,
            Err(e) => {
                let _ = loading.join();
                return Err(CliError::from(e));
            }
        };
        let engine = || loaded.wait().as_ref().ok();
        label_files(
            &engine,
            vad,
            &paths,
            &options,
            schedule,
            &cancel,
            &mut |events| sink.write_block(events, &cancel),
        );
        Ok(())
    })?;
    match loaded.into_inner() {
        Some(Err(e)) => Err(e),
        _ => sink.finish(&key),
    }
}

/// The inputs expanded to files, then this run's shard of them.
fn select_files(args: &LabelArgs) -> Result<Vec<String>, CliError> {
    let files = expand_inputs(&args.inputs)?;
    let Some((i, n)) = args.shard else {
        return Ok(files);
    };
    Ok(files
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % n == i)
        .map(|(_, f)| f)
        .collect())
}

/// Where the labels go.
enum Output {
    /// One JSONL manifest; a block's lines are appended in one write. `names[k]` is
    /// `files[k]` as the manifest writes it (relative to its directory).
    Jsonl { file: File, names: Vec<String> },
    /// `--format`: one file per input, `paths[k]` for `files[k]`.
    Text {
        format: TextFormat,
        paths: Vec<PathBuf>,
    },
}

/// The output, ready to write, and the indices of the files still to label.
fn open_output(args: &LabelArgs, files: &[String]) -> Result<(Output, Vec<usize>), CliError> {
    let Some(format) = args.format else {
        create_parent(&args.out)?;
        // The manifest's directory exists now, so its physical path can be known.
        let mut rule = PathRule::for_manifest(&args.out);
        let done = resumed_lines(args)?;
        let file = open_jsonl(&args.out, args.overwrite)?;
        let todo = (0..files.len())
            .filter(|&k| !done.contains(&files[k], &mut rule))
            .collect();
        let names = files.iter().map(|f| rule.written(f)).collect();
        return Ok((Output::Jsonl { file, names }, todo));
    };
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Failed(format!("{}: cannot create: {e}", args.out.display())))?;
    let paths = format_paths(
        &args.out,
        files,
        format.extension(),
        &mut PathRule::keys_only(),
    );
    // As for a JSONL output: existing files (a hand-corrected transcript) are replaced only
    // when asked to, and the refusal comes before any work.
    if !args.resume && !args.overwrite {
        if let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(CliError::Failed(format!(
                "{} already exists; use --resume to skip the inputs labelled already or \
                 --overwrite to replace their files",
                existing.display()
            )));
        }
    }
    let todo = (0..files.len())
        .filter(|&k| !(args.resume && paths[k].exists()))
        .collect();
    Ok((Output::Text { format, paths }, todo))
}

/// The `audio_filepath`s of the lines a `--resume` finds in the JSONL output already.
#[derive(Default)]
struct DoneLines {
    /// As written.
    written: HashSet<String>,
    /// Each resolved against the manifest's directory ([`PathRule::line_key`]).
    keys: HashSet<String>,
}

impl DoneLines {
    /// Whether `file` (as the run names it) has a line. A line names it when it resolves,
    /// against the manifest's directory, to the same file. Earlier versions wrote paths as
    /// given (relative to their working directory) and matched them as text: such a line
    /// still matches its text when it names no file against the manifest's directory.
    fn contains(&self, file: &str, rule: &mut PathRule) -> bool {
        if self.keys.contains(&rule.input_key(file)) {
            return true;
        }
        self.written.contains(file) && !Path::new(&rule.line_key(file)).exists()
    }
}

/// The lines a `--resume` finds labelled in the JSONL output already (none otherwise); a
/// non-empty output is refused unless resumed or overwritten.
fn resumed_lines(args: &LabelArgs) -> Result<DoneLines, CliError> {
    let exists = args.out.metadata().map(|m| m.len() > 0).unwrap_or(false);
    if exists && !args.resume && !args.overwrite {
        return Err(CliError::Failed(format!(
            "{} already exists; use --resume to continue it or --overwrite to replace it",
            args.out.display()
        )));
    }
    if !args.resume {
        return Ok(DoneLines::default());
    }
    let written = labelled_paths(&args.out)?;
    let mut rule = PathRule::for_manifest(&args.out);
    let keys = written.iter().map(|w| rule.line_key(w)).collect();
    Ok(DoneLines { written, keys })
}

/// Creates the directory `out` goes in.
fn create_parent(out: &Path) -> Result<(), CliError> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::Failed(format!("{}: cannot create: {e}", parent.display())))?;
    }
    Ok(())
}

/// The JSONL output opened for appending, emptied on `--overwrite`.
fn open_jsonl(out: &Path, overwrite: bool) -> Result<File, CliError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| CliError::Failed(format!("{}: cannot open: {e}", out.display())))?;
    if overwrite {
        file.set_len(0)
            .map_err(|e| CliError::Failed(format!("{}: cannot truncate: {e}", out.display())))?;
    }
    Ok(file)
}

/// The model to load, and how the run spreads its work.
fn plan(args: &LabelArgs, options: &TranscribeOptions) -> Result<(ModelKey, Schedule), CliError> {
    let cores = crate::feed::tune::Resources::detect().logical_cores;
    let key = ModelKey::from_options(options, cores)?;
    let batch_size = match options.batch_size {
        0 => auto_batch_size(key.cuda),
        n => n as usize,
    };
    let workers = if args.workers == 0 {
        cores
    } else {
        args.workers
    };
    let schedule = Schedule {
        workers,
        batch_size,
        pack: !args.no_pack,
        block_files: args.block,
        strict: args.strict,
        item_deadline: args
            .item_deadline
            .map_or(DEFAULT_ITEM_DEADLINE, std::time::Duration::from_secs),
    };
    Ok((key, schedule))
}

/// Takes each labelled block: writes it out, prints its error lines, moves the progress bar.
struct Sink<'a> {
    args: &'a LabelArgs,
    output: Output,
    /// `todo[i]`: the index in the selected files of the run's i-th file.
    todo: &'a [usize],
    progress: ProgressBar,
    started: Instant,
    audio_seconds: f64,
    errors: usize,
    /// The first failed write; it cancels the run.
    write_error: Option<String>,
    /// Makes the paths in error messages absolute.
    rule: PathRule,
}

impl<'a> Sink<'a> {
    fn new(args: &'a LabelArgs, output: Output, todo: &'a [usize]) -> Self {
        Self {
            args,
            output,
            todo,
            progress: files_progress(todo.len(), args.quiet),
            started: Instant::now(),
            audio_seconds: 0.0,
            errors: 0,
            write_error: None,
            rule: PathRule::keys_only(),
        }
    }

    /// An error about a relative input names it absolutely: the line's `audio_filepath` is
    /// relative to the manifest's directory and the message's path to the working
    /// directory, so only an absolute one says which file is missing wherever it is read.
    fn absolute_error(&mut self, label: &mut FileLabel) {
        let input = &label.audio_filepath;
        if crate::store::is_url(input) || Path::new(input).is_absolute() {
            return;
        }
        let Some(rest) = label
            .error
            .as_deref()
            .and_then(|e| e.strip_prefix(input.as_str()))
            .filter(|rest| rest.starts_with(':'))
        else {
            return;
        };
        label.error = Some(format!("{}{rest}", self.rule.input_key(input)));
    }

    fn write_block(&mut self, events: Vec<LabelEvent>, cancel: &AtomicBool) {
        // A block's JSONL lines go out in one write: a crash keeps or loses whole
        // blocks, so --resume starts at a block boundary and relabels what the
        // uninterrupted run would have (a torn write leaves a cut line that it drops).
        let mut lines = String::new();
        let count = events.len() as u64;
        for event in events {
            let mut label = event.label;
            self.absolute_error(&mut label);
            self.count(&label);
            let k = self.todo[event.index];
            match &self.output {
                Output::Jsonl { names, .. } => {
                    if let Some(name) = names.get(k) {
                        label.audio_filepath.clone_from(name);
                    }
                    lines.push_str(&label.to_json_line());
                    lines.push('\n');
                }
                Output::Text { format, paths } if label.error.is_none() => {
                    let path = &paths[k];
                    let written = crate::sys::write_atomically(path, |w| {
                        w.write_all(format.render(&label).as_bytes())
                    });
                    if let Err(e) = written {
                        self.write_error
                            .get_or_insert(format!("{}: cannot write: {e}", path.display()));
                    }
                }
                Output::Text { .. } => {}
            }
        }
        if let Output::Jsonl { file, .. } = &mut self.output {
            if let Err(e) = file.write_all(lines.as_bytes()) {
                self.write_error
                    .get_or_insert(format!("{}: cannot write: {e}", self.args.out.display()));
            }
        }
        if self.write_error.is_some() {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        self.progress.set_message(format!(
            "{:.1} audio s/s, {} errors",
            self.audio_seconds / elapsed,
            self.errors
        ));
        self.progress.inc(count);
    }

    /// Adds a file's audio to the total; a file's error is counted and printed.
    fn count(&mut self, label: &FileLabel) {
        self.audio_seconds += label.duration.unwrap_or(0.0);
        if let Some(error) = &label.error {
            self.errors += 1;
            self.progress.suspend(|| eprintln!("error: {error}"));
        }
    }

    /// Clears the progress bar, syncs the output and prints the summary.
    fn finish(self, key: &ModelKey) -> Result<(), CliError> {
        self.progress.finish_and_clear();
        if let Some(e) = self.write_error {
            return Err(CliError::Failed(e));
        }
        let out = &self.args.out;
        if let Output::Jsonl { file, .. } = &self.output {
            file.sync_all()
                .map_err(|e| CliError::Failed(format!("{}: cannot sync: {e}", out.display())))?;
        }
        if !self.args.quiet {
            let files = self.todo.len();
            let elapsed = self.started.elapsed().as_secs_f64();
            eprintln!(
                "labelled {files} files ({} errors): {:.1} s of audio in {:.1} s ({:.2} files/s, {:.1}x realtime) with {}",
                self.errors,
                self.audio_seconds,
                elapsed,
                files as f64 / elapsed.max(1e-9),
                self.audio_seconds / elapsed.max(1e-9),
                key.dir.display()
            );
        }
        // Every file failed (all missing, say): the lines record why, but the run did
        // nothing it was asked to, and a script must not take it for done.
        let files = self.todo.len();
        if files > 0 && self.errors == files {
            let what = match files {
                1 => "the only file failed".to_string(),
                n => format!("all {n} files failed"),
            };
            return Err(CliError::Failed(format!(
                "no file was labelled: {what} (errors above)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn options(flags: &[&str]) -> TranscribeOptions {
        let argv = [&["audiodecode", "label", "a.wav", "-o", "out.jsonl"], flags].concat();
        let Command::Label(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("not the label command");
        };
        args.options()
    }

    #[test]
    fn clap_defaults_are_the_transcribe_options_defaults() {
        assert_eq!(options(&[]), TranscribeOptions::default());
    }

    #[test]
    fn flags_override_the_defaults() {
        let o = options(&[
            "--temperature",
            "0,0.5",
            "--log-prob-threshold",
            "-2",
            "--no-speech-threshold",
            "none",
            "--language",
            "de",
        ]);
        assert_eq!(o.temperatures, [0.0, 0.5]);
        assert_eq!(o.log_prob_threshold, Some(-2.0));
        assert_eq!(o.no_speech_threshold, None);
        assert_eq!(o.language.as_deref(), Some("de"));
        assert_eq!(o.beam_size, TranscribeOptions::default().beam_size);
    }
}
