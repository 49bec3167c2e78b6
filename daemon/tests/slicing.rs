//! Slices (offset/duration) equal the same range of a full decode, at the native rate and
//! resampled; the end of the stream is handled exactly; long files decoded in parallel
//! segments equal a serial decode.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use audiodecode::{load, ChannelMode, DecodeError, DecodedAudio, LoadRequest, Quality};
use common::*;

/// Formats whose slices are checked.
const SLICED: [&str; 6] = ["wav_s16", "flac", "mp3", "ogg", "opus", "m4a_aac"];

/// Largest difference allowed between a lossy slice and the full decode. Lossy decoders
/// restart after a seek, so a slice can differ from a straight-through decode in the last
/// bits until the pre-roll has converged; measured values are printed by the tests.
/// MP3, Vorbis and AAC (without PNS) measured 0 (bit-exact) after the 250 ms pre-roll.
fn tolerance(fx: &Fixture) -> f32 {
    match fx.codec {
        // libopus has not fully converged 250 ms after a reset: measured up to 3.0e-4 at
        // 48 kHz over 40 offsets (3e-7 once resampled to 16 kHz, the differences are high
        // frequency).
        "opus" => 5e-4,
        _ => 1e-4,
    }
}

fn request(
    rate: Option<u32>,
    mode: ChannelMode,
    offset: f64,
    duration: Option<f64>,
) -> LoadRequest {
    LoadRequest {
        sample_rate: rate,
        channels: mode,
        offset,
        duration,
        ..Default::default()
    }
}

/// The range `[start, start + len)` of every plane (clamped to the end).
fn range(full: &DecodedAudio, start: usize, len: Option<usize>) -> Vec<Vec<f32>> {
    full.planes
        .iter()
        .map(|p| {
            let a = start.min(p.len());
            let b = len.map_or(p.len(), |l| (a + l).min(p.len()));
            p[a..b].to_vec()
        })
        .collect()
}

/// Compare a slice with the expected range: exact for lossless, within the tolerance for
/// lossy codecs. Returns the largest difference.
fn compare(what: &str, fx: &Fixture, got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: channels");
    for (c, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: channel {c} length");
    }
    if fx.is_lossless() {
        assert_planes_equal(what, got, want);
        return 0.0;
    }
    let allowed = tolerance(fx);
    let diff = got
        .iter()
        .zip(want)
        .map(|(g, w)| max_abs_diff(g, w))
        .fold(0.0, f32::max);
    assert!(
        diff <= allowed,
        "{what}: slice differs from the full decode by {diff} (allowed {allowed})"
    );
    diff
}

/// Slices at several offsets and lengths, at `rate` (None = native) in `mode`.
fn check_slices(name: &str, rate: Option<u32>, mode: ChannelMode) {
    let fx = fixture(name);
    let full = load_ok(&fx.path, &request(rate, mode, 0.0, None), 1);
    let out_rate = full.sample_rate;
    assert_eq!(out_rate, rate.unwrap_or(fx.rate));
    let mut worst = 0.0f32;
    let cases: [(f64, Option<f64>); 9] = [
        (0.0, Some(1.0)),
        (0.0, Some(0.0123)),
        (0.5, Some(0.75)),
        (1.2345, Some(1.0)),
        (1.2345, None),
        (1.5, Some(0.5)),
        (0.987_654_3, Some(1.111_111)),
        (2.2, None),
        (0.000_1, Some(2.0)),
    ];
    for (offset, duration) in cases {
        let what = format!("{name} @ {rate:?} {mode:?} offset {offset} duration {duration:?}");
        let slice = load_ok(&fx.path, &request(rate, mode, offset, duration), 1);
        assert_eq!(slice.sample_rate, out_rate, "{what}: rate");
        let start = frames_at(offset, out_rate);
        let len = duration.map(|d| frames_at(d, out_rate));
        let want = range(&full, start, len);
        if let Some(len) = len {
            assert_eq!(slice.frames(), len, "{what}: length");
        }
        worst = worst.max(compare(&what, fx, &slice.planes, &want));
    }
    eprintln!("{name} @ {rate:?} {mode:?}: worst slice difference {worst:e}");
}

/// The end of the stream: a slice that runs past it stops there, and one that starts at or
/// after it is `OffsetPastEnd`.
fn check_end(name: &str, rate: Option<u32>, mode: ChannelMode) {
    let fx = fixture(name);
    let full = load_ok(&fx.path, &request(rate, mode, 0.0, None), 1);
    let out_rate = full.sample_rate;
    let total = full.frames();
    // Our own decode's duration (for AAC in MP4 it is the edit list's, which FFmpeg's
    // reference would overstate).
    let seconds = total as f64 / f64::from(out_rate);

    // 0.1 s before the end, asking for 1 s: exactly the tail of the full decode.
    let offset = seconds - 0.1;
    let what = format!("{name} @ {rate:?} near end");
    let tail = load_ok(&fx.path, &request(rate, mode, offset, Some(1.0)), 1);
    let start = frames_at(offset, out_rate);
    assert_eq!(tail.frames(), total - start, "{what}: length");
    assert!(
        (tail.duration() - 0.1).abs() < 0.001,
        "{what}: {} s",
        tail.duration()
    );
    let worst = compare(&what, fx, &tail.planes, &range(&full, start, None));

    // A duration past the end stops at the end.
    let what = format!("{name} @ {rate:?} past end");
    let rest = load_ok(&fx.path, &request(rate, mode, 2.0, Some(5.0)), 1);
    let start = frames_at(2.0, out_rate);
    assert_eq!(rest.frames(), total - start, "{what}: length");
    let worst = worst.max(compare(&what, fx, &rest.planes, &range(&full, start, None)));
    eprintln!("{name} @ {rate:?}: worst end difference {worst:e}");

    // At and after the end.
    for offset in [seconds, seconds + 0.001, seconds + 0.5, 1000.0] {
        for duration in [None, Some(1.0)] {
            match load(&fx.path, &request(rate, mode, offset, duration), 1) {
                Err(e @ DecodeError::OffsetPastEnd { .. }) => assert_names_path(&e, &fx.path),
                other => panic!(
                    "{name} @ {rate:?}: offset {offset} (end {seconds}): expected \
                     OffsetPastEnd, got {other:?}",
                    other = other.map(|a| a.frames())
                ),
            }
        }
    }
}

macro_rules! slice_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let name = stringify!($name);
                assert!(SLICED.contains(&name));
                check_slices(name, None, ChannelMode::Keep);
                check_slices(name, Some(16_000), ChannelMode::Mono);
                check_end(name, None, ChannelMode::Keep);
                check_end(name, Some(16_000), ChannelMode::Mono);
            }
        )*
    };
}

slice_tests!(wav_s16, flac, mp3, ogg, opus, m4a_aac);

/// Matroska/WebM (the audio of video files too): Opus, Vorbis and FLAC.
#[test]
fn matroska_slices() {
    for name in ["webm", "mkv_video", "mkv_flac_video"] {
        check_slices(name, None, ChannelMode::Keep);
        check_slices(name, Some(16_000), ChannelMode::Mono);
        check_end(name, None, ChannelMode::Keep);
    }
}

/// AAC with perceptual noise substitution (ffmpeg's default, kept in mp4_video): the noise
/// bands come from the decoder's random generator, whose state after a seek differs from a
/// decode from the start, so samples differ by about the noise level. The slice must still
/// be the same range: exact length, and the tonal content lines up at lag 0.
#[test]
fn aac_with_pns_slices_line_up() {
    let fx = fixture("mp4_video");
    let full = load_ok(&fx.path, &keep(), 1);
    for (offset, duration) in [(0.1, 0.5), (0.5, 1.0), (1.2345, 1.0), (2.0, 0.75)] {
        let slice = load_ok(
            &fx.path,
            &request(None, ChannelMode::Keep, offset, Some(duration)),
            1,
        );
        let start = frames_at(offset, fx.rate);
        let want = range(&full, start, Some(frames_at(duration, fx.rate)));
        assert_eq!(
            slice.frames(),
            want[0].len(),
            "mp4_video @ {offset}: length"
        );
        let lag = best_lag(&slice.planes, &want, 2048);
        assert_eq!(lag, 0, "mp4_video @ {offset}: slice is shifted");
        for (c, (g, w)) in slice.planes.iter().zip(&want).enumerate() {
            let r = correlation_at(g, w, 0);
            eprintln!(
                "mp4_video (PNS) @ {offset}: channel {c}: correlation {r:.5}, max diff {:e}",
                max_abs_diff(g, w)
            );
            assert!(
                r >= 0.99,
                "mp4_video @ {offset}: channel {c}: correlation {r}"
            );
        }
    }
}

#[test]
fn zero_duration_is_empty_not_an_error() {
    let fx = fixture("flac");
    let audio = load_ok(
        &fx.path,
        &request(None, ChannelMode::Keep, 1.0, Some(0.0)),
        1,
    );
    assert_eq!(audio.frames(), 0);
    assert_eq!(audio.channels(), 2);
}

// Long files: the parallel segment path.

fn long_request(rate: Option<u32>, mode: ChannelMode) -> LoadRequest {
    request(rate, mode, 0.0, None)
}

fn check_parallel_equals_serial(name: &str, rate: Option<u32>, mode: ChannelMode) {
    let fx = long_fixture(name);
    let req = long_request(rate, mode);
    let serial = load_ok(&fx.path, &req, 1);
    let parallel = load_ok(&fx.path, &req, 2);
    let out_rate = rate.unwrap_or(fx.rate);
    let expected = (LONG_SECONDS * f64::from(out_rate)) as usize;
    assert_eq!(
        serial.frames(),
        expected,
        "{name} @ {rate:?}: serial length"
    );
    assert_planes_equal(
        &format!("{name} @ {rate:?} {mode:?}: threads=2 vs threads=1"),
        &parallel.planes,
        &serial.planes,
    );

    // Slices of the long file, serial and split across threads, equal the full range.
    for (offset, duration) in [(73.21, Some(5.0)), (30.5, Some(60.0)), (101.000_7, None)] {
        for threads in [1, 2] {
            let what = format!(
                "{name} @ {rate:?} offset {offset} duration {duration:?} threads {threads}"
            );
            let slice = load_ok(&fx.path, &request(rate, mode, offset, duration), threads);
            let start = frames_at(offset, out_rate);
            let want = range(&serial, start, duration.map(|d| frames_at(d, out_rate)));
            let diff = compare(&what, fx, &slice.planes, &want);
            eprintln!("{what}: difference {diff:e}");
        }
    }
}

#[test]
fn long_flac_parallel_native() {
    check_parallel_equals_serial("long_flac", None, ChannelMode::Keep);
}

#[test]
fn long_flac_parallel_16k_mono() {
    check_parallel_equals_serial("long_flac", Some(16_000), ChannelMode::Mono);
}

#[test]
fn long_mp3_parallel_native() {
    check_parallel_equals_serial("long_mp3", None, ChannelMode::Keep);
}

#[test]
fn long_mp3_parallel_16k_mono() {
    check_parallel_equals_serial("long_mp3", Some(16_000), ChannelMode::Mono);
}

#[test]
fn long_flac_parallel_every_quality() {
    // Segment alignment depends on the resampler's block size, which depends on the preset.
    let fx = long_fixture("long_flac");
    for quality in [Quality::Fast, Quality::Hq, Quality::Vhq] {
        let req = LoadRequest {
            quality,
            ..long_request(Some(22_050), ChannelMode::Mono)
        };
        let serial = load_ok(&fx.path, &req, 1);
        let parallel = load_ok(&fx.path, &req, 3);
        assert_planes_equal(
            &format!("long_flac {quality:?} threads=3"),
            &parallel.planes,
            &serial.planes,
        );
    }
}
