//! Layout of the shared-memory batch ring.
//!
//! ```text
//! segment: [RingHeader, 4096 bytes][slot 0][slot 1]...[slot D-1]     (slots 4096-aligned)
//! slot:    [SlotHeader, 64 bytes][lengths: u32 x Bmax][labels: i64 x Bmax]
//!          [indices: u64 x Bmax][pad to 64][audio: f32, B x C x T, C-order]
//! ```
//! The audio block uses the batch's own B and T, so `audio[..B*C*T]` reshapes directly to
//! `[B, C, T]`; rows shorter than T are zero padded.

use bincode::{Decode, Encode};

pub const RING_MAGIC: [u8; 8] = *b"ADRING01";
pub const RING_HEADER_BYTES: u64 = 4096;
pub const SLOT_HEADER_BYTES: u64 = 64;
const SLOT_ALIGN: u64 = 4096;

// The hand-off words in the ring header: each on its own 64-byte cache line, written by
// one side and read by the other (README, "Ownership"). All are little-endian u64.
/// Written by the client: batches it has handed back since the stream opened.
pub const RELEASED_OFFSET: u64 = 64;
/// Written by the daemon: the client sends `Release` once its count reaches this value
/// (`NO_DOORBELL`: it need not).
pub const DOORBELL_OFFSET: u64 = 128;
/// Written by the daemon: batches announced since the stream opened.
pub const ANNOUNCED_OFFSET: u64 = 192;
/// Announcement `i` (from 0) is entry `i % slots` of this table: `seq << 32 | slot`.
pub const ANNOUNCE_LOG_OFFSET: u64 = 256;
pub const NO_DOORBELL: u64 = u64::MAX;
/// The most slots a ring may have: its announcement table fills the rest of the header.
pub const MAX_SLOTS: u32 = ((RING_HEADER_BYTES - ANNOUNCE_LOG_OFFSET) / 8) as u32;

/// An announcement table entry.
pub fn announcement(seq: u64, slot: u32) -> u64 {
    (seq << 32) | u64::from(slot)
}
const AUDIO_ALIGN: u64 = 64;

/// Everything a client needs to map the ring; sent in `StreamOpened` and also written into
/// the ring header (so a debugger or a second reader can check it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RingGeometry {
    pub slots: u32,
    pub batch_capacity: u32,
    pub channels: u32,
    /// Longest padded length a slot can hold, in frames.
    pub max_frames: u64,
    pub sample_rate: u32,
    pub slot_bytes: u64,
    pub lengths_offset: u64,
    pub labels_offset: u64,
    pub indices_offset: u64,
    pub audio_offset: u64,
}

fn align(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

impl RingGeometry {
    pub fn new(
        slots: u32,
        batch_capacity: u32,
        channels: u32,
        max_frames: u64,
        sample_rate: u32,
    ) -> Self {
        let b = u64::from(batch_capacity);
        let lengths_offset = SLOT_HEADER_BYTES;
        let labels_offset = align(lengths_offset + 4 * b, 8);
        let indices_offset = labels_offset + 8 * b;
        let audio_offset = align(indices_offset + 8 * b, AUDIO_ALIGN);
        let audio_bytes = b * u64::from(channels) * max_frames * 4;
        let slot_bytes = align(audio_offset + audio_bytes, SLOT_ALIGN);
        Self {
            slots,
            batch_capacity,
            channels,
            max_frames,
            sample_rate,
            slot_bytes,
            lengths_offset,
            labels_offset,
            indices_offset,
            audio_offset,
        }
    }

    pub fn slot_offset(&self, slot: u32) -> u64 {
        RING_HEADER_BYTES + u64::from(slot) * self.slot_bytes
    }

    pub fn total_bytes(&self) -> u64 {
        RING_HEADER_BYTES + u64::from(self.slots) * self.slot_bytes
    }
}

/// The segment header (informational: clients take the geometry from `StreamOpened` and
/// check only the magic). Little-endian: 0 magic, 8 protocol version u32, 12 slots u32,
/// 16 slot_bytes u64, 24 batch_capacity u32, 28 channels u32, 32 max_frames u64,
/// 40 sample_rate u32.
pub fn ring_header(g: &RingGeometry) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..8].copy_from_slice(&RING_MAGIC);
    h[8..12].copy_from_slice(&crate::PROTOCOL_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&g.slots.to_le_bytes());
    h[16..24].copy_from_slice(&g.slot_bytes.to_le_bytes());
    h[24..28].copy_from_slice(&g.batch_capacity.to_le_bytes());
    h[28..32].copy_from_slice(&g.channels.to_le_bytes());
    h[32..40].copy_from_slice(&g.max_frames.to_le_bytes());
    h[40..44].copy_from_slice(&g.sample_rate.to_le_bytes());
    h
}

/// The fixed header at the start of every slot, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHeader {
    /// Batch number within the epoch.
    pub seq: u64,
    pub epoch: u64,
    /// Items in this batch (≤ batch capacity).
    pub batch: u32,
    pub channels: u32,
    /// Padded length T of this batch.
    pub frames: u64,
    pub sample_rate: u32,
}

impl SlotHeader {
    pub fn to_bytes(&self) -> [u8; SLOT_HEADER_BYTES as usize] {
        let mut out = [0u8; SLOT_HEADER_BYTES as usize];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        out[16..20].copy_from_slice(&self.batch.to_le_bytes());
        out[20..24].copy_from_slice(&self.channels.to_le_bytes());
        out[24..32].copy_from_slice(&self.frames.to_le_bytes());
        out[32..36].copy_from_slice(&self.sample_rate.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        Some(Self {
            seq: u64_at(0)?,
            epoch: u64_at(8)?,
            batch: u32_at(16)?,
            channels: u32_at(20)?,
            frames: u64_at(24)?,
            sample_rate: u32_at(32)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_aligned_and_disjoint() {
        let g = RingGeometry::new(4, 33, 2, 16000 * 5 + 3, 16000);
        assert_eq!(g.labels_offset % 8, 0);
        assert_eq!(g.audio_offset % 64, 0);
        assert!(g.lengths_offset + 4 * 33 <= g.labels_offset);
        assert!(g.labels_offset + 8 * 33 <= g.indices_offset);
        assert!(g.indices_offset + 8 * 33 <= g.audio_offset);
        assert!(g.audio_offset + 33 * 2 * (16000 * 5 + 3) * 4 <= g.slot_bytes);
        assert_eq!(g.slot_bytes % 4096, 0);
        assert_eq!(g.slot_offset(1) - g.slot_offset(0), g.slot_bytes);
        assert_eq!(g.total_bytes(), g.slot_offset(4));
    }

    #[test]
    fn hand_off_words_fit_the_header_on_separate_lines() {
        for w in [
            RELEASED_OFFSET,
            DOORBELL_OFFSET,
            ANNOUNCED_OFFSET,
            ANNOUNCE_LOG_OFFSET,
        ] {
            assert_eq!(w % 64, 0);
            assert!(w >= 64, "the informational header uses the first 44 bytes");
        }
        assert_eq!(MAX_SLOTS, 480);
        assert!(ANNOUNCE_LOG_OFFSET + 8 * u64::from(MAX_SLOTS) <= RING_HEADER_BYTES);
        assert_eq!(announcement(5, 3), (5 << 32) | 3);
    }

    #[test]
    fn slot_header_round_trips() {
        let h = SlotHeader {
            seq: 7,
            epoch: 2,
            batch: 31,
            channels: 1,
            frames: 123_456,
            sample_rate: 16000,
        };
        assert_eq!(SlotHeader::from_bytes(&h.to_bytes()), Some(h));
    }
}
