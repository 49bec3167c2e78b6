//! The AudioDecode wire format: messages on the control socket and the layout of the
//! shared-memory batch ring. No I/O lives here, so the daemon, tests and golden-vector
//! writers all agree on one definition.

/// Bumped whenever a message or the ring layout changes incompatibly; checked in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
