//! One opened file behind either backend: symphonia in-process, or FFmpeg for what
//! symphonia cannot read. See Note [FFmpeg fallback].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::decode::audio::{AudioInfo, ChannelMode};
use crate::decode::ffmpeg::{self, FfmpegReader};
use crate::decode::reader::{DecodeStats, SourceReader};
use crate::decode::sniff;
use crate::error::{panic_message, DecodeError, Result};

// One `Source` lives per decode on the stack; boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Source {
    Native(SourceReader),
    Ffmpeg(FfmpegReader),
}

impl Source {
    /// Opens `path` with symphonia, or through FFmpeg when symphonia cannot read it: a
    /// format its first bytes name that symphonia has no reader for, or a file symphonia
    /// rejects (an unknown container or codec, a header it refuses, a panic in its probe).
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(format) = sniff::foreign_format(path) {
            let no_reader = DecodeError::Unsupported {
                path: path.into(),
                reason: format!("symphonia has no reader for {format}"),
            };
            return match ffmpeg::tools() {
                // A refusal names the format too: FFmpeg's own guess can mislead (it took
                // OptimFROG files for MP3 with bad frames).
                Some(tools) => FfmpegReader::open(path, tools)
                    .map(Self::Ffmpeg)
                    .map_err(|ff| match ff {
                        DecodeError::Unsupported { .. } => both_failed(no_reader, &ff),
                        other => other,
                    }),
                None => Err(without_ffmpeg(no_reader, None)),
            };
        }
        let native =
            catch_unwind(AssertUnwindSafe(|| SourceReader::open(path))).unwrap_or_else(|payload| {
                Err(DecodeError::Panic {
                    path: path.into(),
                    message: panic_message(payload.as_ref()),
                })
            });
        match native {
            Ok(reader) => Ok(Self::Native(reader)),
            Err(err) if !worth_fallback(&err, path) => Err(err),
            Err(err) => match ffmpeg::tools() {
                Some(tools) => FfmpegReader::open(path, tools)
                    .map(Self::Ffmpeg)
                    .map_err(|ff| both_failed(err, &ff)),
                None => {
                    let looks_like = sniff::describe(path);
                    Err(without_ffmpeg(err, looks_like))
                }
            },
        }
    }

    /// Opens `path` through FFmpeg only, when it is installed.
    pub fn open_ffmpeg(path: &Path) -> Option<Result<Self>> {
        ffmpeg::tools().map(|tools| FfmpegReader::open(path, tools).map(Self::Ffmpeg))
    }

    pub fn info(&self) -> &AudioInfo {
        match self {
            Self::Native(r) => r.info(),
            Self::Ffmpeg(r) => r.info(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Native(r) => r.path(),
            Self::Ffmpeg(r) => r.path(),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.info().sample_rate
    }

    pub fn channels(&self) -> usize {
        usize::from(self.info().channels)
    }

    /// Weights of the ITU downmix for this file's channels (the mean for a layout it does
    /// not know). See Note [Downmix].
    pub fn itu_weights(&self) -> Vec<f32> {
        let speakers = match self {
            Self::Native(r) => r.speakers(),
            Self::Ffmpeg(r) => r.speakers(),
        };
        let n = self.channels().max(1);
        speakers
            .filter(|s| s.len() == n)
            .and_then(|s| crate::decode::downmix::itu_weights(&s))
            .unwrap_or_else(|| vec![1.0 / n as f32; n])
    }

    /// The declared length when it is stated by the file rather than estimated, so that
    /// offsets may be checked against it and long files cut into parallel segments.
    /// FFmpeg's durations are often estimates; its files decode serially.
    pub fn reliable_frames(&self) -> Option<u64> {
        match self {
            Self::Native(r) if r.length_is_reliable() => r.info().frames,
            _ => None,
        }
    }

    /// Decode frames `[start, end)` into `sink`; see [`SourceReader::decode_range`].
    pub fn decode_range(
        &mut self,
        start: u64,
        end: Option<u64>,
        mode: ChannelMode,
        lenient: bool,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Result<DecodeStats> {
        match self {
            Self::Native(r) => r.decode_range(start, end, mode, lenient, sink),
            Self::Ffmpeg(r) => r.decode_range(start, end, mode, lenient, sink),
        }
    }
}

/// Read container facts without decoding the audio (beyond one packet when the headers
/// leave rate or layout open). A URL is fetched first: only its header, when it is a large
/// file of fixed-size blocks (Note [Ranged reads of remote files]).
pub fn probe_info(path: &Path) -> Result<AudioInfo> {
    let header_only = crate::decode::LoadRequest {
        duration: Some(0.0),
        ..crate::decode::LoadRequest::default()
    };
    crate::decode::remote::with_local_part(path, &header_only, |local| {
        let source = Source::open(local)?;
        let mut info = match &source {
            Source::Native(_) if source.info().frames == Some(0) => {
                ffmpeg_reading(local).unwrap_or_else(|| source.info().clone())
            }
            _ => source.info().clone(),
        };
        info.path = path.to_path_buf();
        Ok(info)
    })
}

/// FFmpeg's facts for a file whose headers symphonia read as holding no frames (an MP3
/// whose encoder delay in its LAME tag is longer than the frames its Xing header counts),
/// when FFmpeg decodes audio there: a decode takes FFmpeg's reading of such a file
/// (`segments::better_through_ffmpeg`), so `info` reports what a decode gives. The headers
/// that misled symphonia mislead FFmpeg's estimate too (576 frames for 0.5 s of audio), so
/// the frames are counted by decoding, as the decode would: such files are rare and the
/// count costs what a decode of them costs.
fn ffmpeg_reading(path: &Path) -> Option<AudioInfo> {
    let mut ffmpeg = Source::open_ffmpeg(path)?.ok()?;
    let stats = ffmpeg
        .decode_range(0, None, ChannelMode::Mono, true, &mut |_| {})
        .ok()?;
    if stats.frames == 0 {
        return None;
    }
    let mut info = ffmpeg.info().clone();
    info.frames = Some(stats.frames);
    info.duration = Some(stats.frames as f64 / f64::from(info.sample_rate));
    Some(info)
}

/// Errors about the file's content, which another decoder may not share; not those about
/// reaching the file (missing, unreadable, not a regular file) or a file of zero bytes.
/// symphonia calls a stream it finds no packet in empty (an E-AC-3 or Speex file it takes
/// for something else), so "empty" falls back when the file has bytes. An "invalid
/// argument" from reading an opened file is a seek to an offset its content made up (a
/// CAF whose data chunk size is -1, "to the end of the file", as streaming writers leave
/// it).
fn worth_fallback(err: &DecodeError, path: &Path) -> bool {
    match err {
        DecodeError::Unsupported { .. }
        | DecodeError::Corrupt { .. }
        | DecodeError::Panic { .. } => true,
        DecodeError::Io { source, .. } => source.kind() == std::io::ErrorKind::InvalidInput,
        DecodeError::Empty { .. } => std::fs::metadata(path).is_ok_and(|m| m.len() > 0),
        _ => false,
    }
}

/// symphonia's error says best what is wrong; FFmpeg's reason is added to "unsupported".
fn both_failed(native: DecodeError, ffmpeg: &DecodeError) -> DecodeError {
    match (native, ffmpeg) {
        (
            DecodeError::Unsupported { path, reason },
            DecodeError::Unsupported { reason: ff, .. },
        ) => DecodeError::Unsupported {
            path,
            reason: format!("{reason}; {ff}"),
        },
        (native, _) => native,
    }
}

/// Adds what the file looks like (when known) and that FFmpeg would read it.
fn without_ffmpeg(native: DecodeError, looks_like: Option<String>) -> DecodeError {
    match native {
        DecodeError::Unsupported { path, reason } => DecodeError::Unsupported {
            reason: format!(
                "{reason}{}; audiodecode reads such files through FFmpeg, which is not \
                 installed (or {}=off): install it, e.g. `apt install ffmpeg`",
                looks_like.map_or(String::new(), |f| format!(" (the file looks like {f})")),
                ffmpeg::FFMPEG_ENV
            ),
            path,
        },
        other => other,
    }
}
