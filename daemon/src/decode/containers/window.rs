//! A byte range of a file seen as a whole file: the MPEG stream inside a WAV's data chunk,
//! so that symphonia's MPEG reader never sees the RIFF header (nor chunks after the data).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use symphonia::core::io::MediaSource;

pub(crate) struct Window {
    file: File,
    start: u64,
    len: u64,
    /// Position inside the window.
    pos: u64,
}

impl Window {
    pub(crate) fn new(mut file: File, start: u64, len: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Self {
            file,
            start,
            len,
            pos: 0,
        })
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.file.seek(SeekFrom::Start(self.start + target))?;
        self.pos = target;
        Ok(target)
    }
}

impl MediaSource for Window {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_seeks_inside_the_range_only() {
        let path = std::env::temp_dir().join(format!("window-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let mut w = Window::new(File::open(&path).unwrap(), 2, 5).unwrap();
        let mut all = String::new();
        w.read_to_string(&mut all).unwrap();
        assert_eq!(all, "23456");
        assert_eq!(w.seek(SeekFrom::End(-2)).unwrap(), 3);
        let mut two = [0u8; 4];
        assert_eq!(w.read(&mut two).unwrap(), 2);
        assert_eq!(&two[..2], b"56");
        assert!(w.seek(SeekFrom::Current(-10)).is_err());
        std::fs::remove_file(path).unwrap();
    }
}
