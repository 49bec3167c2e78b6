//! The shared-memory segment behind a stream's batch ring.
//!
//! Created with `shm_open(O_CREAT | O_EXCL, 0600)` under a per-user prefix and mapped with
//! memmap2. The name is unlinked as soon as the stream closes (the mapping stays valid for
//! whoever still has it), and a starting daemon unlinks segments whose owner process is gone.

#![allow(unsafe_code)] // Maps shared memory: each block has a SAFETY note.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use std::sync::atomic::{AtomicU64, Ordering};

use audiodecode_protocol::ring::{
    announcement, ring_header, RingGeometry, SlotHeader, ANNOUNCED_OFFSET, ANNOUNCE_LOG_OFFSET,
    DOORBELL_OFFSET, NO_DOORBELL, RELEASED_OFFSET, RING_HEADER_BYTES,
};
use memmap2::MmapMut;

/// `/dev/shm` names: `audiodecode-<uid>-<pid>-<n>-<random>`.
pub fn name_prefix() -> String {
    format!("audiodecode-{}-", crate::sys::effective_uid())
}

/// Tries this many random names before giving up; another user can only collide by chance.
const NAME_ATTEMPTS: usize = 16;

/// Creates a fresh segment under a name with a random part, exclusively (`O_EXCL`, 0600),
/// so another local user can neither predict the next name nor block it by creating it
/// first. See Note [Local users].
fn create_segment(serial: u64) -> std::io::Result<(String, CString, i32)> {
    let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
    for _ in 0..NAME_ATTEMPTS {
        let name = format!(
            "{}{}-{serial}-{:016x}",
            name_prefix(),
            std::process::id(),
            crate::sys::random_u64()
        );
        let c_name = CString::new(format!("/{name}"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: c_name is a valid NUL-terminated string; flags and mode are plain ints.
        let fd = unsafe {
            libc::shm_open(
                c_name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600 as libc::mode_t,
            )
        };
        if fd >= 0 {
            return Ok((name, c_name, fd));
        }
        last = std::io::Error::last_os_error();
        if last.kind() != std::io::ErrorKind::AlreadyExists {
            break;
        }
    }
    Err(last)
}

pub struct RingMemory {
    name: String,
    map: MmapMut,
    geometry: RingGeometry,
    unlinked: std::sync::atomic::AtomicBool,
}

// The mapping is written through raw pointers by the one thread that owns a slot at a time
// (slot ownership moves over the socket), so sharing the handle is sound.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    pub fn create(geometry: RingGeometry, serial: u64) -> std::io::Result<Self> {
        let (name, c_name, fd) = create_segment(serial)?;
        // SAFETY: fd was just returned by shm_open and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let setup = (|| {
            file.set_len(geometry.total_bytes())?;
            // SAFETY: the segment is private to this daemon until its name is sent to the
            // client; nothing truncates it while mapped.
            unsafe { MmapMut::map_mut(&file) }
        })();
        let map = match setup {
            Ok(map) => map,
            Err(e) => {
                // SAFETY: c_name is valid; unlinking our own fresh segment.
                unsafe { libc::shm_unlink(c_name.as_ptr()) };
                return Err(e);
            }
        };
        let mut ring = Self {
            name,
            map,
            geometry,
            unlinked: std::sync::atomic::AtomicBool::new(false),
        };
        ring.write_header();
        Ok(ring)
    }

    fn write_header(&mut self) {
        let header = ring_header(&self.geometry);
        self.map[..header.len()].copy_from_slice(&header);
        self.word(DOORBELL_OFFSET)
            .store(NO_DOORBELL, Ordering::Relaxed);
    }

    /// A hand-off word of the ring header.
    pub(crate) fn word(&self, offset: u64) -> &AtomicU64 {
        let offset = offset as usize;
        assert!(offset.is_multiple_of(8) && offset + 8 <= RING_HEADER_BYTES as usize);
        // SAFETY: in bounds of the mapping (the header is 4096 bytes), 8-aligned (the
        // mapping is page aligned), and valid as long as `self`. This process touches the
        // word only atomically; the client does plain aligned 8-byte loads and stores, which
        // x86-64 performs atomically (other clients do not write shared words).
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(offset).cast_mut().cast()) }
    }

    /// How many batches the client says it has handed back (x86-64 clients store it here).
    pub fn client_released(&self) -> u64 {
        // Acquire: the client's reads of the slots it handed back came before its store.
        self.word(RELEASED_OFFSET).load(Ordering::Acquire)
    }

    /// Ask the client to send `Release` once it has handed back `released` batches.
    pub fn set_doorbell(&self, released: u64) {
        self.word(DOORBELL_OFFSET).store(released, Ordering::SeqCst);
    }

    /// Publish announcement `index` (counted from 0): batch `seq` is in `slot`. The slot
    /// must be completely written: the release store orders it before the count.
    pub fn publish(&self, index: u64, seq: u64, slot: u32) {
        let entry = ANNOUNCE_LOG_OFFSET + 8 * (index % u64::from(self.geometry.slots));
        self.word(entry)
            .store(announcement(seq, slot), Ordering::Relaxed);
        self.word(ANNOUNCED_OFFSET)
            .store(index + 1, Ordering::Release);
    }

    /// The name clients open, with the leading slash (`shm_open` form).
    pub fn shm_name(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// Remove the name now; the memory lives until the last mapping goes.
    pub fn unlink(&self) {
        use std::sync::atomic::Ordering;
        if !self.unlinked.swap(true, Ordering::SeqCst) {
            if let Ok(c) = CString::new(self.shm_name()) {
                // SAFETY: c is a valid NUL-terminated string.
                unsafe { libc::shm_unlink(c.as_ptr()) };
            }
        }
    }

    /// Mutable access to one slot's bytes.
    ///
    /// # Safety
    /// The caller must own `slot` (the daemon has not announced it, or the client has
    /// released it) and no other reference to that slot may exist.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slot_mut(&self, slot: u32) -> &mut [u8] {
        let start = self.geometry.slot_offset(slot) as usize;
        let len = self.geometry.slot_bytes as usize;
        assert!(slot < self.geometry.slots && start + len <= self.map.len());
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(start).cast_mut(), len) }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// One batch as laid out in a slot.
pub struct SlotWriter<'a> {
    pub geometry: RingGeometry,
    pub bytes: &'a mut [u8],
}

impl SlotWriter<'_> {
    /// Write a batch: `rows[i]` is item i's planar audio (`channels` planes), zero padded to
    /// `frames`.
    pub fn write(&mut self, header: SlotHeader, rows: &[(u64, i64, Vec<&[f32]>)]) {
        let g = self.geometry;
        let b = rows.len();
        let c = header.channels as usize;
        let t = header.frames as usize;
        self.bytes[..64].copy_from_slice(&header.to_bytes());
        for (i, (index, label, planes)) in rows.iter().enumerate() {
            let len = planes.first().map_or(0, |p| p.len()).min(t) as u32;
            let at = g.lengths_offset as usize + 4 * i;
            self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
            let at = g.labels_offset as usize + 8 * i;
            self.bytes[at..at + 8].copy_from_slice(&label.to_le_bytes());
            let at = g.indices_offset as usize + 8 * i;
            self.bytes[at..at + 8].copy_from_slice(&index.to_le_bytes());
        }
        let audio =
            &mut self.bytes[g.audio_offset as usize..g.audio_offset as usize + b * c * t * 4];
        for (i, (_, _, planes)) in rows.iter().enumerate() {
            for ch in 0..c {
                let row = &mut audio[((i * c + ch) * t) * 4..((i * c + ch + 1) * t) * 4];
                let src: &[f32] = planes.get(ch).map_or(&[], |p| &p[..p.len().min(t)]);
                copy_f32_le(src, &mut row[..src.len() * 4]);
                row[src.len() * 4..].fill(0);
            }
        }
    }
}

/// Samples as little-endian bytes: one memcpy on little-endian machines (all the
/// platforms that matter), a conversion loop elsewhere.
pub(crate) fn copy_f32_le(src: &[f32], dst: &mut [u8]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding or invalid bit patterns, u8 has alignment 1, and the
        // length is the exact byte size of `src`.
        let bytes = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), src.len() * 4) };
        dst.copy_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for (d, s) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// Unlink segments left behind by daemons that died without cleaning up (SIGKILL, OOM).
pub fn remove_stale_segments() -> usize {
    let prefix = name_prefix();
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 != std::process::id() && !process_alive(pid) {
            if let Ok(c) = CString::new(format!("/{name}")) {
                // SAFETY: c is a valid NUL-terminated string.
                if unsafe { libc::shm_unlink(c.as_ptr()) } == 0 {
                    removed += 1;
                }
            }
        }
    }
    removed
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_is_private_and_unlinked_on_drop() {
        let ring = RingMemory::create(RingGeometry::new(2, 3, 1, 100, 16000), 900_001)
            .expect("create shm");
        let path = format!("/dev/shm{}", ring.shm_name());
        let meta = std::fs::metadata(&path).expect("segment exists");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), ring.geometry().total_bytes());
        drop(ring);
        assert!(std::fs::metadata(&path).is_err(), "unlinked");
    }

    #[test]
    fn slot_write_pads_and_records_lengths() {
        let g = RingGeometry::new(1, 2, 1, 8, 16000);
        let ring = RingMemory::create(g, 900_002).expect("create shm");
        let a = [1.0f32, 2.0, 3.0];
        let b = [4.0f32; 5];
        // SAFETY: single-threaded test owns the only slot.
        let bytes = unsafe { ring.slot_mut(0) };
        let header = SlotHeader {
            seq: 1,
            epoch: 0,
            batch: 2,
            channels: 1,
            frames: 5,
            sample_rate: 16000,
        };
        let rows = [(10, 1, vec![&a[..]]), (11, -1, vec![&b[..]])];
        SlotWriter { geometry: g, bytes }.write(header, &rows);
        // SAFETY: as above.
        let bytes = unsafe { ring.slot_mut(0) };
        let f = |i: usize| {
            let at = g.audio_offset as usize + 4 * i;
            f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
        };
        let row0: Vec<f32> = (0..5).map(f).collect();
        assert_eq!(row0, vec![1.0, 2.0, 3.0, 0.0, 0.0]);
        assert_eq!(f(5), 4.0);
        let len0 = u32::from_le_bytes(
            bytes[g.lengths_offset as usize..][..4]
                .try_into()
                .expect("4"),
        );
        assert_eq!(len0, 3);
    }
}
