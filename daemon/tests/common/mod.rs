//! Shared fixtures and helpers for the integration tests.
//!
//! Every test binary generates its fixtures once per process with ffmpeg (and espeak-ng for
//! speech) into `$TMPDIR/audiodecode-fixtures-<pid>`; directories left behind by earlier test
//! processes that no longer run are removed on the way. FFmpeg is also the reference decoder.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use audiodecode::{load, ChannelMode, DecodedAudio, LoadRequest};

/// Whether a codec reproduces its input exactly, and otherwise its frame length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Lossless,
    Lossy { frame: usize },
}

/// One generated test file and what it should decode to.
#[derive(Clone, Debug)]
pub(crate) struct Fixture {
    pub name: &'static str,
    pub path: PathBuf,
    pub rate: u32,
    pub channels: usize,
    /// symphonia's short codec and container names, as `probe_info` reports them.
    pub codec: &'static str,
    pub container: &'static str,
    pub kind: Kind,
}

impl Fixture {
    pub(crate) fn is_lossless(&self) -> bool {
        self.kind == Kind::Lossless
    }

    pub(crate) fn codec_frame(&self) -> usize {
        match self.kind {
            Kind::Lossless => 0,
            Kind::Lossy { frame } => frame,
        }
    }
}

pub(crate) const MP3_FRAME: usize = 1152;
pub(crate) const VORBIS_FRAME: usize = 2048;
pub(crate) const OPUS_FRAME: usize = 960;
pub(crate) const AAC_FRAME: usize = 1024;

/// Left and right of the base signal: two different chirps plus a little noise, so that
/// neither channel repeats and a lag search has one clear answer.
const LEFT: &str = "0.5*sin(2*PI*(200*t+250*t*t))+0.05*(2*random(0)-1)";
const RIGHT: &str = "0.4*sin(2*PI*(700*t-80*t*t))+0.05*(2*random(1)-1)";
const THIRD: &str = "0.3*sin(2*PI*(100*t+90*t*t))+0.03*(2*random(2)-1)";
const FOURTH: &str = "0.2*(2*random(3)-1)";
/// The long file: frequency-modulated tones (200..1000 Hz and 370..1430 Hz) plus noise.
const LONG_LEFT: &str = "0.5*sin(2*PI*(600*t-(400/0.3)*cos(0.3*t)))+0.02*(2*random(0)-1)";
const LONG_RIGHT: &str = "0.4*sin(2*PI*(900*t+(530/0.17)*cos(0.17*t)))+0.02*(2*random(1)-1)";

pub(crate) const SHORT_SECONDS: f64 = 3.0;
pub(crate) const LONG_SECONDS: f64 = 150.0;
pub(crate) const SPEECH_TEXT: &str =
    "The quick brown fox jumps over the lazy dog. Decoding speech, seven times a day.";

fn source(channels: usize, rate: u32, seconds: f64) -> String {
    let exprs = match channels {
        1 => LEFT.to_string(),
        2 => format!("{LEFT}|{RIGHT}"),
        4 => format!("{LEFT}|{RIGHT}|{THIRD}|{FOURTH}"),
        n => panic!("no base signal for {n} channels"),
    };
    format!("aevalsrc=exprs={exprs}:s={rate}:d={seconds}")
}

/// How a fixture is made.
enum Recipe {
    /// The base signal at `rate` with `channels`, encoded with `args`.
    Signal { args: &'static [&'static str] },
    /// The base signal plus a small test-pattern video stream, encoded with `args`.
    Video { args: &'static [&'static str] },
    /// The speech clip (espeak-ng, 22050 Hz mono) encoded with `args`.
    Speech { args: &'static [&'static str] },
    /// A byte copy of another fixture under a different name.
    Copy { of: &'static str },
}

struct Spec {
    name: &'static str,
    file: &'static str,
    rate: u32,
    channels: usize,
    codec: &'static str,
    container: &'static str,
    kind: Kind,
    recipe: Recipe,
}

const LOSSY_MP3: Kind = Kind::Lossy { frame: MP3_FRAME };
const LOSSY_VORBIS: Kind = Kind::Lossy {
    frame: VORBIS_FRAME,
};
const LOSSY_OPUS: Kind = Kind::Lossy { frame: OPUS_FRAME };
const LOSSY_AAC: Kind = Kind::Lossy { frame: AAC_FRAME };

#[rustfmt::skip]
fn short_specs() -> Vec<Spec> {
    use Kind::Lossless;
    use Recipe::*;
    let s = |name, file, rate, channels, codec, container, kind, recipe| Spec {
        name, file, rate, channels, codec, container, kind, recipe,
    };
    vec![
        s("wav_u8", "u8.wav", 8000, 1, "pcm_u8", "wave", Lossless, Signal { args: &["-c:a", "pcm_u8"] }),
        s("wav_s16", "s16.wav", 44100, 2, "pcm_s16le", "wave", Lossless, Signal { args: &["-c:a", "pcm_s16le"] }),
        s("wav_s24", "s24.wav", 48000, 2, "pcm_s24le", "wave", Lossless, Signal { args: &["-c:a", "pcm_s24le"] }),
        s("wav_s32", "s32.wav", 22050, 1, "pcm_s32le", "wave", Lossless, Signal { args: &["-c:a", "pcm_s32le"] }),
        s("wav_f32", "f32.wav", 44100, 2, "pcm_f32le", "wave", Lossless, Signal { args: &["-c:a", "pcm_f32le"] }),
        s("wav_f64", "f64.wav", 48000, 1, "pcm_f64le", "wave", Lossless, Signal { args: &["-c:a", "pcm_f64le"] }),
        // Four channels make ffmpeg write WAVE_FORMAT_EXTENSIBLE (checked in formats.rs).
        s("wav_ext4", "ext4.wav", 48000, 4, "pcm_s16le", "wave", Lossless, Signal { args: &["-c:a", "pcm_s16le"] }),
        s("flac", "stereo.flac", 44100, 2, "flac", "flac", Lossless, Signal { args: &["-c:a", "flac"] }),
        s("flac_8k", "mono8k.flac", 8000, 1, "flac", "flac", Lossless, Signal { args: &["-c:a", "flac"] }),
        s("mp3", "stereo.mp3", 44100, 2, "mp3", "mp3", LOSSY_MP3, Signal { args: &["-c:a", "libmp3lame", "-b:a", "128k"] }),
        s("mp3_22k", "mono22k.mp3", 22050, 1, "mp3", "mp3", LOSSY_MP3, Signal { args: &["-c:a", "libmp3lame", "-b:a", "64k"] }),
        s("ogg", "stereo.ogg", 44100, 2, "vorbis", "ogg", LOSSY_VORBIS, Signal { args: &["-c:a", "libvorbis", "-q:a", "4"] }),
        s("ogg_22k", "mono22k.ogg", 22050, 1, "vorbis", "ogg", LOSSY_VORBIS, Signal { args: &["-c:a", "libvorbis"] }),
        s("opus", "stereo.opus", 48000, 2, "opus", "ogg", LOSSY_OPUS, Signal { args: &["-c:a", "libopus", "-b:a", "96k"] }),
        s("webm", "stereo.webm", 48000, 2, "opus", "matroska", LOSSY_OPUS, Signal { args: &["-c:a", "libopus", "-b:a", "96k"] }),
        // moov in front, so that a file cut short still opens (errors.rs truncates it).
        // Perceptual noise substitution off: PNS bands are filled from the decoder's random
        // generator, whose state after a seek cannot match a decode from the start, so a
        // PNS file's slices differ from the full decode by the noise level (slicing.rs
        // checks that separately on mp4_video, which keeps ffmpeg's default, PNS on).
        s("m4a_aac", "aac.m4a", 44100, 2, "aac", "isomp4", LOSSY_AAC, Signal { args: &["-c:a", "aac", "-b:a", "128k", "-aac_pns", "0", "-movflags", "+faststart"] }),
        s("m4a_alac", "alac.m4a", 22050, 1, "alac", "isomp4", Lossless, Signal { args: &["-c:a", "alac"] }),
        s("aiff", "stereo.aiff", 22050, 2, "pcm_s16be", "aiff", Lossless, Signal { args: &["-c:a", "pcm_s16be"] }),
        s("caf", "stereo.caf", 48000, 2, "pcm_s16le", "caf", Lossless, Signal { args: &["-c:a", "pcm_s16le"] }),
        // Video files (moov at the end for the mp4, ffmpeg's default).
        s("mp4_video", "video.mp4", 44100, 2, "aac", "isomp4", LOSSY_AAC, Video { args: &["-c:v", "mpeg4", "-c:a", "aac", "-b:a", "128k"] }),
        s("mkv_video", "video.mkv", 48000, 2, "vorbis", "matroska", LOSSY_VORBIS, Video { args: &["-c:v", "mpeg4", "-c:a", "libvorbis"] }),
        s("mkv_flac_video", "video-flac.mkv", 48000, 2, "flac", "matroska", Lossless, Video { args: &["-c:v", "mpeg4", "-c:a", "flac"] }),
        // Speech.
        s("speech_mp3", "speech.mp3", 22050, 1, "mp3", "mp3", LOSSY_MP3, Speech { args: &["-c:a", "libmp3lame", "-b:a", "64k"] }),
        s("speech_ogg", "speech.ogg", 22050, 1, "vorbis", "ogg", LOSSY_VORBIS, Speech { args: &["-c:a", "libvorbis"] }),
        // Detection by content, not by name.
        s("misnamed_flac", "misnamed.mp3", 44100, 2, "flac", "flac", Lossless, Copy { of: "flac" }),
        s("noext_wav", "noextension", 44100, 2, "pcm_s16le", "wave", Lossless, Copy { of: "wav_s16" }),
    ]
}

#[rustfmt::skip]
fn long_specs() -> Vec<Spec> {
    let s = |name, file, codec, container, kind, args| Spec {
        name, file, rate: 44100, channels: 2, codec, container, kind, recipe: Recipe::Signal { args },
    };
    vec![
        s("long_flac", "long.flac", "flac", "flac", Kind::Lossless, &["-c:a", "flac"][..]),
        s("long_mp3", "long.mp3", "mp3", "mp3", LOSSY_MP3, &["-c:a", "libmp3lame", "-b:a", "128k"][..]),
    ]
}

/// A tool must be installed: the tests would prove nothing without it.
pub(crate) fn require_tool(tool: &str) {
    let ok = Command::new(tool)
        .arg(if tool == "espeak-ng" || tool == "sox" {
            "--version"
        } else {
            "-version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{tool} is required by the tests: install {tool}: apt-get install {tool}"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-y"]);
    cmd
}

/// Remove fixture directories of test processes that have exited.
fn remove_stale_dirs(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("audiodecode-fixtures-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// This process's fixture directory (created on first use).
pub(crate) fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale_dirs(&tmp);
        let dir = tmp.join(format!("audiodecode-fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create fixture directory");
        dir
    })
}

/// A fresh scratch directory inside the fixture directory.
pub(crate) fn scratch_dir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(fixture_dir())
        .expect("create scratch directory")
}

fn generate(specs: Vec<Spec>) -> HashMap<&'static str, Fixture> {
    require_tool("ffmpeg");
    let started = std::time::Instant::now();
    let dir = fixture_dir();
    let needs_speech = specs
        .iter()
        .any(|s| matches!(s.recipe, Recipe::Speech { .. }));
    let speech_wav = dir.join("speech-source.wav");
    if needs_speech {
        require_tool("espeak-ng");
        run(Command::new("espeak-ng")
            .arg("-w")
            .arg(&speech_wav)
            .arg(SPEECH_TEXT));
    }
    let make = |spec: &Spec| {
        let out = dir.join(spec.file);
        match &spec.recipe {
            Recipe::Signal { args } => run(ffmpeg()
                .args(["-f", "lavfi", "-i"])
                .arg(source(spec.channels, spec.rate, SHORT_SECONDS))
                .args(*args)
                .arg(&out)),
            Recipe::Video { args } => run(ffmpeg()
                .args(["-f", "lavfi", "-i"])
                .arg(source(spec.channels, spec.rate, SHORT_SECONDS))
                .args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc=size=64x48:rate=10:d={SHORT_SECONDS}"))
                .args(*args)
                .arg(&out)),
            Recipe::Speech { args } => {
                run(ffmpeg().arg("-i").arg(&speech_wav).args(*args).arg(&out))
            }
            Recipe::Copy { .. } => {}
        }
    };
    // Two workers: the machine is small and each ffmpeg run is short.
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                make(spec);
            });
        }
    });
    let mut map = HashMap::new();
    for spec in &specs {
        let path = dir.join(spec.file);
        if let Recipe::Copy { of } = spec.recipe {
            let src = specs.iter().find(|s| s.name == of).expect("copy source");
            std::fs::copy(dir.join(src.file), &path).expect("copy fixture");
        }
        assert!(path.is_file(), "fixture {} was not generated", spec.name);
        map.insert(
            spec.name,
            Fixture {
                name: spec.name,
                path,
                rate: spec.rate,
                channels: spec.channels,
                codec: spec.codec,
                container: spec.container,
                kind: spec.kind,
            },
        );
    }
    eprintln!(
        "generated {} fixtures in {} in {:.1} s",
        map.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    map
}

fn short_fixtures() -> &'static HashMap<&'static str, Fixture> {
    static SHORT: OnceLock<HashMap<&'static str, Fixture>> = OnceLock::new();
    SHORT.get_or_init(|| generate(short_specs()))
}

fn long_fixtures() -> &'static HashMap<&'static str, Fixture> {
    static LONG: OnceLock<HashMap<&'static str, Fixture>> = OnceLock::new();
    LONG.get_or_init(|| generate_long(long_specs()))
}

/// The long files use their own signal: a 150 s chirp would sweep far past Nyquist.
fn generate_long(specs: Vec<Spec>) -> HashMap<&'static str, Fixture> {
    require_tool("ffmpeg");
    let dir = fixture_dir();
    // One source pass, two encodes.
    let mut cmd = ffmpeg();
    cmd.args(["-f", "lavfi", "-i"]).arg(format!(
        "aevalsrc=exprs={LONG_LEFT}|{LONG_RIGHT}:s=44100:d={LONG_SECONDS}"
    ));
    for spec in &specs {
        if let Recipe::Signal { args } = spec.recipe {
            cmd.args(args).arg(dir.join(spec.file));
        }
    }
    let started = std::time::Instant::now();
    run(&mut cmd);
    eprintln!(
        "generated the {LONG_SECONDS} s fixtures in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    specs
        .iter()
        .map(|spec| {
            (
                spec.name,
                Fixture {
                    name: spec.name,
                    path: dir.join(spec.file),
                    rate: spec.rate,
                    channels: spec.channels,
                    codec: spec.codec,
                    container: spec.container,
                    kind: spec.kind,
                },
            )
        })
        .collect()
}

/// A short (3 s) fixture by name, generating the set on first use.
pub(crate) fn fixture(name: &str) -> &'static Fixture {
    short_fixtures()
        .get(name)
        .unwrap_or_else(|| panic!("no fixture named {name}"))
}

/// A 150 s 44.1 kHz stereo fixture: `long_flac` or `long_mp3`.
pub(crate) fn long_fixture(name: &str) -> &'static Fixture {
    long_fixtures()
        .get(name)
        .unwrap_or_else(|| panic!("no long fixture named {name}"))
}

/// The names of every short fixture, in a stable order.
pub(crate) fn short_fixture_names() -> Vec<&'static str> {
    short_specs().iter().map(|s| s.name).collect()
}

/// FFmpeg's decode of a file: native rate, every channel, planar.
#[derive(Debug)]
pub(crate) struct Reference {
    pub rate: u32,
    pub planes: Vec<Vec<f32>>,
}

impl Reference {
    pub(crate) fn frames(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }
}

/// Decode with `ffmpeg -v error -i FILE -f f32le -acodec pcm_f32le -` (cached per file).
pub(crate) fn reference(path: &Path) -> Arc<Reference> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Reference>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap().get(path) {
        return r.clone();
    }
    require_tool("ffmpeg");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args([
            "stream=sample_rate,channels",
            "-of",
            "default=noprint_wrappers=1",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        probe.status.success(),
        "ffprobe failed on {}",
        path.display()
    );
    let text = String::from_utf8_lossy(&probe.stdout);
    let field = |key: &str| -> u32 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("ffprobe gave no {key} for {}: {text}", path.display()))
    };
    let (rate, channels) = (field("sample_rate"), field("channels") as usize);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-acodec", "pcm_f32le", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let r = Arc::new(Reference {
        rate,
        planes: deinterleave(&samples, channels),
    });
    cache.lock().unwrap().insert(path.to_path_buf(), r.clone());
    r
}

pub(crate) fn deinterleave(samples: &[f32], channels: usize) -> Vec<Vec<f32>> {
    assert!(channels > 0 && samples.len().is_multiple_of(channels));
    (0..channels)
        .map(|c| samples.iter().skip(c).step_by(channels).copied().collect())
        .collect()
}

/// A request with every field at its default except those given.
pub(crate) fn keep() -> LoadRequest {
    LoadRequest {
        channels: ChannelMode::Keep,
        ..Default::default()
    }
}

pub(crate) fn mono_at(rate: Option<u32>) -> LoadRequest {
    LoadRequest {
        sample_rate: rate,
        channels: ChannelMode::Mono,
        ..Default::default()
    }
}

/// `load` that must succeed, with the error in the panic message otherwise.
pub(crate) fn load_ok(path: &Path, req: &LoadRequest, threads: usize) -> DecodedAudio {
    load(path, req, threads)
        .unwrap_or_else(|e| panic!("load({}, {req:?}) failed: {e}", path.display()))
}

/// Planar audio through a fresh [`StreamResampler`] in one push, as the pipeline does for
/// a file decoded in one piece.
pub(crate) fn resample_planes(
    planes: &[Vec<f32>],
    in_rate: u32,
    out_rate: u32,
    quality: audiodecode::Quality,
) -> Vec<Vec<f32>> {
    let mut r =
        audiodecode::resample::StreamResampler::new(in_rate, out_rate, planes.len(), quality)
            .expect("resampler");
    let mut out = vec![Vec::new(); planes.len()];
    let mut emit = |chunk: &[&[f32]]| {
        for (o, c) in out.iter_mut().zip(chunk) {
            o.extend_from_slice(c);
        }
    };
    let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    r.push(&refs, &mut emit);
    r.finish(&mut emit);
    out
}

/// Largest absolute difference between two equally long slices.
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the first sample that differs (bitwise, so that NaN == NaN is caught too).
pub(crate) fn first_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Assert two sets of planes are identical sample by sample.
pub(crate) fn assert_planes_equal(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}: channel count");
    for (c, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: channel {c} length");
        if let Some(i) = first_difference(g, w) {
            panic!(
                "{what}: channel {c} differs first at frame {i}: {} vs {} (max abs diff {})",
                g[i],
                w[i],
                max_abs_diff(g, w)
            );
        }
    }
}

pub(crate) fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Amplitude of the `freq` component of `x` (Goertzel), for a sine of amplitude A ≈ A.
pub(crate) fn goertzel_amplitude(x: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}

/// A sine of `freq` Hz at `rate`, `frames` long.
pub(crate) fn sine(freq: f64, rate: u32, frames: usize, amplitude: f64) -> Vec<f32> {
    (0..frames)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32
        })
        .collect()
}

/// Cross-correlation of `a` against `b` for lags `-max_lag..=max_lag`, summed over channels,
/// via FFT: `r[lag] = sum_i a[i + lag] * b[i]`. Returns the lag with the largest value.
pub(crate) fn best_lag(a: &[Vec<f32>], b: &[Vec<f32>], max_lag: usize) -> i64 {
    use rustfft::num_complex::Complex;
    let n = a
        .iter()
        .chain(b)
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .saturating_add(max_lag + 1)
        .next_power_of_two();
    let mut planner = rustfft::FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut acc = vec![Complex::new(0.0, 0.0); n];
    for (pa, pb) in a.iter().zip(b) {
        let mut fa: Vec<Complex<f64>> = pa
            .iter()
            .map(|&v| Complex::new(f64::from(v), 0.0))
            .collect();
        fa.resize(n, Complex::new(0.0, 0.0));
        let mut fb: Vec<Complex<f64>> = pb
            .iter()
            .map(|&v| Complex::new(f64::from(v), 0.0))
            .collect();
        fb.resize(n, Complex::new(0.0, 0.0));
        fwd.process(&mut fa);
        fwd.process(&mut fb);
        for ((acc, x), y) in acc.iter_mut().zip(&fa).zip(&fb) {
            *acc += x * y.conj();
        }
    }
    inv.process(&mut acc);
    let value = |lag: i64| acc[lag.rem_euclid(n as i64) as usize].re;
    let m = max_lag as i64;
    (-m..=m)
        .max_by(|&x, &y| value(x).total_cmp(&value(y)))
        .unwrap_or(0)
}

/// Pearson correlation of `a[i + lag]` with `b[i]` over their overlap.
pub(crate) fn correlation_at(a: &[f32], b: &[f32], lag: i64) -> f64 {
    let (a, b) = if lag >= 0 {
        (&a[(lag as usize).min(a.len())..], b)
    } else {
        (a, &b[((-lag) as usize).min(b.len())..])
    };
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |x: &[f32]| x.iter().map(|&v| f64::from(v)).sum::<f64>() / n.max(1) as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt().max(1e-30)
}

/// A tiny deterministic PRNG (xorshift64*).
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Output frames for a request of `offset`/`duration` seconds at `rate`, as the pipeline
/// rounds them.
pub(crate) fn frames_at(seconds: f64, rate: u32) -> usize {
    (seconds * f64::from(rate)).round() as usize
}

/// The message of an error names the file.
pub(crate) fn assert_names_path(err: &audiodecode::DecodeError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error message does not name {}: {msg}",
        path.display()
    );
    assert_eq!(err.path(), path, "DecodeError::path()");
}
