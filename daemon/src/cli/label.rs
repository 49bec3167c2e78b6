//! `audiodecode label`: pseudo-transcribe a dataset into a JSONL manifest (or subtitle files).

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use audiodecode_protocol::{Dataset, TranscribeOptions};
use clap::Args;

use crate::cli::error::CliError;
use crate::feed::manifest;
use crate::label::record::TextFormat;
use crate::label::run::{auto_batch_size, Schedule, DEFAULT_BLOCK_FILES};
use crate::label::{label_files, ModelKey, WhisperEngine};

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
    /// Replace an existing output instead of refusing.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Label every n-th input starting at i (0-based), e.g. `--shard 2/8`.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// CTranslate2 model directory or name (tiny, tiny.en, base, base.en, small, …, large-v3,
    /// distil-large-v3).
    #[arg(long, default_value = "base")]
    pub model: String,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    pub device: String,
    /// auto: int8 on CPU, float16 on CUDA.
    #[arg(long, default_value = "auto")]
    pub compute_type: String,
    /// Model threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Decode/feature workers (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// ≤30 s pieces per model call (default: 8 on CPU, 16 on CUDA).
    #[arg(long, default_value_t = 0)]
    pub batch_size: u32,
    /// Language code, or `auto` to detect it per file.
    #[arg(long, default_value = "auto")]
    pub language: String,
    /// Re-detect the language for every ≤30 s piece (recordings that switch languages).
    #[arg(long)]
    pub multilingual: bool,
    #[arg(long, default_value = "transcribe", value_parser = ["transcribe", "translate"])]
    pub task: String,
    #[arg(long, default_value_t = 5)]
    pub beam_size: u32,
    /// Candidates sampled at each non-zero fallback temperature.
    #[arg(long, default_value_t = 5)]
    pub best_of: u32,
    #[arg(long, default_value_t = 1.0)]
    pub patience: f32,
    /// Fallback temperatures, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.2,0.4,0.6,0.8,1.0")]
    pub temperature: Vec<f32>,
    /// Fall back when the text compresses better than this (repetition); `none` disables.
    #[arg(long, default_value = "2.4", value_parser = parse_threshold)]
    pub compression_ratio_threshold: Threshold,
    /// Fall back when the mean token log probability is below this; `none` disables.
    #[arg(long, default_value = "-1.0", value_parser = parse_threshold, allow_hyphen_values = true)]
    pub log_prob_threshold: Threshold,
    /// A window is silence when its no-speech probability is above this and its text is
    /// unlikely; `none` disables.
    #[arg(long, default_value = "0.6", value_parser = parse_threshold)]
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
    /// Give every short clip a 30 s window of its own instead of packing several clips,
    /// separated by silence, into one window (packing is faster: the encoder's cost is per
    /// window; clips whose share of a packed result is unclear are decoded alone anyway).
    #[arg(long)]
    pub no_pack: bool,
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
            model: self.model.clone(),
            device: self.device.clone(),
            compute_type: self.compute_type.clone(),
            threads: self.threads,
            batch_size: self.batch_size,
            language: (self.language != "auto").then(|| self.language.clone()),
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
            ..TranscribeOptions::default()
        }
    }
}

/// Every input expanded to audio file paths, in order, duplicates dropped.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<String>, CliError> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for input in inputs {
        let text = input.to_string_lossy().to_string();
        let dataset = if input.is_dir() {
            Some(Dataset::Directory { path: text.clone() })
        } else {
            let ext = input
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
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

/// Where `--format` writes the output of input `index`; a stem shared by several inputs gets
/// the index appended so no output overwrites another.
fn text_output_path(
    dir: &Path,
    input: &str,
    format: TextFormat,
    clashes: bool,
    index: usize,
) -> PathBuf {
    let stem = Path::new(input)
        .file_stem()
        .map_or_else(|| "audio".to_string(), |s| s.to_string_lossy().to_string());
    let name = if clashes {
        format!("{stem}-{index}.{}", format.extension())
    } else {
        format!("{stem}.{}", format.extension())
    };
    dir.join(name)
}

pub fn run_label(args: &LabelArgs) -> ExitCode {
    // Per-file errors are in the output and counted; the run itself succeeded.
    match label(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn label(args: &LabelArgs) -> Result<(), CliError> {
    let options = args.options();
    let mut files = expand_inputs(&args.inputs)?;
    if let Some((i, n)) = args.shard {
        files = files
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, f)| f)
            .collect();
    }
    let stems: Vec<String> = files
        .iter()
        .map(|f| {
            Path::new(f)
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        })
        .collect();
    let mut stem_counts = std::collections::HashMap::new();
    for s in &stems {
        *stem_counts.entry(s.clone()).or_insert(0usize) += 1;
    }
    let text_path = |k: usize| {
        args.format.map(|format| {
            text_output_path(&args.out, &files[k], format, stem_counts[&stems[k]] > 1, k)
        })
    };

    // Decide what is left to do and open the output before loading the model.
    let mut jsonl = None;
    let todo: Vec<usize> = if args.format.is_some() {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| CliError::Failed(format!("{}: cannot create: {e}", args.out.display())))?;
        (0..files.len())
            .filter(|&k| !(args.resume && text_path(k).is_some_and(|p| p.exists())))
            .collect()
    } else {
        let exists = args.out.metadata().map(|m| m.len() > 0).unwrap_or(false);
        if exists && !args.resume && !args.overwrite {
            return Err(CliError::Failed(format!(
                "{} already exists; use --resume to continue it or --overwrite to replace it",
                args.out.display()
            )));
        }
        let done = if args.resume {
            labelled_paths(&args.out)?
        } else {
            HashSet::new()
        };
        if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                CliError::Failed(format!("{}: cannot create: {e}", parent.display()))
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)
            .map_err(|e| CliError::Failed(format!("{}: cannot open: {e}", args.out.display())))?;
        if args.overwrite {
            file.set_len(0).map_err(|e| {
                CliError::Failed(format!("{}: cannot truncate: {e}", args.out.display()))
            })?;
        }
        jsonl = Some(file);
        (0..files.len())
            .filter(|&k| !done.contains(&files[k]))
            .collect()
    };
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

    let cores = crate::feed::tune::Resources::detect().logical_cores;
    let key = ModelKey::from_options(&options, cores)?;
    let engine = WhisperEngine::load(&key)?;
    engine.check_options(&options)?;
    let batch_size = match options.batch_size {
        0 => auto_batch_size(key.cuda),
        n => n as usize,
    };
    let workers = if args.workers == 0 {
        cores
    } else {
        args.workers
    };

    let progress = crate::cli::progress::files_progress(todo.len(), args.quiet);
    let started = Instant::now();
    let paths: Vec<String> = todo.iter().map(|&k| files[k].clone()).collect();
    let mut audio_seconds = 0.0f64;
    let mut errors = 0usize;
    let mut write_error: Option<String> = None;
    let cancel = AtomicBool::new(false);
    label_files(
        &engine,
        &paths,
        &options,
        Schedule {
            workers,
            batch_size,
            pack: !args.no_pack,
            block_files: args.block,
        },
        &cancel,
        &mut |events| {
            // A block's JSONL lines go out in one write: a crash keeps or loses whole
            // blocks, so --resume starts at a block boundary and relabels what the
            // uninterrupted run would have (a torn write leaves a cut line that it drops).
            let mut lines = String::new();
            let count = events.len() as u64;
            for event in events {
                let label = event.label;
                audio_seconds += label.duration.unwrap_or(0.0);
                if let Some(error) = &label.error {
                    errors += 1;
                    progress.suspend(|| eprintln!("error: {error}"));
                }
                if jsonl.is_some() {
                    lines.push_str(&label.to_json_line());
                    lines.push('\n');
                } else if let (Some(path), None) = (text_path(todo[event.index]), &label.error) {
                    let format = args.format.unwrap_or(TextFormat::Json);
                    let written = crate::sys::write_atomically(&path, |w| {
                        w.write_all(format.render(&label).as_bytes())
                    });
                    if let Err(e) = written {
                        write_error.get_or_insert(format!("{}: cannot write: {e}", path.display()));
                    }
                }
            }
            if let Some(file) = &mut jsonl {
                if let Err(e) = file.write_all(lines.as_bytes()) {
                    write_error.get_or_insert(format!("{}: cannot write: {e}", args.out.display()));
                }
            }
            if write_error.is_some() {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!(
                "{:.1} audio s/s, {errors} errors",
                audio_seconds / elapsed
            ));
            progress.inc(count);
        },
    );
    progress.finish_and_clear();
    if let Some(e) = write_error {
        return Err(CliError::Failed(e));
    }
    if let Some(file) = &jsonl {
        file.sync_all()
            .map_err(|e| CliError::Failed(format!("{}: cannot sync: {e}", args.out.display())))?;
    }
    if !args.quiet {
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "labelled {} files ({errors} errors): {:.1} s of audio in {:.1} s ({:.2} files/s, {:.1}x realtime) with {}",
            todo.len(),
            audio_seconds,
            elapsed,
            todo.len() as f64 / elapsed.max(1e-9),
            audio_seconds / elapsed.max(1e-9),
            key.dir.display()
        );
    }
    Ok(())
}
