//! Why a subcommand failed; printed as one line by `run`, URLs without their credentials.

use crate::error::DecodeError;
use crate::label::LabelError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments that do not make sense together or cannot be parsed.
    #[error("{}", crate::store::redacted(.0))]
    Usage(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Label(#[from] LabelError),
    /// Anything else that stopped the command (I/O on outputs, a manifest).
    #[error("{}", crate::store::redacted(.0))]
    Failed(String),
}
