//! The operating system behind safe functions: every `libc` call of the daemon outside the
//! shared-memory ring (`feed::ring`) lives here, so `decode/` and `label/` carry
//! `#![deny(unsafe_code)]`.

#![allow(unsafe_code)] // The one module that talks to the OS: each block has a SAFETY note.

mod atomic_file;
mod memfile;
pub mod residency;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

pub use atomic_file::{unique_suffix, write_atomically};
pub use memfile::MemFile;

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Takes a non-blocking exclusive `flock` on `file`; false when another process holds it.
pub fn try_lock_exclusive(file: &File) -> bool {
    // SAFETY: flock on a file descriptor `file` owns for the duration of the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The user id of the process at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_uid(socket: &impl AsRawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred/len are valid out-parameters of the right size for SO_PEERCRED.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Puts this process (and every thread it starts later) under `SCHED_BATCH`: the same CPU
/// share, but a thread it wakes no longer preempts the thread that woke it. Every batch a
/// training loop releases wakes the daemon; without this the kernel switches to it at once
/// and the loop's `next()` pays the switch (~50 µs measured on a 2-core VM). Best effort.
pub fn use_batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes only this process's scheduling policy; `param` outlives the call.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
    }
}

/// Set by SIGTERM/SIGINT once [`install_stop_signals`] ran.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT set [`stop_requested`]; SIGPIPE is ignored, so a client vanishing
/// mid-write cannot kill the daemon.
pub fn install_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn available_bytes(path: &str) -> Option<u64> {
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is a valid C string and st is a properly sized out-parameter.
    (unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Makes `cmd`'s child the leader of a new session, detached from our terminal.
pub fn detach_into_new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe, as a pre_exec hook requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Confines `cmd`'s child, a decoder run on an untrusted file: its address space is capped
/// at `max_bytes` (an allocation past it fails inside the child instead of exhausting the
/// machine), and it is killed if the thread that spawned it dies (Linux), so a crashed
/// caller never leaves a decoder behind.
pub fn confine_child(cmd: &mut std::process::Command, max_bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit and prctl are async-signal-safe system calls taking plain values,
    // as a pre_exec hook requires; nothing is allocated in the hook.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: max_bytes as libc::rlim_t,
                rlim_max: max_bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// CTranslate2 allocates and frees multi-megabyte activations on every layer. glibc serves
/// those with fresh `mmap`s, so each call page-faults and zeroes them again (≈10 % of the
/// model's time, measured with perf). Raising the thresholds keeps freed blocks for reuse.
pub fn keep_large_allocations() {
    #[cfg(target_env = "gnu")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tuning parameters.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}

/// Opens `path` for reading only if it is a regular file (after following symlinks).
/// A FIFO or device would block a worker or never end, so it is refused before any read:
/// the open itself is non-blocking (a FIFO without a writer would otherwise block in
/// `open`), and the type is checked on the opened descriptor, so nothing can swap the
/// file in between. `O_NONBLOCK` has no effect on reads of regular files.
pub fn open_regular_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        }
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        NotRegular(what),
    ))
}

/// Why [`open_regular_file`] refused a path.
#[derive(Debug, thiserror::Error)]
#[error("is {0}, not a regular file")]
pub struct NotRegular(pub &'static str);

/// Why a private directory (the socket's) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is owned by uid {owner}, not by this user (uid {me}); refusing to use it")]
    ForeignOwner {
        path: std::path::PathBuf,
        owner: u32,
        me: u32,
    },
    #[error(
        "{path} is writable by group or others (mode {mode:o}); refusing to use it \
         (another user could replace the socket): use a private directory"
    )]
    OpenMode { path: std::path::PathBuf, mode: u32 },
    #[error("{path} is not a directory")]
    NotDirectory { path: std::path::PathBuf },
}

/// Makes sure `dir` is a directory only this user can write: creates it with mode 0700 when
/// it is missing, and never changes the mode of one that exists (it may be `/tmp`). See
/// Note [Local users].
pub fn ensure_private_dir(dir: &std::path::Path) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| PrivateDirError::Io {
        path: dir.into(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing parent: create the parents (ordinary mode), then this one 0700.
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    // symlink_metadata: a symlink planted in place of the directory is refused too.
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(PrivateDirError::NotDirectory { path: dir.into() });
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Err(PrivateDirError::ForeignOwner {
            path: dir.into(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::OpenMode {
            path: dir.into(),
            mode,
        });
    }
    Ok(())
}

/// 64 unpredictable bits from the kernel (`/dev/urandom`), or from std's randomly keyed
/// hasher when that cannot be read.
pub fn random_u64() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_ne_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
