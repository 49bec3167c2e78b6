//! A decoder child process that can neither hang nor outgrow its caller. See Note [FFmpeg
//! fallback].
//!
//! Its address space is capped, its stdout is read under a stall watchdog (no output for
//! the stall limit kills it), its stderr is drained on a thread so a chatty decoder can
//! never block on a full pipe, and a child still running when its reader stops (early end of
//! a range, an error, a panic) is killed and reaped, never left behind.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Address-space cap of a decoder child. Audio decoders need tens of MB; the cap only
/// stops a malformed file from making one allocate without bound.
const MEMORY_CAP_BYTES: u64 = 4 << 30;
/// How much of the child's stderr is kept for error messages.
const STDERR_KEEP_BYTES: usize = 8 << 10;

/// How a supervised child ended.
#[derive(Debug)]
pub(crate) struct Exit {
    pub status: ExitStatus,
    /// The start of what it wrote to stderr.
    pub stderr: String,
    /// The watchdog killed it: no output for the stall limit.
    pub stalled: bool,
}

pub(crate) struct Supervised {
    child: Arc<Mutex<Child>>,
    stdout: ChildStdout,
    /// Each read that returns data ticks the watchdog; dropping it stops the watchdog.
    ticks: Option<Sender<()>>,
    watchdog: Option<JoinHandle<bool>>,
    stderr: Option<JoinHandle<String>>,
    reaped: bool,
}

impl Supervised {
    pub(crate) fn spawn(mut cmd: Command, stall: Duration) -> io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::sys::confine_child(&mut cmd, MEMORY_CAP_BYTES);
        let mut child = cmd.spawn()?;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("child pipes missing"));
        };
        let child = Arc::new(Mutex::new(child));
        let (ticks, progress) = mpsc::channel::<()>();
        let watched = Arc::clone(&child);
        let watchdog = std::thread::spawn(move || loop {
            match progress.recv_timeout(stall) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = lock(&watched).kill();
                    return true;
                }
            }
        });
        let stderr = std::thread::spawn(move || read_capped(&mut stderr, STDERR_KEEP_BYTES));
        Ok(Self {
            child,
            stdout,
            ticks: Some(ticks),
            watchdog: Some(watchdog),
            stderr: Some(stderr),
            reaped: false,
        })
    }

    /// Reads the child's stdout; `Ok(0)` at its end (or once the watchdog killed it).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.stdout.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n > 0 {
            if let Some(ticks) = &self.ticks {
                let _ = ticks.send(());
            }
        }
        Ok(n)
    }

    /// Reads stdout to its end, keeping at most `max` bytes (the rest is drained).
    pub(crate) fn read_to_end_capped(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            let room = max.saturating_sub(out.len());
            out.extend_from_slice(&buf[..n.min(room)]);
        }
    }

    /// Waits for the child to exit (killing it first when `kill`), still under the watchdog.
    pub(crate) fn finish(mut self, kill: bool) -> io::Result<Exit> {
        if kill {
            let _ = lock(&self.child).kill();
        }
        let status = self.wait_watched()?;
        self.reaped = true;
        self.ticks = None;
        let stalled = self
            .watchdog
            .take()
            .is_some_and(|w| w.join().unwrap_or(false));
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Ok(Exit {
            status,
            stderr,
            stalled,
        })
    }

    /// Polls rather than blocking in `wait`, so that the watchdog can still take the lock
    /// and kill a child that closed its stdout but never exits.
    fn wait_watched(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = lock(&self.child).try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !self.reaped {
            let mut child = lock(&self.child);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `source` to its end, keeping the first `max` bytes as (lossy) UTF-8.
fn read_capped(source: &mut impl Read, max: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
