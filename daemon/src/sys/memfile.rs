//! Anonymous in-memory files: uploads are decoded through a path like any file, yet never
//! touch the disk and vanish when dropped.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A file in memory (`memfd_create`), reachable by path as `/proc/<pid>/fd/<n>`, so the
/// whole decode stack — content sniffing, symphonia, and the FFmpeg fallback's child
/// process — reads it as it reads files. Its memory is freed when it is dropped.
/// The longest name `memfd_create` accepts (`NAME_MAX` less its `memfd:` prefix).
const MAX_NAME_BYTES: usize = 249;

#[derive(Debug)]
pub struct MemFile {
    file: File,
    path: PathBuf,
}

impl MemFile {
    /// An empty file; `name` shows in `/proc/<pid>/fd` listings only, cut to the 249 bytes
    /// the kernel takes (a longer one, a deep shard member's, would fail the call).
    pub fn new(name: &str) -> io::Result<Self> {
        let mut end = name.len().min(MAX_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let name = CString::new(name[..end].replace('\0', "_")).unwrap_or_default();
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = File::from(fd);
        // `/proc/self` would name the FFmpeg child itself; our pid names us from anywhere.
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Ok(Self { file, path })
    }

    /// The path that opens this file (for as long as it lives).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Empty the file (a fetch starting over).
    pub fn truncate(&mut self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Set the length; growing it leaves a hole that reads as zeros and takes no memory.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Write `bytes` at `offset`, leaving the file position alone.
    pub fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset)
    }

    /// Fill `buf` from `offset`, leaving the file position alone.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl std::io::Read for MemFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl std::io::Seek for MemFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Write for MemFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_read_back_by_path_and_vanish_on_drop() {
        let mut file = MemFile::new("upload").unwrap();
        file.write_all(b"RIFF1234").unwrap();
        let path = file.path().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), b"RIFF1234");
        assert_eq!(file.len().unwrap(), 8);
        drop(file);
        assert!(std::fs::read(&path).is_err());
    }

    #[test]
    fn names_longer_than_the_kernel_takes_are_cut() {
        let deep = format!("member:{}/é.wav", "dir/".repeat(80));
        let mut file = MemFile::new(&deep).unwrap();
        file.write_all(b"x").unwrap();
        assert_eq!(file.len().unwrap(), 1);
    }
}
