//! Bad inputs give typed errors that name the file, never a panic out of `load`; lenient
//! decoding keeps exactly what decoded before the damage.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::path::{Path, PathBuf};

use audiodecode::{load, probe_info, ChannelMode, DecodeError, DecodedAudio, LoadRequest};
use common::*;

fn kind_of(r: &Result<DecodedAudio, DecodeError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// `load` (strict, keep channels) must fail with the given kind, naming the file.
fn expect_error(path: &Path, req: &LoadRequest, kind: &str) -> DecodeError {
    match load(path, req, 1) {
        Ok(a) => panic!(
            "{}: expected {kind}, decoded {} frames",
            path.display(),
            a.frames()
        ),
        Err(e) => {
            eprintln!("{}: {} ({e})", path.display(), e.kind());
            assert_eq!(e.kind(), kind, "{}: {e}", path.display());
            assert_names_path(&e, path);
            e
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn lenient(req: &LoadRequest) -> LoadRequest {
    LoadRequest {
        lenient: true,
        ..req.clone()
    }
}

/// A canonical 44-byte WAV header for 16-bit PCM with `data_bytes` of audio following.
fn wav_header(channels: u16, rate: u32, data_bytes: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    h.extend_from_slice(&(channels * 2).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

#[test]
fn missing_file_is_not_found() {
    let dir = scratch_dir("missing");
    let path = dir.path().join("no-such-file.flac");
    expect_error(&path, &keep(), "not_found");
    let e = probe_info(&path).unwrap_err();
    assert!(matches!(e, DecodeError::NotFound { .. }), "{e:?}");
    assert_names_path(&e, &path);
}

#[test]
fn directory_is_invalid_request() {
    let dir = scratch_dir("a-directory.wav");
    let e = expect_error(dir.path(), &keep(), "invalid_request");
    assert!(matches!(e, DecodeError::InvalidRequest { .. }));
}

#[test]
fn text_file_is_unsupported() {
    let dir = scratch_dir("text");
    let path = write(
        dir.path(),
        "notes.wav",
        "This is not audio.\nJust a few lines of text.\n"
            .repeat(50)
            .as_bytes(),
    );
    expect_error(&path, &keep(), "unsupported");
}

#[test]
fn random_bytes_are_unsupported() {
    let dir = scratch_dir("random");
    for seed in 1..=5u64 {
        let mut bytes = vec![0u8; 64 * 1024];
        XorShift::new(seed).fill(&mut bytes);
        let path = write(dir.path(), &format!("noise-{seed}.mp3"), &bytes);
        expect_error(&path, &keep(), "unsupported");
        let path = write(dir.path(), &format!("noise-{seed}"), &bytes);
        expect_error(&path, &keep(), "unsupported");
    }
}

#[test]
fn zero_byte_file() {
    let dir = scratch_dir("zero");
    for name in ["empty.wav", "empty.mp3", "empty"] {
        let path = write(dir.path(), name, &[]);
        expect_error(&path, &keep(), "empty");
    }
}

#[test]
fn wav_with_no_frames_is_empty() {
    let dir = scratch_dir("noframes");
    let path = write(dir.path(), "header-only.wav", &wav_header(2, 44100, 0));
    expect_error(&path, &keep(), "empty");
    expect_error(&path, &lenient(&keep()), "empty");
    let info = probe_info(&path).unwrap();
    assert_eq!(info.frames, Some(0));
}

#[test]
fn invalid_requests() {
    let path = &fixture("flac").path;
    let cases = [
        LoadRequest {
            offset: -0.5,
            ..keep()
        },
        LoadRequest {
            offset: f64::NAN,
            ..keep()
        },
        LoadRequest {
            offset: f64::INFINITY,
            ..keep()
        },
        LoadRequest {
            duration: Some(f64::NAN),
            ..keep()
        },
        LoadRequest {
            duration: Some(-1.0),
            ..keep()
        },
        LoadRequest {
            duration: Some(f64::INFINITY),
            ..keep()
        },
        LoadRequest {
            sample_rate: Some(0),
            ..keep()
        },
    ];
    for req in cases {
        let e = expect_error(path, &req, "invalid_request");
        assert!(matches!(e, DecodeError::InvalidRequest { .. }), "{req:?}");
    }
}

#[test]
fn offset_past_end() {
    for name in ["wav_s16", "flac", "mp3", "ogg", "opus", "m4a_aac"] {
        let path = &fixture(name).path;
        for offset in [3.0, 3.5, 1e6] {
            let e = expect_error(path, &LoadRequest { offset, ..keep() }, "offset_past_end");
            let msg = e.to_string();
            assert!(msg.contains("past the end"), "{msg}");
        }
    }
}

// Truncated files.

/// The first `fraction` of a fixture's bytes, written beside the others.
fn truncated_copy(dir: &Path, name: &str, fraction: f64) -> PathBuf {
    let fx = fixture(name);
    let bytes = std::fs::read(&fx.path).unwrap();
    let cut = (bytes.len() as f64 * fraction) as usize;
    let file = fx.path.file_name().unwrap().to_string_lossy();
    write(dir, &format!("cut-{file}"), &bytes[..cut])
}

/// Lenient output is a prefix of the full decode of the intact file.
fn assert_prefix(what: &str, got: &DecodedAudio, full: &DecodedAudio) {
    assert_eq!(got.channels(), full.channels(), "{what}: channels");
    assert_eq!(got.sample_rate, full.sample_rate, "{what}: rate");
    assert!(
        got.frames() < full.frames(),
        "{what}: {} frames from a truncated file, {} from the whole",
        got.frames(),
        full.frames()
    );
    let prefix: Vec<Vec<f32>> = full
        .planes
        .iter()
        .map(|p| p[..got.frames()].to_vec())
        .collect();
    assert_planes_equal(what, &got.planes, &prefix);
}

/// Strict decoding of the first 60 % of a file fails with `strict_kind`; lenient decoding
/// keeps exactly what decoded before the cut.
fn check_truncated(name: &str, strict_kind: &str) {
    let fx = fixture(name);
    let dir = scratch_dir(&format!("truncated-{name}"));
    let path = truncated_copy(dir.path(), name, 0.6);
    for req in [keep(), mono_at(None), mono_at(Some(16_000))] {
        expect_error(&path, &req, strict_kind);
        if fx.container == "isomp4" {
            // symphonia's MP4 reader skips a top-level atom that runs past the end of the
            // file, so a cut `mdat` yields no packets; FFmpeg reads what the cut left,
            // which lenient decoding keeps (another AAC decoder: close, not bit-exact).
            let got = load_ok(&path, &lenient(&req), 1);
            let full = load_ok(&fx.path, &req, 1);
            assert!(got.is_damaged(), "{name}: not marked damaged");
            assert!(got.frames() > full.frames() / 3 && got.frames() < full.frames());
            let corr = correlation_at(&got.planes[0], &full.planes[0][..got.frames()], 0);
            assert!(corr > 0.99, "{name}: what FFmpeg kept, correlation {corr}");
            continue;
        }
        let got = load_ok(&path, &lenient(&req), 1);
        let full = load_ok(&fx.path, &req, 1);
        eprintln!(
            "{name} cut at 60% ({req:?}): lenient kept {} of {} frames, damaged = {}",
            got.frames(),
            full.frames(),
            got.is_damaged()
        );
        assert!(
            got.is_damaged(),
            "{name}: lenient decode of a truncated file not marked damaged"
        );
        assert!(got.frames() > full.frames() / 3, "{name}: kept too little");
        match req.sample_rate {
            // At the native rate: a prefix of the full decode, sample for sample.
            None => assert_prefix(name, &got, &full),
            // Resampled: the resampler's tail depends on input past the cut, so compare with
            // the lenient native-rate decode resampled the same way.
            Some(rate) => {
                let native = load_ok(&path, &lenient(&mono_at(None)), 1);
                let want = resample_planes(&native.planes, fx.rate, rate, req.quality);
                assert_planes_equal(&format!("{name} resampled"), &got.planes, &want);
            }
        }
    }
}

#[test]
fn truncated_wav() {
    check_truncated("wav_s16", "truncated");
}

#[test]
fn truncated_flac() {
    check_truncated("flac", "truncated");
}

#[test]
fn truncated_mp3() {
    check_truncated("mp3", "truncated");
}

#[test]
fn truncated_ogg() {
    check_truncated("ogg", "truncated");
}

#[test]
fn truncated_m4a() {
    check_truncated("m4a_aac", "corrupt");
}

// Corrupted data.

fn check_corrupted(name: &str) {
    let fx = fixture(name);
    let dir = scratch_dir(&format!("corrupt-{name}"));
    let mut bytes = std::fs::read(&fx.path).unwrap();
    let mid = bytes.len() / 2;
    XorShift::new(0xC0FFEE).fill(&mut bytes[mid..mid + 4096]);
    let file = fx.path.file_name().unwrap().to_string_lossy();
    let path = write(dir.path(), &format!("corrupt-{file}"), &bytes);

    let strict = load(&path, &keep(), 1);
    eprintln!("{name} with 4 KB of garbage: strict {}", kind_of(&strict));
    match &strict {
        Err(e) => {
            assert!(!matches!(e, DecodeError::Panic { .. }), "{name}: {e}");
            assert_names_path(e, &path);
        }
        Ok(a) => panic!(
            "{name}: strict decode of corrupted data succeeded ({} frames)",
            a.frames()
        ),
    }
    let got = load_ok(&path, &lenient(&keep()), 1);
    let full = load_ok(&fx.path, &keep(), 1);
    eprintln!(
        "{name} with 4 KB of garbage: lenient kept {} of {} frames, damaged = {}",
        got.frames(),
        full.frames(),
        got.is_damaged()
    );
    assert!(
        got.is_damaged(),
        "{name}: lenient decode of corrupted data not marked damaged"
    );
    // Resynchronised past the garbage (through FFmpeg), as FFmpeg and librosa do: all of
    // the file but the damaged frames (FFmpeg drops those), and what precedes the damage
    // equal to the intact file's decode.
    assert!(
        got.frames() * 100 >= full.frames() * 85,
        "{name}: kept only {} of {} frames",
        got.frames(),
        full.frames()
    );
    let before = full.frames() * 2 / 5;
    for (g, f) in got.planes.iter().zip(&full.planes) {
        let corr = correlation_at(&g[..before], &f[..before], 0);
        assert!(
            corr > 0.999,
            "{name}: before the damage, correlation {corr}"
        );
    }
}

#[test]
fn corrupted_flac() {
    check_corrupted("flac");
}

#[test]
fn corrupted_mp3() {
    check_corrupted("mp3");
}

// Robustness sweep: damaged files of every format must come back from `load`.

const SWEEP: [&str; 14] = [
    "wav_s16",
    "wav_ext4",
    "flac",
    "mp3",
    "ogg",
    "opus",
    "webm",
    "m4a_aac",
    "m4a_alac",
    "aiff",
    "caf",
    "mp4_video",
    "mkv_video",
    "mkv_flac_video",
];

#[derive(Default)]
struct Tally {
    counts: std::collections::BTreeMap<&'static str, usize>,
    panics: Vec<String>,
}

impl Tally {
    fn record(&mut self, path: &Path, what: &str, r: &Result<DecodedAudio, DecodeError>) {
        *self.counts.entry(kind_of(r)).or_default() += 1;
        if let Err(e) = r {
            assert_names_path(e, path);
            if let DecodeError::Panic { .. } = e {
                self.panics.push(format!("{what}: {e}"));
            }
        }
    }
}

fn sweep(name: &str) -> Tally {
    let fx = fixture(name);
    let dir = scratch_dir(&format!("sweep-{name}"));
    let bytes = std::fs::read(&fx.path).unwrap();
    let ext = fx
        .path
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    let mut tally = Tally::default();
    let requests = [
        keep(),
        LoadRequest {
            lenient: true,
            sample_rate: Some(16_000),
            channels: ChannelMode::Mono,
            offset: 0.7,
            ..Default::default()
        },
    ];
    let mut rng = XorShift::new(name.len() as u64 * 7919);
    // 25 cut points spread over the file, the first ones inside the headers.
    for i in 0..25 {
        let cut = match i {
            0..=4 => [1, 4, 12, 44, 100][i],
            _ => bytes.len() * (i - 4) / 21 - rng.below(17),
        }
        .min(bytes.len() - 1);
        let path = write(dir.path(), &format!("cut{i}{ext}"), &bytes[..cut]);
        for req in &requests {
            let r = load(&path, req, 1);
            tally.record(&path, &format!("{name} cut at {cut}"), &r);
        }
    }
    // 25 seeds of random byte damage: a few single bytes anywhere, one burst.
    for seed in 0..25u64 {
        let mut damaged = bytes.clone();
        let mut rng = XorShift::new(seed + 1000 * name.len() as u64);
        for _ in 0..8 {
            let at = rng.below(damaged.len());
            damaged[at] ^= 1 + rng.below(255) as u8;
        }
        // One early byte, where the headers are.
        let at = rng.below(damaged.len().min(512));
        damaged[at] ^= 1 + rng.below(255) as u8;
        let at = rng.below(damaged.len() - 64);
        rng.fill(&mut damaged[at..at + 64]);
        let path = write(dir.path(), &format!("flip{seed}{ext}"), &damaged);
        for req in &requests {
            let r = load(&path, req, 2);
            tally.record(&path, &format!("{name} flip seed {seed}"), &r);
        }
        let _ = probe_info(&path);
    }
    eprintln!("{name}: sweep results {:?}", tally.counts);
    for p in &tally.panics {
        eprintln!("PANIC (caught): {p}");
    }
    tally
}

#[test]
fn robustness_sweep() {
    let mut panics = 0;
    for name in SWEEP {
        panics += sweep(name).panics.len();
    }
    // A caught decoder panic is an acceptable result for garbage input; the count is
    // reported so that new ones get noticed.
    eprintln!("robustness sweep: {panics} caught decoder panics");
}
