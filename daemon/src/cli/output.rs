//! Writing decoded audio to disk: 32-bit float WAV, NumPy `.npy` and raw `.f32`.
//!
//! Files are written to a temporary name beside the target and renamed into place, so a
//! failed or interrupted decode never leaves a partial output file.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::decode::DecodedAudio;
use crate::sys::write_atomically;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// 32-bit IEEE float WAV, interleaved.
    Wav,
    /// NumPy float32: shape `[T]` for one channel, `[C, T]` otherwise.
    Npy,
    /// Raw little-endian float32, interleaved.
    F32,
}

impl OutputFormat {
    pub fn from_extension(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "wav" => Some(Self::Wav),
            "npy" => Some(Self::Npy),
            "f32" | "raw" => Some(Self::F32),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::from_extension(Path::new(&format!("x.{name}")))
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Npy => "npy",
            Self::F32 => "f32",
        }
    }
}

/// Write `audio` to `path` atomically in `format`.
pub fn write_audio(path: &Path, audio: &DecodedAudio, format: OutputFormat) -> std::io::Result<()> {
    write_atomically(path, |w| match format {
        OutputFormat::Wav => write_wav(w, audio),
        OutputFormat::Npy => write_npy(w, audio),
        OutputFormat::F32 => write_interleaved(w, audio),
    })
}

/// Where each of `inputs` goes in `dir`: its stem with `extension`, and `-1`, `-2`, … added
/// to an input whose name is taken already (a/x.mp3 and b/x.flac give x.wav and x-1.wav), so
/// no output overwrites another. The names depend only on the inputs and their order.
pub fn clash_free_paths<'a>(
    dir: &Path,
    inputs: impl IntoIterator<Item = &'a Path>,
    extension: &str,
) -> Vec<PathBuf> {
    let mut taken = HashSet::new();
    inputs
        .into_iter()
        .map(|input| {
            let stem = input
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "audio".into());
            dir.join(claim_name(&mut taken, &stem, extension))
        })
        .collect()
}

/// `base.extension`, or `base-1.extension`, `base-2.extension`, … when that name is in
/// `taken` already; the name returned is added to `taken`. Names are compared without case,
/// since two names that differ only in case are one file on macOS and Windows.
pub fn claim_name(taken: &mut HashSet<String>, base: &str, extension: &str) -> String {
    let mut name = format!("{base}.{extension}");
    let mut n = 1;
    while !taken.insert(name.to_lowercase()) {
        name = format!("{base}-{n}.{extension}");
        n += 1;
    }
    name
}

/// Samples are converted to bytes in blocks: one `write_all` per sample costs more than the
/// conversion itself.
const BLOCK_SAMPLES: usize = 16 * 1024;

fn write_samples(w: &mut impl Write, samples: impl Iterator<Item = f32>) -> std::io::Result<()> {
    let mut block = Vec::with_capacity(BLOCK_SAMPLES * 4);
    for s in samples {
        block.extend_from_slice(&s.to_le_bytes());
        if block.len() == BLOCK_SAMPLES * 4 {
            w.write_all(&block)?;
            block.clear();
        }
    }
    w.write_all(&block)
}

fn write_interleaved(w: &mut impl Write, audio: &DecodedAudio) -> std::io::Result<()> {
    if audio.channels() == 1 {
        return write_samples(w, audio.planes[0].iter().copied());
    }
    let frames = audio.frames();
    write_samples(
        w,
        (0..frames).flat_map(|t| audio.planes.iter().map(move |plane| plane[t])),
    )
}

pub(crate) fn write_wav(w: &mut impl Write, audio: &DecodedAudio) -> std::io::Result<()> {
    const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
    let channels = audio.channels() as u16;
    let data_bytes = audio.frames() as u64 * u64::from(channels) * 4;
    // fmt (18 + 8) + fact (4 + 8) + data header (8) + "WAVE" (4)
    let riff_size = 4 + 26 + 12 + 8 + data_bytes;
    let riff_size = u32::try_from(riff_size).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "audio too long for a WAV file (over 4 GiB); write .npy or .f32 instead",
        )
    })?;
    let byte_rate = audio.sample_rate * u32::from(channels) * 4;
    w.write_all(b"RIFF")?;
    w.write_all(&riff_size.to_le_bytes())?;
    w.write_all(b"WAVEfmt ")?;
    w.write_all(&18u32.to_le_bytes())?;
    w.write_all(&WAVE_FORMAT_IEEE_FLOAT.to_le_bytes())?;
    w.write_all(&channels.to_le_bytes())?;
    w.write_all(&audio.sample_rate.to_le_bytes())?;
    w.write_all(&byte_rate.to_le_bytes())?;
    w.write_all(&(channels * 4).to_le_bytes())?;
    w.write_all(&32u16.to_le_bytes())?;
    w.write_all(&0u16.to_le_bytes())?; // cbSize
    w.write_all(b"fact")?;
    w.write_all(&4u32.to_le_bytes())?;
    w.write_all(&(audio.frames() as u32).to_le_bytes())?;
    w.write_all(b"data")?;
    w.write_all(&(data_bytes as u32).to_le_bytes())?;
    write_interleaved(w, audio)
}

fn write_npy(w: &mut impl Write, audio: &DecodedAudio) -> std::io::Result<()> {
    let shape = if audio.channels() == 1 {
        format!("({},)", audio.frames())
    } else {
        format!("({}, {})", audio.channels(), audio.frames())
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header must be a multiple of 64, ending in '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    // C order [C, T]: planes one after another.
    write_samples(w, audio.planes.iter().flatten().copied())
}
