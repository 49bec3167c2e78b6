//! The `audiodecode` command line.

pub mod error;
pub mod label;
pub mod output;
pub mod progress;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::cli::error::CliError;
use crate::cli::output::{write_audio, OutputFormat};
use crate::cli::progress::files_progress;
use crate::decode::resample::Quality;
use crate::decode::{load, LoadRequest};
use crate::decode::{probe_info, ChannelMode};
use crate::feed::server;

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
    /// Run the daemon that feeds training jobs through shared memory.
    Serve(ServeArgs),
    /// Show the running daemon's streams: throughput, ring fill, skipped items.
    Status(StatusArgs),
    /// Stop the running daemon.
    Stop(SocketArg),
    /// Pseudo-transcribe audio with Whisper into a JSONL manifest (or srt/vtt/txt files).
    Label(Box<crate::cli::label::LabelArgs>),
}

#[derive(Args, Debug)]
pub struct SocketArg {
    /// Control socket (default: $AUDIODECODE_SOCKET, $XDG_RUNTIME_DIR/audiodecode/daemon.sock
    /// or /tmp/audiodecode-<uid>/daemon.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(server::default_socket_path)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Decode workers at start (default: from the cores and GPUs detected; env
    /// AUDIODECODE_WORKERS). The tuner then moves the pool between --min-workers and
    /// --max-workers as the training job or the decoding is the bottleneck.
    #[arg(long, env = "AUDIODECODE_WORKERS")]
    pub workers: Option<usize>,
    #[arg(long, env = "AUDIODECODE_MIN_WORKERS")]
    pub min_workers: Option<usize>,
    #[arg(long, env = "AUDIODECODE_MAX_WORKERS")]
    pub max_workers: Option<usize>,
    /// Memory all batch rings may take together, in bytes (default: a tenth of the
    /// available memory); a stream's prefetch depth follows from it.
    #[arg(long, env = "AUDIODECODE_RING_BYTES")]
    pub ring_bytes: Option<u64>,
    /// Bytes of decoded audio to keep in memory across epochs (default: a quarter of the
    /// available memory; 0 turns the cache off; env AUDIODECODE_CACHE_BYTES).
    #[arg(long, env = "AUDIODECODE_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// Stay attached to the terminal instead of detaching.
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
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

fn parse_quality(s: &str) -> Result<Quality, CliError> {
    Quality::parse(s)
        .ok_or_else(|| CliError::Usage(format!("unknown quality {s:?} (fast, hq, vhq)")))
}

fn parse_format(s: &str) -> Result<OutputFormat, CliError> {
    OutputFormat::parse(s)
        .ok_or_else(|| CliError::Usage(format!("unknown format {s:?} (wav, npy, f32)")))
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging(matches!(cli.command, Command::Serve(_)));
    match cli.command {
        Command::Info(args) => run_info(&args),
        Command::Decode(args) => run_decode(&args),
        Command::Serve(args) => run_serve(&args),
        Command::Status(args) => run_status(&args),
        Command::Stop(args) => run_stop(&args),
        Command::Label(args) => crate::cli::label::run_label(&args),
    }
}

/// Diagnostics (not a command's output or its per-file errors, which it prints itself) go
/// through `log`: the daemon logs from `info` up, other commands only warnings.
/// `AUDIODECODE_LOG` overrides, in env_logger's syntax (e.g. `debug`).
fn init_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let _ =
        env_logger::Builder::from_env(env_logger::Env::new().filter_or("AUDIODECODE_LOG", default))
            .try_init();
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
fn plan_outputs(args: &DecodeArgs) -> Result<Vec<(PathBuf, PathBuf, OutputFormat)>, CliError> {
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
        channels: ChannelMode::from_mono(args.mono),
        offset: args.offset,
        duration: args.duration,
        quality: args.quality,
        lenient: args.lenient,
    };
    let workers = jobs.min(plan.len());
    // Spare threads split long files into parallel segments.
    let threads_per_file = (jobs / workers).max(1);
    let progress = files_progress(plan.len(), args.quiet || plan.len() < 2);

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
) -> Result<f64, CliError> {
    let audio = load(input, req, threads)?;
    if audio.damaged {
        eprintln!(
            "warning: {}: damaged data; kept the first {:.3} s",
            input.display(),
            audio.duration()
        );
    }
    write_audio(output, &audio, format).map_err(|e| {
        CliError::Failed(format!(
            "{}: cannot write {}: {e}",
            input.display(),
            output.display()
        ))
    })?;
    Ok(audio.duration())
}

fn run_serve(args: &ServeArgs) -> ExitCode {
    let socket = args.socket.path();
    if !args.foreground {
        return spawn_detached(args, &socket);
    }
    let mut plan = crate::feed::tune::plan(&crate::feed::tune::Resources::detect());
    if let Some(n) = args.max_workers {
        plan.max_workers = n.max(1);
    }
    if let Some(n) = args.min_workers {
        plan.min_workers = n.max(1);
    }
    if let Some(n) = args.workers {
        plan.workers = n.max(1);
        // An explicit size is a bound too, unless bounds were given.
        if args.max_workers.is_none() {
            plan.max_workers = plan.max_workers.max(plan.workers);
        }
    }
    plan.min_workers = plan.min_workers.min(plan.max_workers);
    plan.workers = plan.workers.clamp(plan.min_workers, plan.max_workers);
    if let Some(c) = args.cache_bytes {
        plan.cache_bytes = c;
    }
    if let Some(r) = args.ring_bytes {
        plan.ring_budget = r;
    }
    let options = server::ServeOptions {
        socket: socket.clone(),
        plan,
    };
    let ready = || {
        eprintln!(
            "audiodecode daemon {} listening on {}",
            std::process::id(),
            socket.display()
        )
    };
    match server::serve(options, ready) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "audiodecode: a daemon is already running on {}",
                socket.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}

/// Start `serve --foreground` in its own session with output to `daemon.log` beside the
/// socket, and return once it answers (re-exec rather than fork: forking a process that may
/// already have threads is unsafe).
fn spawn_detached(args: &ServeArgs, socket: &Path) -> ExitCode {
    if crate::feed::client::Client::connect(socket).is_ok() {
        eprintln!(
            "audiodecode: a daemon is already running on {}",
            socket.display()
        );
        return ExitCode::SUCCESS;
    }
    let dir = socket.parent().unwrap_or(Path::new("."));
    let log = std::fs::create_dir_all(dir).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
    });
    let (Ok(exe), Ok(log)) = (std::env::current_exe(), log) else {
        eprintln!(
            "error: cannot start the daemon (no executable path or log file in {})",
            dir.display()
        );
        return ExitCode::FAILURE;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg("--foreground")
        .arg("--socket")
        .arg(socket);
    if let Some(w) = args.workers {
        cmd.arg("--workers").arg(w.to_string());
    }
    for (flag, value) in [
        ("--cache-bytes", args.cache_bytes),
        ("--ring-bytes", args.ring_bytes),
        ("--min-workers", args.min_workers.map(|n| n as u64)),
        ("--max-workers", args.max_workers.map(|n| n as u64)),
    ] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v.to_string());
        }
    }
    let stderr = log.try_clone();
    cmd.stdin(std::process::Stdio::null()).stdout(log);
    if let Ok(e) = stderr {
        cmd.stderr(e);
    }
    crate::sys::detach_into_new_session(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(client) = crate::feed::client::Client::connect(socket) {
            if client.daemon_pid != child.id() {
                // Another daemon won the start-up race; ours must not take over later.
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!(
                "audiodecode daemon {} running on {}",
                client.daemon_pid,
                socket.display()
            );
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another daemon may have won the race for the lock; that one answers soon.
            if crate::feed::client::Client::connect(socket).is_ok() {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "error: the daemon exited ({status}); see {}",
                dir.join("daemon.log").display()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!(
        "error: the daemon did not answer within 10 s; see {}",
        dir.join("daemon.log").display()
    );
    ExitCode::FAILURE
}

fn run_status(args: &StatusArgs) -> ExitCode {
    let socket = args.socket.path();
    loop {
        let report = crate::feed::client::Client::connect(&socket)
            .and_then(|mut c| c.request(&audiodecode_protocol::Request::Status));
        match report {
            Ok(audiodecode_protocol::Response::Status(r)) => {
                print_status(&r, args.json, args.watch)
            }
            Ok(other) => {
                eprintln!("error: unexpected reply {other:?}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: no daemon answers on {}: {e}", socket.display());
                return ExitCode::FAILURE;
            }
        }
        if !args.watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn print_status(r: &audiodecode_protocol::StatusReport, json: bool, watch: bool) {
    if json {
        let streams: Vec<serde_json::Value> = r
            .streams
            .iter()
            .map(|s| {
                serde_json::json!({
                    "stream": s.stream, "batches_done": s.batches_done,
                    "batches_total": s.batches_total, "items_per_second": s.items_per_second,
                    "audio_seconds_per_second": s.audio_seconds_per_second,
                    "workers": s.workers, "ring_depth": s.ring_depth,
                    "ring_filled": s.ring_filled, "skipped": s.skipped,
                    "padding_share": s.padding_share,
                    "decode_wait_share": s.decode_wait_share,
                    "client_wait_share": s.client_wait_share,
                })
            })
            .collect();
        let v = serde_json::json!({
            "daemon_pid": r.daemon_pid, "uptime_seconds": r.uptime_seconds,
            "clients": r.clients, "streams": streams,
            "cache_bytes": r.cache_bytes, "cache_capacity": r.cache_capacity,
            "cache_hits": r.cache_hits, "cache_misses": r.cache_misses, "decodes": r.decodes,
            "workers": r.workers, "min_workers": r.min_workers, "max_workers": r.max_workers,
            "worker_busy_share": r.worker_busy_share,
        });
        println!("{v}");
        return;
    }
    if watch {
        print!("\x1b[2J\x1b[H");
    }
    println!(
        "daemon {}: up {:.0} s, {} clients, {} streams; cache {} of {} MB, {} hits, {} misses; \
         {} files decoded",
        r.daemon_pid,
        r.uptime_seconds,
        r.clients,
        r.streams.len(),
        r.cache_bytes >> 20,
        r.cache_capacity >> 20,
        r.cache_hits,
        r.cache_misses,
        r.decodes
    );
    println!(
        "workers {} (tuned within {}..={}), {:.0}% busy",
        r.workers,
        r.min_workers,
        r.max_workers,
        100.0 * r.worker_busy_share
    );
    for s in &r.streams {
        println!(
            "  stream {}: {}/{} batches, {:.1} items/s, {:.0} audio s/s, ring {}/{} filled, \
             waiting on decode {:.0}% / on the client {:.0}%, {} skipped, {:.1}% padding",
            s.stream,
            s.batches_done,
            s.batches_total,
            s.items_per_second,
            s.audio_seconds_per_second,
            s.ring_filled,
            s.ring_depth,
            100.0 * s.decode_wait_share,
            100.0 * s.client_wait_share,
            s.skipped,
            100.0 * s.padding_share
        );
    }
}

fn run_stop(args: &SocketArg) -> ExitCode {
    let socket = args.path();
    match crate::feed::client::Client::connect(&socket)
        .and_then(|mut c| c.request(&audiodecode_protocol::Request::Shutdown))
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: no daemon answers on {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
