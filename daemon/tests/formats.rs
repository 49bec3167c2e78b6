//! Every supported container/codec decodes to what FFmpeg decodes: same rate and channels,
//! same length (exactly for lossless and MP3, within a codec frame for other lossy codecs),
//! bit-exact samples for lossless formats and correlation ≥ 0.99 for lossy ones.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use audiodecode::{load, probe_info, ChannelMode, LoadRequest};
use common::*;

/// How far apart FFmpeg's and our decode may start.
const MAX_LAG: usize = 2048;

fn check_against_ffmpeg(name: &str) {
    let fx = fixture(name);
    let path = &fx.path;
    let audio = load(
        path,
        &LoadRequest {
            channels: ChannelMode::Keep,
            ..Default::default()
        },
        1,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let reference = reference(path);

    assert_eq!(audio.sample_rate, fx.rate, "{name}: sample rate");
    assert_eq!(reference.rate, fx.rate, "{name}: FFmpeg's sample rate");
    assert_eq!(audio.channels(), fx.channels, "{name}: channels");
    assert_eq!(
        reference.planes.len(),
        fx.channels,
        "{name}: FFmpeg's channels"
    );
    assert!(!audio.is_damaged(), "{name}: reported damaged");

    let (ours, theirs) = (audio.frames() as i64, reference.frames() as i64);
    eprintln!(
        "{name}: {ours} frames, FFmpeg {theirs} (ours - FFmpeg = {})",
        ours - theirs
    );
    match fx.kind {
        Kind::Lossless => {
            assert_eq!(ours, theirs, "{name}: lossless length must equal FFmpeg's");
            assert_planes_equal(name, &audio.planes, &reference.planes);
        }
        Kind::Lossy { frame } => {
            let frame = frame as i64;
            if fx.codec == "mp3" {
                // Gapless: encoder delay and padding from the LAME/Xing header are trimmed.
                assert_eq!(
                    ours, theirs,
                    "{name}: MP3 length must equal FFmpeg's (gapless)"
                );
            } else if fx.container == "matroska" && fx.codec == "opus" {
                // symphonia's Matroska reader does not apply DiscardPadding, so the last
                // Opus frame may come out whole: up to one frame extra, never fewer.
                assert!(
                    (0..=frame).contains(&(ours - theirs)),
                    "{name}: {ours} frames vs FFmpeg's {theirs} (allowed: up to {frame} extra)"
                );
            } else {
                assert!(
                    (ours - theirs).abs() <= frame,
                    "{name}: {ours} frames vs FFmpeg's {theirs} (allowed: ±{frame})"
                );
            }
            let lag = best_lag(&audio.planes, &reference.planes, MAX_LAG);
            for (c, (ours, theirs)) in audio.planes.iter().zip(&reference.planes).enumerate() {
                let r = correlation_at(ours, theirs, lag);
                eprintln!("{name}: channel {c}: correlation {r:.6} at lag {lag}");
                assert!(
                    r >= 0.99,
                    "{name}: channel {c} correlation {r} at lag {lag} (need ≥ 0.99)"
                );
            }
        }
    }

    check_probe_info(name, reference.frames() as u64, audio.frames() as u64);
    check_mono_is_mean(name, &audio.planes);
}

fn check_probe_info(name: &str, ffmpeg_frames: u64, decoded_frames: u64) {
    let fx = fixture(name);
    let info = probe_info(&fx.path).unwrap_or_else(|e| panic!("{name}: probe_info: {e}"));
    eprintln!("{name}: {info:?}");
    assert_eq!(info.path, fx.path, "{name}: info.path");
    assert_eq!(info.codec, fx.codec, "{name}: codec");
    assert_eq!(info.container, fx.container, "{name}: container");
    assert_eq!(info.sample_rate, fx.rate, "{name}: sample_rate");
    assert_eq!(usize::from(info.channels), fx.channels, "{name}: channels");
    match info.frames {
        Some(frames) => {
            let allowed = fx.codec_frame() as u64;
            assert!(
                frames.abs_diff(ffmpeg_frames) <= allowed,
                "{name}: declares {frames} frames, FFmpeg decodes {ffmpeg_frames} \
                 (allowed difference {allowed})"
            );
            // The pipeline plans slices and parallel segments from the declared length, so
            // it must be the length `load` produces (every fixture has an exact header:
            // sample counts, a LAME tag, final granule, or an MP4 edit list).
            assert_eq!(
                frames, decoded_frames,
                "{name}: declared length differs from the decoded length"
            );
            let duration = info.duration.expect("duration with frames");
            assert!(
                (duration - frames as f64 / f64::from(fx.rate)).abs() < 1e-9,
                "{name}: duration {duration} does not match {frames} frames"
            );
        }
        None => {
            // Only Matroska leaves the length open among these fixtures.
            assert_eq!(fx.container, "matroska", "{name}: declares no length");
            assert!(info.duration.is_none(), "{name}: duration without frames");
        }
    }
}

/// `ChannelMode::Mono` is the mean of the kept channels.
fn check_mono_is_mean(name: &str, kept: &[Vec<f32>]) {
    let fx = fixture(name);
    let mono = load_ok(
        &fx.path,
        &LoadRequest {
            channels: ChannelMode::Mono,
            ..Default::default()
        },
        1,
    );
    assert_eq!(mono.channels(), 1, "{name}: mono channels");
    assert_eq!(mono.frames(), kept[0].len(), "{name}: mono length");
    let mean: Vec<f32> = (0..kept[0].len())
        .map(|t| kept.iter().map(|p| p[t]).sum::<f32>() / kept.len() as f32)
        .collect();
    let diff = max_abs_diff(&mono.planes[0], &mean);
    assert!(
        diff <= 1e-6,
        "{name}: mono differs from the channel mean by {diff}"
    );
}

macro_rules! format_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_against_ffmpeg(stringify!($name));
            }
        )*

        #[test]
        fn every_fixture_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for name in short_fixture_names() {
                assert!(tested.contains(&name), "fixture {name} has no format test");
            }
        }
    };
}

format_tests!(
    wav_u8,
    wav_s16,
    wav_s24,
    wav_s32,
    wav_f32,
    wav_f64,
    wav_ext4,
    flac,
    flac_8k,
    mp3,
    mp3_22k,
    ogg,
    ogg_22k,
    opus,
    webm,
    m4a_aac,
    m4a_alac,
    aiff,
    caf,
    mp4_video,
    mkv_video,
    mkv_flac_video,
    speech_mp3,
    speech_ogg,
    misnamed_flac,
    noext_wav,
);

#[test]
fn wav_with_four_channels_is_wave_format_extensible() {
    let bytes = std::fs::read(&fixture("wav_ext4").path).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    let tag = u16::from_le_bytes([bytes[20], bytes[21]]);
    assert_eq!(tag, 0xFFFE, "format tag of the 4-channel WAV");
    assert_eq!(
        u16::from_le_bytes([bytes[22], bytes[23]]),
        4,
        "channel count"
    );
}

#[test]
fn detection_is_by_content_not_extension() {
    // A FLAC named .mp3 and a WAV with no extension decode like the originals.
    for (copy, original) in [("misnamed_flac", "flac"), ("noext_wav", "wav_s16")] {
        let (copy, original) = (fixture(copy), fixture(original));
        assert_eq!(
            std::fs::read(&copy.path).unwrap(),
            std::fs::read(&original.path).unwrap()
        );
        let a = load_ok(&copy.path, &keep(), 1);
        let b = load_ok(&original.path, &keep(), 1);
        assert_eq!(a.sample_rate, b.sample_rate);
        assert_planes_equal(copy.name, &a.planes, &b.planes);
        let info = probe_info(&copy.path).unwrap();
        assert_eq!(info.codec, original.codec);
        assert_eq!(info.container, original.container);
    }
}

#[test]
fn fixtures_cover_the_required_rates_and_layouts() {
    let names = short_fixture_names();
    for rate in [8000, 22050, 44100, 48000] {
        assert!(
            names.iter().any(|n| fixture(n).rate == rate),
            "no fixture at {rate} Hz"
        );
    }
    for channels in [1, 2, 4] {
        assert!(
            names.iter().any(|n| fixture(n).channels == channels),
            "no fixture with {channels} channels"
        );
    }
}
