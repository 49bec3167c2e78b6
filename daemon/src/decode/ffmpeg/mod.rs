//! FFmpeg as the fallback backend: a file symphonia cannot read is probed by `ffprobe` and
//! decoded by an `ffmpeg` child process streaming interleaved f32 at the file's own rate and
//! channel count. Downmixing, resampling, offsets and slicing stay ours, so both backends
//! give the same semantics. See Note [FFmpeg fallback].

mod child;
mod probe;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::decode::audio::{AudioInfo, Backend, ChannelMode};
use crate::decode::pcm::{self, PcmLayout};
use crate::decode::reader::DecodeStats;
use crate::decode::{limits, samples};
use crate::error::{DecodeError, Result};
use child::{Exit, Supervised};

/// The environment variable naming the `ffmpeg` binary to use (`ffprobe` is taken from
/// the same directory); `off` disables the fallback.
pub const FFMPEG_ENV: &str = "AUDIODECODE_FFMPEG";
/// ffprobe writes its answer at the end; a probe silent this long is hung.
const PROBE_STALL: Duration = Duration::from_secs(30);
/// An ffmpeg decode that writes no audio for this long is hung (decoders produce output
/// every few milliseconds of work, so this is never reached by a slow but working one).
const DECODE_STALL: Duration = Duration::from_secs(60);
/// Bytes of ffprobe output kept; its JSON for one stream is a few hundred.
const PROBE_OUTPUT_MAX: usize = 1 << 20;
/// Frames read from the pipe per block.
const BLOCK_FRAMES: usize = 4096;

/// Where the FFmpeg tools are.
#[derive(Debug)]
pub struct Tools {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

/// The FFmpeg tools, if installed (looked up once: `AUDIODECODE_FFMPEG`, else `PATH`).
pub fn tools() -> Option<&'static Tools> {
    static TOOLS: OnceLock<Option<Tools>> = OnceLock::new();
    TOOLS.get_or_init(locate).as_ref()
}

fn locate() -> Option<Tools> {
    let (ffmpeg, ffprobe) = match std::env::var_os(FFMPEG_ENV) {
        Some(v) if v.is_empty() || v == "off" => return None,
        Some(v) => {
            let ffmpeg = PathBuf::from(v);
            let ffprobe = ffmpeg.with_file_name("ffprobe");
            (ffmpeg, ffprobe)
        }
        None => (on_path("ffmpeg")?, on_path("ffprobe")?),
    };
    (is_executable(&ffmpeg) && is_executable(&ffprobe)).then_some(Tools { ffmpeg, ffprobe })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path as an FFmpeg input restricted to the file protocol, so that a file name such
/// as `concat:a|b` or `http:…` is read as the local file it names and nothing else.
fn input_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

/// Containers (ffprobe's format names) whose header states the length rather than FFmpeg
/// estimating it from a bitrate: ending well short of it means the file was cut.
const STATED_LENGTH_FORMATS: &[&str] = &[
    "mov",
    "wav",
    "w64",
    "aiff",
    "caf",
    "flac",
    "nistsphere",
    "wv",
    "tta",
    "ape",
    "tak",
];

/// A file opened through FFmpeg: its probed facts; each range decode runs one `ffmpeg`.
pub struct FfmpegReader {
    path: PathBuf,
    tools: &'static Tools,
    info: AudioInfo,
    /// See [`STATED_LENGTH_FORMATS`].
    stated_length: bool,
    /// FFmpeg's name for the channel layout (`5.1(side)`), when it states one.
    channel_layout: Option<String>,
}

impl FfmpegReader {
    pub fn open(path: &Path, tools: &'static Tools) -> Result<Self> {
        let mut cmd = Command::new(&tools.ffprobe);
        cmd.args(["-v", "error", "-protocol_whitelist", "file"])
            .args(["-select_streams", "a:0", "-of", "json", "-show_entries"])
            .arg(
                "stream=codec_name,sample_rate,channels,channel_layout,duration\
                 :format=format_name,duration",
            )
            .arg(input_url(path));
        let mut child = Supervised::spawn(cmd, PROBE_STALL).map_err(|e| spawn_error(path, e))?;
        let json = child
            .read_to_end_capped(PROBE_OUTPUT_MAX)
            .map_err(|e| DecodeError::open(path, e))?;
        let exit = child
            .finish(false)
            .map_err(|e| DecodeError::open(path, e))?;
        if exit.stalled {
            return Err(DecodeError::TimedOut {
                path: path.into(),
                seconds: PROBE_STALL.as_secs_f64(),
            });
        }
        if !exit.status.success() {
            return Err(DecodeError::Unsupported {
                path: path.into(),
                reason: format!("FFmpeg cannot read it either: {}", first_error(&exit)),
            });
        }
        let facts = probe::parse(&json).map_err(|e| DecodeError::Unsupported {
            path: path.into(),
            reason: format!("FFmpeg: {e}"),
        })?;
        let sample_rate = limits::check_file_rate(path, facts.sample_rate)?;
        let channels = limits::check_file_channels(path, facts.channels as usize)?;
        let frames = limits::plausible_frames(
            facts
                .duration
                .map(|d| (d * f64::from(sample_rate)).round() as u64),
            sample_rate,
        );
        let stated_length = facts
            .container
            .split(',')
            .any(|name| STATED_LENGTH_FORMATS.contains(&name));
        let info = AudioInfo {
            path: path.into(),
            codec: facts.codec,
            container: facts.container,
            sample_rate,
            channels: channels as u16,
            frames,
            duration: frames.map(|f| f as f64 / f64::from(sample_rate)),
            backend: Backend::Ffmpeg,
        };
        Ok(Self {
            path: path.into(),
            tools,
            info,
            stated_length,
            channel_layout: facts.channel_layout,
        })
    }

    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The speakers of the channels, when FFmpeg names the layout.
    pub(crate) fn speakers(&self) -> Option<Vec<crate::decode::downmix::Speaker>> {
        crate::decode::downmix::speakers_of_ffmpeg_layout(self.channel_layout.as_deref()?)
    }

    /// Decode frames `[start, end)` as [`crate::decode::SourceReader::decode_range`] does.
    /// FFmpeg resynchronises past damage itself; what it reports on stderr marks the
    /// result damaged (lenient) or fails it (strict).
    pub fn decode_range(
        &mut self,
        start: u64,
        end: Option<u64>,
        mode: ChannelMode,
        lenient: bool,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> Result<DecodeStats> {
        if end.is_some_and(|e| e <= start) {
            return Ok(DecodeStats::default());
        }
        let channels = usize::from(self.info.channels);
        let mut child = Supervised::spawn(self.decode_command(), DECODE_STALL)
            .map_err(|e| spawn_error(&self.path, e))?;
        let mut stats = DecodeStats::default();
        let window = Window { start, end };
        let stopped_early = self
            .pump(&mut child, channels, window, mode, &mut stats, sink)
            .map_err(|e| DecodeError::open(&self.path, e))?;
        let exit = child
            .finish(stopped_early)
            .map_err(|e| DecodeError::open(&self.path, e))?;
        self.judge(
            &exit,
            stopped_early,
            start + stats.frames,
            lenient,
            &mut stats,
        )?;
        if !stopped_early && stats.damage.is_none() {
            self.check_length(start + stats.frames, end, lenient, &mut stats)?;
        }
        Ok(stats)
    }

    /// Always from the start: FFmpeg's `-ss` lands by timestamps, which raw streams (AC-3,
    /// ADTS, …) only estimate, so a slice would not equal the same range of a full decode.
    /// Frames before an offset are counted off here instead (decoding is fast; a spawn
    /// and a read of the prefix are the cost).
    fn decode_command(&self) -> Command {
        let mut cmd = Command::new(&self.tools.ffmpeg);
        cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-threads", "1"])
            .args(["-protocol_whitelist", "file"])
            .arg("-i")
            .arg(input_url(&self.path))
            .args(["-map", "0:a:0", "-vn", "-sn", "-dn"])
            .args(["-ac", &self.info.channels.to_string()])
            .args(["-ar", &self.info.sample_rate.to_string()])
            .args(["-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"]);
        cmd
    }

    /// Streams the frames of `window` from the child's f32 output into the sink. Returns
    /// true when it stopped before the child's end.
    fn pump(
        &self,
        child: &mut Supervised,
        channels: usize,
        window: Window,
        mode: ChannelMode,
        stats: &mut DecodeStats,
        sink: &mut dyn FnMut(&[&[f32]]),
    ) -> std::io::Result<bool> {
        let mut position = 0u64;
        let frame_bytes = 4 * channels;
        let mut buf = vec![0u8; BLOCK_FRAMES * frame_bytes];
        let out_channels = match mode {
            ChannelMode::Mono | ChannelMode::Itu => 1,
            ChannelMode::Keep => channels,
        };
        let mut planes = vec![Vec::new(); out_channels];
        let mut filled = 0;
        loop {
            let n = child.read(&mut buf[filled..])?;
            if n == 0 {
                return Ok(false);
            }
            filled += n;
            let whole = filled / frame_bytes;
            let (from, take) = window.part(position, whole);
            position += whole as u64;
            if take > 0 {
                pcm::convert(
                    PcmLayout::F32Le,
                    &buf,
                    channels,
                    from,
                    take,
                    mode,
                    &mut planes,
                );
                planes.iter_mut().for_each(|p| samples::bound_samples(p));
                let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
                sink(&refs);
                stats.frames += take as u64;
            }
            if window.end.is_some_and(|e| position >= e) {
                return Ok(true);
            }
            buf.copy_within(whole * frame_bytes..filled, 0);
            filled -= whole * frame_bytes;
        }
    }

    /// Turns how the child ended into the result: a hang is a timeout; errors it reported
    /// (or a failed exit) fail a strict decode and mark a lenient one damaged, unless
    /// nothing decoded at all.
    fn judge(
        &self,
        exit: &Exit,
        stopped_early: bool,
        cursor: u64,
        lenient: bool,
        stats: &mut DecodeStats,
    ) -> Result<()> {
        if exit.stalled {
            return Err(DecodeError::TimedOut {
                path: self.path.clone(),
                seconds: DECODE_STALL.as_secs_f64(),
            });
        }
        let failed_exit = !stopped_early && !exit.status.success();
        if !failed_exit && exit.stderr.trim().is_empty() {
            return Ok(());
        }
        let error = DecodeError::Corrupt {
            path: self.path.clone(),
            at_seconds: cursor as f64 / f64::from(self.info.sample_rate),
            reason: format!("FFmpeg: {}", first_error(exit)),
        };
        if lenient && stats.frames > 0 {
            stats.damage = Some(error.to_string());
            return Ok(());
        }
        Err(error)
    }
}

/// The frames `[start, end)` of a decode, which FFmpeg always starts at frame 0.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: Option<u64>,
}

impl Window {
    /// The part of a block of `len` frames at `position` inside the window, as (offset in
    /// the block, length).
    fn part(self, position: u64, len: usize) -> (usize, usize) {
        let block_end = position + len as u64;
        let lo = self.start.max(position);
        let hi = self.end.map_or(block_end, |e| e.min(block_end));
        if hi > lo {
            ((lo - position) as usize, (hi - lo) as usize)
        } else {
            (0, 0)
        }
    }
}

impl FfmpegReader {
    /// FFmpeg decodes a cut-off file quietly; a stream ending well before the length its
    /// header states was cut (tolerance: 50 ms or 0.2 %, for codecs' padding).
    fn check_length(
        &self,
        cursor: u64,
        end: Option<u64>,
        lenient: bool,
        stats: &mut DecodeStats,
    ) -> Result<()> {
        let Some(declared) = self.info.frames.filter(|_| self.stated_length) else {
            return Ok(());
        };
        let wanted = end.map_or(declared, |e| e.min(declared));
        let tolerance = u64::from(self.info.sample_rate / 20).max(declared / 500);
        if cursor + tolerance >= wanted {
            return Ok(());
        }
        let error = DecodeError::Truncated {
            path: self.path.clone(),
            decoded_seconds: cursor as f64 / f64::from(self.info.sample_rate),
            declared_seconds: self.info.duration,
        };
        if lenient && stats.frames > 0 {
            stats.damage = Some(error.to_string());
            return Ok(());
        }
        Err(error)
    }
}

/// The first line FFmpeg wrote to stderr, or how it exited.
fn first_error(exit: &Exit) -> String {
    exit.stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map_or_else(|| format!("exited with {}", exit.status), without_addresses)
}

/// FFmpeg names the component that complains with its address (`[mp3 @ 0x55e4a3aaac40]`):
/// meaningless to a reader, and different in every run, so two runs over the same files
/// would write different error lines. `[mp3]` is kept.
fn without_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" @ 0x") {
        let hex = &rest[at + " @ 0x".len()..];
        let digits = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        out.push_str(&rest[..at]);
        if digits > 0 && hex[digits..].starts_with(']') {
            rest = &hex[digits..];
        } else {
            out.push_str(" @ 0x");
            rest = hex;
        }
    }
    out.push_str(rest);
    out
}

fn spawn_error(path: &Path, err: std::io::Error) -> DecodeError {
    DecodeError::Io {
        path: path.into(),
        source: std::io::Error::new(err.kind(), format!("cannot run FFmpeg: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::without_addresses;

    #[test]
    fn component_addresses_are_left_out_of_messages() {
        assert_eq!(
            without_addresses("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55b2913a0c40] trun track id unknown"),
            "[mov,mp4,m4a,3gp,3g2,mj2] trun track id unknown"
        );
        assert_eq!(
            without_addresses("[mp3 @ 0x56530094ec40] Could not seek to 1569."),
            "[mp3] Could not seek to 1569."
        );
        // Only an address closing a component's name goes.
        assert_eq!(
            without_addresses("a @ 0xzz] b @ 0x12"),
            "a @ 0xzz] b @ 0x12"
        );
        assert_eq!(without_addresses("no address"), "no address");
    }
}
