//! Typed per-file errors. Every variant names the file, so a message that reaches a user
//! (CLI stderr, a skipped-item report, a Python exception) says which input failed and why.
//! A URL is shown without its credentials (`store::redacted`); `path()` keeps it as given.

use audiodecode_protocol::{ErrorInfo, ErrorKind};
use std::path::{Path, PathBuf};

use crate::store::{redacted, shown};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{}: file not found", shown(path))]
    NotFound { path: PathBuf },

    #[error("{}: cannot read: {}", shown(path), redacted(&source.to_string()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: unsupported or unrecognised audio: {}",
        shown(path),
        redacted(reason)
    )]
    Unsupported { path: PathBuf, reason: String },

    #[error(
        "{}: corrupt audio data near {at_seconds:.3} s: {}",
        shown(path),
        redacted(reason)
    )]
    Corrupt {
        path: PathBuf,
        at_seconds: f64,
        reason: String,
    },

    #[error(
        "{}: truncated: audio ends at {decoded_seconds:.3} s{}",
        shown(path),
        declared_seconds.map_or(String::new(), |d| format!(" but the file declares {d:.3} s"))
    )]
    Truncated {
        path: PathBuf,
        decoded_seconds: f64,
        /// The length the headers state, when they state one.
        declared_seconds: Option<f64>,
    },

    /// A strict decode of part of a file whose whole-file check found damage elsewhere
    /// (Note [Damage rule]); `damage` names the file, what and where.
    #[error("{} (a strict stream refuses damaged files)", redacted(damage))]
    Damaged { path: PathBuf, damage: String },

    #[error("{}: contains no audio samples", shown(path))]
    Empty { path: PathBuf },

    #[error(
        "{}: offset {offset:.3} s is past the end of the audio ({duration:.3} s)",
        shown(path)
    )]
    OffsetPastEnd {
        path: PathBuf,
        offset: f64,
        duration: f64,
    },

    #[error("{}: invalid request: {}", shown(path), redacted(reason))]
    InvalidRequest { path: PathBuf, reason: String },

    #[error("{}: decoder crashed: {}", shown(path), redacted(message))]
    Panic { path: PathBuf, message: String },

    #[error(
        "{}: decoding took longer than the item deadline ({seconds:.0} s); abandoned",
        shown(path)
    )]
    TimedOut { path: PathBuf, seconds: f64 },
}

impl DecodeError {
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::Io { path, .. }
            | Self::Unsupported { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Truncated { path, .. }
            | Self::Damaged { path, .. }
            | Self::Empty { path }
            | Self::OffsetPastEnd { path, .. }
            | Self::InvalidRequest { path, .. }
            | Self::Panic { path, .. }
            | Self::TimedOut { path, .. } => path,
        }
    }

    /// A short stable name for the kind of failure, used in JSON reports.
    pub fn kind(&self) -> &'static str {
        self.classify().1
    }

    /// The kind sent on the wire.
    pub fn wire_kind(&self) -> ErrorKind {
        self.classify().0
    }

    /// The one mapping from an error to its wire kind and its report name.
    fn classify(&self) -> (ErrorKind, &'static str) {
        match self {
            Self::NotFound { .. } => (ErrorKind::NotFound, "not_found"),
            Self::Io { .. } => (ErrorKind::Io, "io"),
            Self::Unsupported { .. } => (ErrorKind::Unsupported, "unsupported"),
            Self::Corrupt { .. } => (ErrorKind::Corrupt, "corrupt"),
            Self::Truncated { .. } => (ErrorKind::Truncated, "truncated"),
            Self::Damaged { .. } => (ErrorKind::Corrupt, "damaged"),
            Self::Empty { .. } => (ErrorKind::Empty, "empty"),
            Self::OffsetPastEnd { .. } => (ErrorKind::OffsetPastEnd, "offset_past_end"),
            Self::InvalidRequest { .. } => (ErrorKind::BadRequest, "invalid_request"),
            Self::Panic { .. } => (ErrorKind::DecoderPanic, "panic"),
            Self::TimedOut { .. } => (ErrorKind::TimedOut, "timed_out"),
        }
    }

    /// The same error about `to` where it said `from` (a local copy of a remote object),
    /// in its path and in any reason that quotes the path.
    pub(crate) fn renamed(self, from: &Path, to: &Path) -> Self {
        let from_text = from.to_string_lossy().into_owned();
        let to_text = to.to_string_lossy();
        let fix = |reason: String| reason.replace(&from_text, &to_text);
        let to = to.to_path_buf();
        match self {
            Self::NotFound { .. } => Self::NotFound { path: to },
            Self::Io { source, .. } => Self::Io { path: to, source },
            Self::Unsupported { reason, .. } => Self::Unsupported {
                path: to,
                reason: fix(reason),
            },
            Self::Corrupt {
                at_seconds, reason, ..
            } => Self::Corrupt {
                path: to,
                at_seconds,
                reason: fix(reason),
            },
            Self::Truncated {
                decoded_seconds,
                declared_seconds,
                ..
            } => Self::Truncated {
                path: to,
                decoded_seconds,
                declared_seconds,
            },
            Self::Damaged { damage, .. } => Self::Damaged {
                path: to,
                damage: fix(damage),
            },
            Self::Empty { .. } => Self::Empty { path: to },
            Self::OffsetPastEnd {
                offset, duration, ..
            } => Self::OffsetPastEnd {
                path: to,
                offset,
                duration,
            },
            Self::InvalidRequest { reason, .. } => Self::InvalidRequest {
                path: to,
                reason: fix(reason),
            },
            Self::Panic { message, .. } => Self::Panic {
                path: to,
                message: fix(message),
            },
            Self::TimedOut { seconds, .. } => Self::TimedOut { path: to, seconds },
        }
    }

    pub(crate) fn open(path: &Path, err: std::io::Error) -> Self {
        if let Some(not_regular) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::sys::NotRegular>())
        {
            return Self::invalid(path, not_regular.to_string());
        }
        if err.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { path: path.into() }
        } else {
            Self::Io {
                path: path.into(),
                source: err,
            }
        }
    }

    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<&DecodeError> for ErrorInfo {
    fn from(err: &DecodeError) -> Self {
        ErrorInfo {
            kind: err.wire_kind(),
            path: Some(err.path().to_string_lossy().into_owned()),
            message: err.to_string(),
        }
    }
}

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;

/// The message a panic was raised with, for reports.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
