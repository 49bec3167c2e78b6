//! `audiodecode serve`, `status` and `stop`: run the daemon, ask it how it does, stop it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use audiodecode_protocol::{Request, Response, StatusReport};

use crate::cli::{ServeArgs, SocketArg, StatusArgs};
use crate::feed::client::Client;
use crate::feed::pool::DEFAULT_ITEM_DEADLINE;
use crate::feed::server;
use crate::feed::tune;

/// How long a detached daemon has to answer before `serve` gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// With `--http` the model loads first (a large one takes a minute from a cold disk).
const START_TIMEOUT_WITH_MODEL: Duration = Duration::from_secs(180);

pub fn run_serve(args: &ServeArgs) -> ExitCode {
    let socket = args.socket.path();
    if !args.foreground {
        return spawn_detached(args, &socket);
    }
    let options = server::ServeOptions {
        socket: socket.clone(),
        plan: worker_plan(args),
        item_deadline: args
            .item_deadline
            .map_or(DEFAULT_ITEM_DEADLINE, std::time::Duration::from_secs),
    };
    // The model loads before the socket answers, so a started daemon serves HTTP too.
    if let Err(e) = crate::cli::http::start(&args.http, options.item_deadline) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
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

/// The plan for the detected machine, with the flags' sizes and bounds over it.
fn worker_plan(args: &ServeArgs) -> tune::Plan {
    let mut plan = tune::plan(&tune::Resources::detect());
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
    plan
}

/// Start `serve --foreground` in its own session with output to `daemon.log` beside the
/// socket, and return once it answers (re-exec rather than fork: forking a process that may
/// already have threads is unsafe).
fn spawn_detached(args: &ServeArgs, socket: &Path) -> ExitCode {
    if Client::connect(socket).is_ok() {
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
    let mut cmd = foreground_command(exe.as_path(), args, socket, log);
    crate::sys::detach_into_new_session(&mut cmd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = if args.http.http.is_some() {
        START_TIMEOUT_WITH_MODEL
    } else {
        START_TIMEOUT
    };
    wait_until_it_answers(child, socket, &dir.join("daemon.log"), timeout)
}

/// `exe serve --foreground` with this command's flags, its output going to `log`.
fn foreground_command(
    exe: &Path,
    args: &ServeArgs,
    socket: &Path,
    log: File,
) -> std::process::Command {
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
        ("--item-deadline", args.item_deadline),
    ] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v.to_string());
        }
    }
    crate::cli::http::forward(&args.http, &mut cmd);
    let stderr = log.try_clone();
    cmd.stdin(std::process::Stdio::null()).stdout(log);
    if let Ok(e) = stderr {
        cmd.stderr(e);
    }
    cmd
}

/// Poll the socket until a daemon answers there (ours, or one that won the start-up race),
/// our child exits, or `timeout` passes.
fn wait_until_it_answers(
    mut child: Child,
    socket: &Path,
    log: &Path,
    timeout: Duration,
) -> ExitCode {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(client) = Client::connect(socket) {
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
            if Client::connect(socket).is_ok() {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: the daemon exited ({status}); see {}", log.display());
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "error: the daemon did not answer within {} s; see {}",
        timeout.as_secs(),
        log.display()
    );
    ExitCode::FAILURE
}

pub fn run_status(args: &StatusArgs) -> ExitCode {
    let socket = args.socket.path();
    loop {
        let report = Client::connect(&socket).and_then(|mut c| c.request(&Request::Status));
        match report {
            Ok(Response::Status(r)) => print_status(&r, args.json, args.watch),
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
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn print_status(r: &StatusReport, json: bool, watch: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot encode the status report: {e}"),
        }
        return;
    }
    if watch {
        print!("\x1b[2J\x1b[H");
    }
    print_status_text(r);
}

/// The report for people: the daemon, its workers, then a line per stream.
fn print_status_text(r: &StatusReport) {
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
    let gpus: Vec<String> = r
        .gpus
        .iter()
        .map(|g| format!("{} ({} GB)", g.name, g.memory_bytes >> 30))
        .collect();
    println!(
        "ring budget {} MB; GPUs: {}; {} failed and {} abandoned jobs",
        r.ring_budget_bytes >> 20,
        if gpus.is_empty() {
            "none".to_string()
        } else {
            gpus.join(", ")
        },
        r.failed_jobs,
        r.abandoned_jobs
    );
    for s in &r.streams {
        println!(
            "  stream {}: {}/{} batches, {:.1} items/s, {:.0} audio s/s, ring {}/{} filled, \
             waiting on decode {:.0}% / on the client {:.0}%, {} skipped, {} damaged, \
             {:.1}% padding",
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
            s.damaged,
            100.0 * s.padding_share
        );
    }
}

pub fn run_stop(args: &SocketArg) -> ExitCode {
    let socket = args.path();
    match Client::connect(&socket).and_then(|mut c| c.request(&Request::Shutdown)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: no daemon answers on {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
