//! The `audiodecode` command line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::decode::{probe_info, ChannelMode};
use crate::output::{write_audio, OutputFormat};
use crate::pipeline::{load, LoadRequest};
use crate::resample::Quality;

#[derive(Parser, Debug)]
#[command(
    name = "audiodecode",
    version,
    about = "Fast audio decoding and batching for ML training"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show codec, container, rate, channels and length without decoding the audio.
    Info(InfoArgs),
    /// Decode files to float32 (.wav, .npy or raw .f32), resampled and downmixed as asked.
    Decode(DecodeArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One JSON object per line: path, codec, container, sample_rate, channels, frames, duration.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output file (format from its extension: .wav, .npy, .f32), or a directory ending in
    /// `/` (or existing) for several inputs.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Target sample rate in Hz (default: the file's own rate).
    #[arg(long = "sr")]
    pub sample_rate: Option<u32>,
    /// Average all channels into one.
    #[arg(long)]
    pub mono: bool,
    /// Start time in seconds.
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Length in seconds (default: to the end).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Resampling quality.
    #[arg(long, default_value = "hq", value_parser = parse_quality)]
    pub quality: Quality,
    /// Keep what decoded before damaged or truncated data instead of failing the file.
    #[arg(long)]
    pub lenient: bool,
    /// Output format when writing into a directory.
    #[arg(long, default_value = "wav", value_parser = parse_format)]
    pub format: OutputFormat,
    /// Decode threads (default: all cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_quality(s: &str) -> Result<Quality, String> {
    Quality::parse(s).ok_or_else(|| format!("unknown quality {s:?} (fast, hq, vhq)"))
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    OutputFormat::parse(s).ok_or_else(|| format!("unknown format {s:?} (wav, npy, f32)"))
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Info(args) => run_info(&args),
        Command::Decode(args) => run_decode(&args),
    }
}

fn run_info(args: &InfoArgs) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        match probe_info(path) {
            Ok(info) if args.json => match serde_json::to_string(&info) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    failed = true;
                }
            },
            Ok(info) => {
                let frames = info.frames.map_or("?".into(), |f| f.to_string());
                let duration = info.duration.map_or("?".into(), |d| format!("{d:.3} s"));
                println!(
                    "{}: {} in {}, {} Hz, {} ch, {} frames, {}",
                    info.path.display(),
                    info.codec,
                    info.container,
                    info.sample_rate,
                    info.channels,
                    frames,
                    duration
                );
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    exit_code(failed)
}

fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Where each input goes.
fn plan_outputs(args: &DecodeArgs) -> Result<Vec<(PathBuf, PathBuf, OutputFormat)>, String> {
    let out = &args.output;
    let as_dir = out.to_string_lossy().ends_with('/') || out.is_dir();
    if !as_dir {
        if args.files.len() > 1 {
            return Err(format!(
                "{} inputs need an output directory (end -o with '/')",
                args.files.len()
            ));
        }
        let format = OutputFormat::from_extension(out).ok_or_else(|| {
            format!(
                "{}: unknown output extension (use .wav, .npy or .f32)",
                out.display()
            )
        })?;
        return Ok(vec![(args.files[0].clone(), out.clone(), format)]);
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut taken = HashSet::new();
    let ext = args.format.extension();
    Ok(args
        .files
        .iter()
        .map(|input| {
            let stem = input
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "audio".into());
            // Two inputs with one stem (a/x.mp3, b/x.flac) must not overwrite each other.
            let mut name = format!("{stem}.{ext}");
            let mut n = 1;
            while !taken.insert(name.clone()) {
                name = format!("{stem}-{n}.{ext}");
                n += 1;
            }
            (input.clone(), out.join(name), args.format)
        })
        .collect())
}

fn run_decode(args: &DecodeArgs) -> ExitCode {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let plan = match plan_outputs(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let req = LoadRequest {
        sample_rate: args.sample_rate,
        channels: if args.mono {
            ChannelMode::Mono
        } else {
            ChannelMode::Keep
        },
        offset: args.offset,
        duration: args.duration,
        quality: args.quality,
        lenient: args.lenient,
    };
    let workers = jobs.min(plan.len());
    // Spare threads split long files into parallel segments.
    let threads_per_file = (jobs / workers).max(1);
    let progress = if args.quiet || plan.len() < 2 {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(plan.len() as u64)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} files ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let audio_seconds = Mutex::new(0.0f64);
    let failures = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((input, output, format)) = plan.get(i) else {
                    break;
                };
                match decode_one(input, output, *format, &req, threads_per_file) {
                    Ok(seconds) => {
                        if let Ok(mut total) = audio_seconds.lock() {
                            *total += seconds;
                        }
                    }
                    Err(message) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        progress.suspend(|| eprintln!("error: {message}"));
                    }
                }
                progress.inc(1);
            });
        }
    });
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    if !args.quiet {
        let seconds = audio_seconds.lock().map_or(0.0, |s| *s);
        eprintln!(
            "decoded {} of {} files: {:.1} s of audio in {:.2} s ({:.0}x realtime, {:.1} files/s, {} workers)",
            plan.len() - failed,
            plan.len(),
            seconds,
            elapsed,
            seconds / elapsed.max(1e-9),
            (plan.len() - failed) as f64 / elapsed.max(1e-9),
            workers
        );
    }
    exit_code(failed > 0)
}

/// Decode one file and write it; returns the seconds of audio written.
fn decode_one(
    input: &Path,
    output: &Path,
    format: OutputFormat,
    req: &LoadRequest,
    threads: usize,
) -> Result<f64, String> {
    let audio = load(input, req, threads).map_err(|e| e.to_string())?;
    if audio.damaged {
        eprintln!(
            "warning: {}: damaged data; kept the first {:.3} s",
            input.display(),
            audio.duration()
        );
    }
    write_audio(output, &audio, format).map_err(|e| {
        format!(
            "{}: cannot write {}: {e}",
            input.display(),
            output.display()
        )
    })?;
    Ok(audio.duration())
}
