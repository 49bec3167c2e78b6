//! `audiodecode info` and `audiodecode decode`: probe files, or decode them to disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::cli::error::CliError;
use crate::cli::output::{clash_free_paths, write_audio, OutputFormat};
use crate::cli::progress::files_progress;
use crate::cli::{exit_code, DecodeArgs, InfoArgs};
use crate::decode::integrity::{self, Integrity};
use crate::decode::{load, probe_info, ChannelMode, LoadRequest};

pub fn run_info(args: &InfoArgs) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        let report = probe_info(path).and_then(|info| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let check = if args.check {
                Some(integrity::check(path, threads)?)
            } else {
                None
            };
            Ok((info, check))
        });
        match report {
            Ok((info, check)) if args.json => {
                let mut line = serde_json::to_value(&info).unwrap_or_default();
                if let (Some(c), Some(object)) = (check, line.as_object_mut()) {
                    object.insert("decoded_frames".into(), c.frames.into());
                    object.insert("damaged".into(), c.damage.is_some().into());
                    object.insert("damage".into(), c.damage.into());
                }
                println!("{line}");
            }
            Ok((info, check)) => {
                let frames = info.frames.map_or("?".into(), |f| f.to_string());
                let duration = info.duration.map_or("?".into(), |d| format!("{d:.3} s"));
                let verdict = match check {
                    None => String::new(),
                    Some(Integrity {
                        frames,
                        damage: None,
                        ..
                    }) => format!("; intact, {frames} frames decode"),
                    Some(Integrity {
                        frames,
                        damage: Some(d),
                        ..
                    }) => {
                        format!("; damaged, {frames} frames decode: {d}")
                    }
                };
                println!(
                    "{}: {} in {}, {} Hz, {} ch, {} frames, {} (read by {}){}",
                    crate::store::shown(&info.path),
                    info.codec,
                    info.container,
                    info.sample_rate,
                    info.channels,
                    frames,
                    duration,
                    info.backend.name(),
                    crate::store::redacted(&verdict)
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

/// One input, where it goes, and in which format.
type Job = (PathBuf, PathBuf, OutputFormat);

/// Where each input goes.
fn plan_outputs(args: &DecodeArgs) -> Result<Vec<Job>, CliError> {
    let out = &args.output;
    let as_dir = out.to_string_lossy().ends_with('/') || out.is_dir();
    if !as_dir {
        if args.files.len() > 1 {
            return Err(CliError::Usage(format!(
                "{} inputs need an output directory (end -o with '/')",
                args.files.len()
            )));
        }
        let format = OutputFormat::from_extension(out).ok_or_else(|| {
            CliError::Usage(format!(
                "{}: unknown output extension (use .wav, .npy or .f32)",
                out.display()
            ))
        })?;
        return Ok(vec![(args.files[0].clone(), out.clone(), format)]);
    }
    std::fs::create_dir_all(out).map_err(|e| CliError::Usage(format!("{}: {e}", out.display())))?;
    // Two inputs with one stem (a/x.mp3, b/x.flac) must not overwrite each other.
    let outputs = clash_free_paths(
        out,
        args.files.iter().map(PathBuf::as_path),
        args.format.extension(),
    );
    Ok(args
        .files
        .iter()
        .cloned()
        .zip(outputs)
        .map(|(input, output)| (input, output, args.format))
        .collect())
}

pub fn run_decode(args: &DecodeArgs) -> ExitCode {
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
        channels: args
            .downmix
            .unwrap_or_else(|| ChannelMode::from_mono(args.mono)),
        offset: args.offset,
        duration: args.duration,
        quality: args.quality,
        lenient: !args.strict,
    };
    let workers = jobs.min(plan.len());
    // Spare threads split long files into parallel segments.
    let threads_per_file = (jobs / workers).max(1);
    let progress = files_progress(plan.len(), args.quiet || plan.len() < 2);

    let started = Instant::now();
    let (audio_seconds, failed) = decode_all(&plan, &req, workers, threads_per_file, &progress);
    progress.finish_and_clear();
    if !args.quiet {
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "decoded {} of {} files: {:.1} s of audio in {:.2} s ({:.0}x realtime, {:.1} files/s, {} workers)",
            plan.len() - failed,
            plan.len(),
            audio_seconds,
            elapsed,
            audio_seconds / elapsed.max(1e-9),
            (plan.len() - failed) as f64 / elapsed.max(1e-9),
            workers
        );
    }
    exit_code(failed > 0)
}

/// Decode the plan on `workers` threads, each taking the next file; returns the seconds of
/// audio written and the number of files that failed (each printed as an error line).
fn decode_all(
    plan: &[Job],
    req: &LoadRequest,
    workers: usize,
    threads_per_file: usize,
    progress: &ProgressBar,
) -> (f64, usize) {
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
                match decode_one(input, output, *format, req, threads_per_file) {
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
    let seconds = audio_seconds.lock().map_or(0.0, |s| *s);
    (seconds, failures.load(Ordering::Relaxed))
}

/// Decode one file and write it; returns the seconds of audio written.
fn decode_one(
    input: &Path,
    output: &Path,
    format: OutputFormat,
    req: &LoadRequest,
    threads: usize,
) -> Result<f64, CliError> {
    let audio = load(input, req, threads)?;
    if let Some(damage) = &audio.damage {
        eprintln!(
            "warning: {}; kept {:.3} s of audio (--strict fails such files)",
            crate::store::redacted(damage),
            audio.duration()
        );
    }
    write_audio(output, &audio, format).map_err(|e| {
        CliError::Failed(format!(
            "{}: cannot write {}: {e}",
            crate::store::shown(input),
            output.display()
        ))
    })?;
    Ok(audio.duration())
}
