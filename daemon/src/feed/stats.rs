//! A stream's live counters, written by its driver and read by `status` and the tuner.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// Live counters, read by `status`.
pub struct StreamStats {
    /// When the stream opened: the tuner measures a young stream over its own lifetime.
    pub opened: Instant,
    pub items: AtomicU64,
    /// Output frames delivered (for audio-seconds per second).
    pub frames: AtomicU64,
    /// Frames of the delivered batches including padding (B x T summed).
    pub padded_frames: AtomicU64,
    /// Time the driver waited for items to decode (decoding is the bottleneck).
    pub decode_wait_ns: AtomicU64,
    /// Time the driver waited for the client to release a slot (the client is).
    pub slot_wait_ns: AtomicU64,
    pub skipped: AtomicU64,
    /// Items used although damaged (lenient decoding).
    pub damaged: AtomicU64,
}

impl Default for StreamStats {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            items: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            padded_frames: AtomicU64::new(0),
            decode_wait_ns: AtomicU64::new(0),
            slot_wait_ns: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
        }
    }
}
