//! Formats of real datasets and other tools' files: the ones symphonia reads (µ-law/A-law/
//! ADPCM WAV, AIFC variants) and the ones it has no reader or decoder for, which go
//! through the FFmpeg fallback (SPHERE, RF64, MP3-in-WAV, AC-3, E-AC-3, WMA, WavPack, TTA,
//! Speex, …). Each decodes to what FFmpeg decodes, with the same slicing and downmix
//! semantics as every other file, and names its backend; with FFmpeg hidden the fallback
//! formats fail with a message saying what the file is and that FFmpeg reads it.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use audiodecode::{load, probe_info, Backend, LoadRequest};
use common::*;

/// One generated file: how it is made, and which backend must read it.
struct Case {
    file: &'static str,
    tool: Tool,
    args: &'static [&'static str],
    backend: Backend,
    /// Decoding is deterministic and FFmpeg is the reference, so fallback output is
    /// bit-exact; symphonia's own ADPCM decoders may round differently.
    exact: bool,
}

enum Tool {
    /// ffmpeg encoding the stereo test signal (3 s, 44.1 kHz) with `args`.
    Ffmpeg,
    /// sox synthesising a 3 s sine with `args` (output options before the file name).
    Sox,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // symphonia's own readers.
    Case { file: "ulaw.wav", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_mulaw"], backend: Backend::Symphonia, exact: true },
    Case { file: "alaw.wav", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_alaw"], backend: Backend::Symphonia, exact: true },
    Case { file: "ima-adpcm.wav", tool: Tool::Ffmpeg, args: &["-c:a", "adpcm_ima_wav"], backend: Backend::Symphonia, exact: false },
    Case { file: "ms-adpcm.wav", tool: Tool::Ffmpeg, args: &["-c:a", "adpcm_ms"], backend: Backend::Symphonia, exact: false },
    Case { file: "sowt.aifc", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_s16le"], backend: Backend::Symphonia, exact: true },
    Case { file: "fl32.aifc", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_f32be"], backend: Backend::Symphonia, exact: true },
    Case { file: "ulaw.aifc", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_mulaw"], backend: Backend::Symphonia, exact: true },
    Case { file: "s8.aifc", tool: Tool::Sox, args: &["-r", "16000", "-b", "8", "-e", "signed"], backend: Backend::Symphonia, exact: true },
    // Our own readers for containers symphonia lacks (`decode/containers`).
    Case { file: "pcm16.sph", tool: Tool::Sox, args: &["-r", "16000", "-b", "16"], backend: Backend::Symphonia, exact: true },
    Case { file: "be16.sph", tool: Tool::Sox, args: &["-r", "16000", "-b", "16", "-B"], backend: Backend::Symphonia, exact: true },
    Case { file: "ulaw.sph", tool: Tool::Sox, args: &["-r", "8000", "-e", "u-law"], backend: Backend::Symphonia, exact: true },
    Case { file: "alaw.sph", tool: Tool::Sox, args: &["-r", "8000", "-e", "a-law"], backend: Backend::Symphonia, exact: true },
    Case { file: "stereo.sph", tool: Tool::Sox, args: &["-r", "16000", "-c", "2", "-b", "16"], backend: Backend::Symphonia, exact: true },
    Case { file: "rf64.wav", tool: Tool::Ffmpeg, args: &["-rf64", "always", "-c:a", "pcm_s16le"], backend: Backend::Symphonia, exact: true },
    Case { file: "rf64-s24.wav", tool: Tool::Ffmpeg, args: &["-rf64", "always", "-c:a", "pcm_s24le"], backend: Backend::Symphonia, exact: true },
    Case { file: "rf64-f32.wav", tool: Tool::Ffmpeg, args: &["-rf64", "always", "-c:a", "pcm_f32le"], backend: Backend::Symphonia, exact: true },
    Case { file: "rf64-ulaw.wav", tool: Tool::Ffmpeg, args: &["-rf64", "always", "-c:a", "pcm_mulaw"], backend: Backend::Symphonia, exact: true },
    Case { file: "mp3-in.wav", tool: Tool::Ffmpeg, args: &["-c:a", "libmp3lame"], backend: Backend::Symphonia, exact: false },
    Case { file: "ima4.aifc", tool: Tool::Ffmpeg, args: &["-c:a", "adpcm_ima_qt"], backend: Backend::Symphonia, exact: false },
    // The FFmpeg fallback.
    Case { file: "rf64-adpcm.wav", tool: Tool::Ffmpeg, args: &["-rf64", "always", "-c:a", "adpcm_ms"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "w64.w64", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_s24le"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "ac3.ac3", tool: Tool::Ffmpeg, args: &["-c:a", "ac3"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "eac3.eac3", tool: Tool::Ffmpeg, args: &["-c:a", "eac3"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "wma.wma", tool: Tool::Ffmpeg, args: &["-c:a", "wmav2"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "wavpack.wv", tool: Tool::Ffmpeg, args: &["-c:a", "wavpack"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "tta.tta", tool: Tool::Ffmpeg, args: &["-c:a", "tta"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "speex.spx", tool: Tool::Ffmpeg, args: &["-c:a", "libspeex", "-ar", "16000", "-ac", "1"], backend: Backend::Ffmpeg, exact: true },
    Case { file: "sun.au", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_s16be"], backend: Backend::Ffmpeg, exact: true },
    // Known formats under the names real recorders give them: a field recorder's Broadcast
    // Wave, a browser's saved WebM audio.
    Case { file: "field.bwf", tool: Tool::Ffmpeg, args: &["-c:a", "pcm_s24le", "-write_bext", "1", "-f", "wav"], backend: Backend::Symphonia, exact: true },
    Case { file: "browser.weba", tool: Tool::Ffmpeg, args: &["-c:a", "libvorbis", "-f", "webm"], backend: Backend::Symphonia, exact: false },
];

/// The generated files, made once per test process.
fn case_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_tool("ffmpeg");
        require_tool("sox");
        let dir = fixture_dir().join("realworld");
        std::fs::create_dir_all(&dir).unwrap();
        for case in CASES {
            make(case, &dir.join(case.file));
        }
        dir
    })
}

fn make(case: &Case, out: &Path) {
    let mut cmd = match case.tool {
        Tool::Ffmpeg => {
            let mut c = Command::new("ffmpeg");
            c.args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
                .arg(STEREO_SIGNAL)
                .args(case.args)
                .arg(out);
            c
        }
        Tool::Sox => {
            let mut c = Command::new("sox");
            c.args(["-n"]).args(case.args).arg(out).args(SOX_SIGNAL);
            c
        }
    };
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?} failed");
}

const STEREO_SIGNAL: &str = "aevalsrc=exprs=0.5*sin(2*PI*(200*t+250*t*t))+0.05*(2*random(0)-1)\
    |0.4*sin(2*PI*(700*t-80*t*t))+0.05*(2*random(1)-1):s=44100:d=3";
const SOX_SIGNAL: &[&str] = &[
    "synth", "3", "sine", "300-3000", "sine", "440", "vol", "0.5",
];

/// Runs `ffmpeg -v error -nostdin -y ARGS OUT`, which must succeed.
fn ffmpeg_to(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg {args:?} {}", out.display());
}

fn path_of(case: &Case) -> PathBuf {
    case_dir().join(case.file)
}

#[test]
fn each_format_decodes_as_ffmpeg_does_through_the_named_backend() {
    for case in CASES {
        let path = path_of(case);
        let info = probe_info(&path).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_eq!(info.backend, case.backend, "{}: backend", case.file);
        let audio = load_ok(&path, &keep(), 1);
        let want = reference(&path);
        assert!(!audio.is_damaged(), "{}: reported damaged", case.file);
        assert_eq!(audio.sample_rate, want.rate, "{}: rate", case.file);
        assert_eq!(
            audio.channels(),
            want.planes.len(),
            "{}: channels",
            case.file
        );
        if case.exact {
            assert_planes_equal(case.file, &audio.planes, &want.planes);
        } else {
            assert_eq!(audio.frames(), want.frames(), "{}: length", case.file);
            for (got, want) in audio.planes.iter().zip(&want.planes) {
                let corr = correlation_at(got, want, 0);
                assert!(corr > 0.999, "{}: correlation {corr}", case.file);
            }
        }
    }
}

#[test]
fn fallback_slices_downmix_and_resample_like_native_files() {
    for file in ["wavpack.wv", "stereo.sph", "ac3.ac3"] {
        let path = case_dir().join(file);
        let full = load_ok(&path, &keep(), 1);
        let rate = full.sample_rate;
        // A slice equals the same range of the full decode.
        let (offset, duration) = (0.75, 1.5);
        let slice = load_ok(
            &path,
            &LoadRequest {
                offset,
                duration: Some(duration),
                ..keep()
            },
            2,
        );
        let from = frames_at(offset, rate);
        let want: Vec<Vec<f32>> = full
            .planes
            .iter()
            .map(|p| p[from..from + frames_at(duration, rate)].to_vec())
            .collect();
        if file == "ac3.ac3" {
            // A lossy decoder restarted at a seek point converges within a frame.
            let corr = correlation_at(&slice.planes[0], &want[0], 0);
            assert!(corr > 0.99, "{file}: slice correlation {corr}");
            assert_eq!(slice.frames(), want[0].len(), "{file}: slice length");
        } else {
            assert_planes_equal(&format!("{file} slice"), &slice.planes, &want);
        }
        // Mono is the mean of the channels, as for every other file.
        let mono = load_ok(&path, &mono_at(None), 1);
        let n = full.planes.len() as f32;
        let mean: Vec<f32> = (0..full.frames())
            .map(|t| full.planes.iter().map(|p| p[t]).sum::<f32>() / n)
            .collect();
        assert!(max_abs_diff(&mono.planes[0], &mean) < 1e-6, "{file}: mono");
        // Resampling happens after decoding, with our resampler.
        let at8k = load_ok(&path, &mono_at(Some(8000)), 1);
        let expect = resample_planes(&mono.planes, rate, 8000, audiodecode::Quality::Hq);
        assert_planes_equal(&format!("{file} at 8 kHz"), &at8k.planes, &expect);
    }
}

#[test]
fn sphere_and_rf64_slice_and_cut_into_segments_like_wav() {
    for file in ["stereo.sph", "rf64-s24.wav", "alaw.sph", "ima4.aifc"] {
        let path = case_dir().join(file);
        let info = probe_info(&path).unwrap();
        assert!(
            info.frames.is_some(),
            "{file}: the header states the length"
        );
        let full = load_ok(&path, &keep(), 1);
        assert_eq!(Some(full.frames() as u64), info.frames, "{file}: length");
        let rate = full.sample_rate;
        let (offset, duration) = (0.6, 1.7);
        let from = frames_at(offset, rate);
        let want: Vec<Vec<f32>> = full
            .planes
            .iter()
            .map(|p| p[from..from + frames_at(duration, rate)].to_vec())
            .collect();
        // Two threads: the slice is cut into parallel segments, stitched back exactly.
        let slice = LoadRequest {
            offset,
            duration: Some(duration),
            ..keep()
        };
        assert_planes_equal(file, &load_ok(&path, &slice, 2).planes, &want);
    }
}

#[test]
fn bw64_reads_as_rf64() {
    let dir = scratch_dir("bw64");
    let mut bytes = std::fs::read(case_dir().join("rf64.wav")).unwrap();
    bytes[..4].copy_from_slice(b"BW64");
    let bw64 = dir.path().join("bw64.wav");
    std::fs::write(&bw64, &bytes).unwrap();
    let want = load_ok(&case_dir().join("rf64.wav"), &keep(), 1);
    let got = load_ok(&bw64, &keep(), 1);
    assert_eq!(probe_info(&bw64).unwrap().backend, Backend::Symphonia);
    assert_planes_equal("bw64", &got.planes, &want.planes);
}

#[test]
fn cut_sphere_and_rf64_keep_what_they_hold_and_strict_refuses_them() {
    let dir = scratch_dir("cut-native");
    for file in ["pcm16.sph", "ulaw.sph", "rf64-f32.wav"] {
        let bytes = std::fs::read(case_dir().join(file)).unwrap();
        let cut = dir.path().join(file);
        std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
        let strict = load(&cut, &keep(), 1).unwrap_err();
        assert_eq!(strict.kind(), "truncated", "{file}: {strict}");
        assert_names_path(&strict, &cut);
        let lenient = LoadRequest {
            lenient: true,
            ..keep()
        };
        let got = load_ok(&cut, &lenient, 1);
        let full = load_ok(&case_dir().join(file), &keep(), 1);
        assert!(got.is_damaged(), "{file}: not marked damaged");
        assert!(got.frames() > full.frames() / 2 && got.frames() < full.frames());
        let prefix: Vec<Vec<f32>> = full
            .planes
            .iter()
            .map(|p| p[..got.frames()].to_vec())
            .collect();
        assert_planes_equal(file, &got.planes, &prefix);
    }
}

#[test]
fn sphere_payloads_that_cannot_be_read_are_named() {
    // A Shorten-coded header over bytes that are no Shorten stream, and a coding no reader
    // knows: both fail with the file and the reason, with FFmpeg installed or not.
    let dir = scratch_dir("sphere-unreadable");
    let noise: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (name, coding, reason) in [
        ("shorten.sph", "pcm,embedded-shorten-v2.00", "Shorten"),
        ("unknown.sph", "adpcm-xyz", "adpcm-xyz"),
    ] {
        let mut file = format!(
            "NIST_1A\n   1024\nsample_rate -i 16000\nchannel_count -i 1\nsample_n_bytes -i 2\n\
             sample_coding -s{} {coding}\nend_head\n",
            coding.len()
        )
        .into_bytes();
        file.resize(1024, b' ');
        file.extend_from_slice(&noise);
        let path = dir.path().join(name);
        std::fs::write(&path, &file).unwrap();
        for ffmpeg in ["installed", "off"] {
            let out = dir.path().join("out.wav");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiodecode"));
            cmd.args(["decode", "-q"]).arg(&path).arg("-o").arg(&out);
            cmd.env_remove("AUDIODECODE_FFMPEG");
            if ffmpeg == "off" {
                cmd.env("AUDIODECODE_FFMPEG", "off");
            }
            let run = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(
                !run.status.success(),
                "{name} ({ffmpeg}): decoded noise as audio"
            );
            assert!(
                stderr.contains(&path.display().to_string())
                    && stderr.to_lowercase().contains(&reason.to_lowercase()),
                "{name} ({ffmpeg}): {stderr}"
            );
            assert!(!out.exists(), "{name}: output left behind");
        }
    }
}

#[test]
fn offset_past_the_end_of_a_fallback_file_is_a_typed_error() {
    let path = case_dir().join("wavpack.wv");
    let req = LoadRequest {
        offset: 10.0,
        ..keep()
    };
    let err = load(&path, &req, 1).unwrap_err();
    assert_eq!(err.kind(), "offset_past_end", "{err}");
    assert_names_path(&err, &path);
}

#[test]
fn without_ffmpeg_the_error_names_the_format_and_what_reads_it() {
    let dir = scratch_dir("no-ffmpeg");
    for case in CASES.iter().filter(|c| c.backend == Backend::Ffmpeg) {
        let path = path_of(case);
        let out = dir.path().join("out.wav");
        let run = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
            .args(["decode", "-q"])
            .arg(&path)
            .arg("-o")
            .arg(&out)
            .env("AUDIODECODE_FFMPEG", "off")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success(),
            "{}: decoded without FFmpeg",
            case.file
        );
        assert!(
            stderr.contains(&path.display().to_string())
                && stderr.contains("FFmpeg")
                && stderr.contains("install"),
            "{}: {stderr}",
            case.file
        );
        assert!(!out.exists(), "{}: output left behind", case.file);
    }
    // The formats symphonia reads need no FFmpeg.
    for case in CASES.iter().filter(|c| c.backend == Backend::Symphonia) {
        let run = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
            .arg("info")
            .arg(path_of(case))
            .env("AUDIODECODE_FFMPEG", "off")
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", case.file);
    }
}

#[test]
fn info_says_which_backend_reads_a_file() {
    let files = [case_dir().join("ulaw.wav"), case_dir().join("wma.wma")];
    let run = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
        .args(["info", "--json"])
        .args(&files)
        .output()
        .unwrap();
    assert!(run.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["backend"], "symphonia");
    assert_eq!(lines[1]["backend"], "ffmpeg");
    assert_eq!(lines[1]["codec"], "wmav2");
}

/// An MP4 box: big-endian size, type, body.
fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// `moov/udta/meta/ilst/----` carrying an iTunes gapless tag, as iTunes writes it.
fn itunes_smpb_udta(delay: u32, padding: u32, frames: u64) -> Vec<u8> {
    let text = format!(" 00000000 {delay:08X} {padding:08X} {frames:016X} 00000000 00000000");
    let mut mean = vec![0u8; 4];
    mean.extend_from_slice(b"com.apple.iTunes");
    let mut name = vec![0u8; 4];
    name.extend_from_slice(b"iTunSMPB");
    let mut data = vec![0, 0, 0, 1, 0, 0, 0, 0];
    data.extend_from_slice(text.as_bytes());
    let item = [
        mp4_box(b"mean", &mean),
        mp4_box(b"name", &name),
        mp4_box(b"data", &data),
    ]
    .concat();
    let ilst = mp4_box(b"ilst", &mp4_box(b"----", &item));
    let mut meta = vec![0u8; 4]; // version and flags: the ISO full-box `meta`
    meta.extend_from_slice(&mp4_box(b"hdlr", &[0; 25]));
    meta.extend_from_slice(&ilst);
    mp4_box(b"udta", &mp4_box(b"meta", &meta))
}

#[test]
fn itunes_gapless_tag_trims_priming_and_padding_like_an_edit_list() {
    let dir = scratch_dir("itunsmpb");
    let plain = dir.path().join("no-edit-list.m4a");
    // No edit list, moov at the end (FFmpeg's default), so a box can be appended to it.
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.5*sin(2*PI*(200*t+250*t*t)):s=44100:d=1",
            "-c:a",
            "aac",
            "-use_editlist",
            "0",
        ],
        &plain,
    );
    let untrimmed = load_ok(&plain, &keep(), 1);
    let (delay, frames) = (1024usize, 44_100usize);
    assert!(
        untrimmed.frames() >= delay + frames,
        "{}",
        untrimmed.frames()
    );

    let mut bytes = std::fs::read(&plain).unwrap();
    let moov = bytes.windows(4).rposition(|w| w == b"moov").unwrap() - 4;
    let size = u32::from_be_bytes(bytes[moov..moov + 4].try_into().unwrap()) as usize;
    assert_eq!(moov + size, bytes.len(), "moov is the last box");
    let udta = itunes_smpb_udta(delay as u32, 0, frames as u64);
    bytes[moov..moov + 4].copy_from_slice(&((size + udta.len()) as u32).to_be_bytes());
    bytes.extend_from_slice(&udta);
    let tagged = dir.path().join("itunsmpb.m4a");
    std::fs::write(&tagged, &bytes).unwrap();

    let info = probe_info(&tagged).unwrap();
    assert_eq!(info.frames, Some(frames as u64));
    let got = load_ok(&tagged, &keep(), 1);
    assert_eq!(got.frames(), frames);
    assert_planes_equal(
        "iTunSMPB trim",
        &got.planes,
        &[untrimmed.planes[0][delay..delay + frames].to_vec()],
    );
}

#[test]
fn fragmented_mp4_decodes_whole_and_slices() {
    // `empty_moov`: the moov declares no samples; the audio is all in fragments (DASH,
    // browser recordings). A declared length of 0 once made every offset "past the end".
    let dir = scratch_dir("fragmented");
    let path = dir.path().join("fragmented.m4a");
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            STEREO_SIGNAL,
            "-c:a",
            "aac",
            "-movflags",
            "+frag_keyframe+empty_moov",
            "-frag_duration",
            "1000000",
        ],
        &path,
    );
    let full = load_ok(&path, &keep(), 1);
    assert_eq!(full.frames(), reference(&path).frames(), "length");
    let slice = load_ok(
        &path,
        &LoadRequest {
            offset: 1.0,
            duration: Some(1.0),
            ..keep()
        },
        1,
    );
    assert_eq!(slice.frames(), 44_100);
    let corr = correlation_at(&slice.planes[0], &full.planes[0][44_100..88_200], 0);
    assert!(corr > 0.99, "slice correlation {corr}");
}

/// FFmpeg's `-ac 1` downmix of a file, as one plane.
fn ffmpeg_mono(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-ac", "1", "-f", "f32le", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn itu_downmix_follows_bs775_and_the_mean_stays_the_default() {
    let dir = scratch_dir("downmix");
    let wav = dir.path().join("five-one.wav");
    // Six different signals on FL FR FC LFE SL SR.
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=exprs=0.5*sin(2*PI*220*t)|0.4*sin(2*PI*330*t)|0.6*sin(2*PI*440*t)\
             |0.3*(2*random(0)-1)|0.2*sin(2*PI*550*t)|0.25*sin(2*PI*660*t):s=48000:d=2:c=5.1",
            "-c:a",
            "pcm_s16le",
        ],
        &wav,
    );
    let ac3 = dir.path().join("five-one.ac3");
    let wav_arg = wav.to_string_lossy();
    ffmpeg_to(&["-i", &wav_arg, "-c:a", "ac3"], &ac3);
    let itu = LoadRequest {
        channels: audiodecode::ChannelMode::Itu,
        ..Default::default()
    };
    // FFmpeg's matrix has the BS.775 weights (L, R 1/√2; C 1; Ls, Rs 1/2; LFE 0) without
    // normalising them; ours sum to 1.
    let weight_sum = 2.0 * std::f32::consts::FRAC_1_SQRT_2 + 1.0 + 2.0 * 0.5;
    for path in [&wav, &ac3] {
        let got = load_ok(path, &itu, 1);
        let want: Vec<f32> = ffmpeg_mono(path).iter().map(|x| x / weight_sum).collect();
        assert_eq!(got.frames(), want.len());
        let diff = max_abs_diff(&got.planes[0], &want);
        assert!(
            diff < 1e-5,
            "{}: ITU downmix differs by {diff}",
            path.display()
        );
        // The mean (the default) weighs all six alike, LFE included.
        let mean = load_ok(path, &mono_at(None), 1);
        let corr = correlation_at(&mean.planes[0], &got.planes[0], 0);
        assert!(
            corr < 0.99,
            "{}: mean and ITU alike ({corr})",
            path.display()
        );
    }
    // For stereo the two conventions are the same, sample for sample.
    let stereo = case_dir().join("ulaw.wav");
    let a = load_ok(&stereo, &itu, 1);
    let b = load_ok(&stereo, &mono_at(None), 1);
    assert_planes_equal("stereo ITU vs mean", &a.planes, &b.planes);
}

/// Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, over the page with
/// its checksum field zeroed.
fn ogg_crc(page: &[u8]) -> u32 {
    page.iter().fold(0u32, |crc, &b| {
        (0..8).fold(crc ^ (u32::from(b) << 24), |c, _| {
            if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            }
        })
    })
}

#[test]
fn opus_pre_skip_longer_than_a_packet_is_dropped_whole() {
    // An encoder may write a pre-skip of up to 65,535 frames (1.37 s); the Opus decoder
    // drops it from the first packet only. Make one by rewriting a generated file's header.
    let dir = scratch_dir("preskip");
    let plain = dir.path().join("plain.opus");
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            STEREO_SIGNAL,
            "-c:a",
            "libopus",
            "-ar",
            "48000",
        ],
        &plain,
    );
    let mut bytes = std::fs::read(&plain).unwrap();
    let segments = usize::from(bytes[26]);
    let body = 27 + segments;
    let page_len = body
        + bytes[27..body]
            .iter()
            .map(|&s| usize::from(s))
            .sum::<usize>();
    assert_eq!(&bytes[body..body + 8], b"OpusHead");
    let pre_skip: u16 = 20_000;
    bytes[body + 10..body + 12].copy_from_slice(&pre_skip.to_le_bytes());
    bytes[22..26].fill(0);
    let crc = ogg_crc(&bytes[..page_len]);
    bytes[22..26].copy_from_slice(&crc.to_le_bytes());
    let path = dir.path().join("long-pre-skip.opus");
    std::fs::write(&path, &bytes).unwrap();

    let full = load_ok(&path, &keep(), 1);
    let want = reference(&path);
    assert_eq!(full.frames(), want.frames(), "length against FFmpeg");
    for (got, want) in full.planes.iter().zip(&want.planes) {
        let corr = correlation_at(got, want, 0);
        assert!(corr > 0.99, "content against FFmpeg: {corr}");
    }
    let slice = load_ok(
        &path,
        &LoadRequest {
            offset: 0.5,
            duration: Some(1.0),
            ..keep()
        },
        1,
    );
    assert_eq!(slice.frames(), 48_000);
    let corr = correlation_at(&slice.planes[0], &full.planes[0][24_000..72_000], 0);
    assert!(corr > 0.99, "slice against the full decode: {corr}");
}

#[test]
fn vbr_mp3_without_a_xing_header_decodes_in_parallel_like_serially() {
    // MPEG-2 Layer III, VBR, no Xing/VBRI header: symphonia estimates the length from the
    // first frame's bitrate, which once placed parallel cuts past the real end ("offset
    // ... is past the end"). Quiet then loud content makes the bitrate vary a lot; loud
    // then quiet makes the estimate short, and symphonia trimmed everything past it (a
    // real file lost its last 0.19 s that way, silently).
    let dir = scratch_dir("vbr-no-xing");
    let quiet_then_loud = "aevalsrc=if(lt(t\\,30)\\,0.001\\,0.5)*sin(2*PI*(200*t+50*t*t))+if(lt(t\\,30)\\,0\\,0.2*(2*random(0)-1)):s=22050:d=90";
    let loud_then_quiet = "aevalsrc=if(lt(t\\,20)\\,0.5\\,0.001)*sin(2*PI*(200*t+50*t*t))+if(lt(t\\,20)\\,0.3*(2*random(0)-1)\\,0):s=22050:d=60";
    for (name, signal) in [
        ("quiet-loud", quiet_then_loud),
        ("loud-quiet", loud_then_quiet),
    ] {
        let path = dir.path().join(format!("{name}.mp3"));
        ffmpeg_to(
            &[
                "-f",
                "lavfi",
                "-i",
                signal,
                "-c:a",
                "libmp3lame",
                "-q:a",
                "4",
                "-write_xing",
                "0",
            ],
            &path,
        );
        let serial = load_ok(&path, &mono_at(Some(16_000)), 1);
        let parallel = load_ok(&path, &mono_at(Some(16_000)), 4);
        assert_planes_equal(name, &parallel.planes, &serial.planes);
        decoded_whole_like_ffmpeg(name, &path, 4);
    }
}

/// A directory of every format the decoders read is scanned whole: none is skipped for an
/// extension the scan does not know (SPHERE corpora, WavPack, WMA, … once were).
#[test]
fn a_directory_scan_finds_every_format_the_decoders_read() {
    for case in CASES {
        assert!(path_of(case).exists(), "{} was not made", case.file);
    }
    let dataset = audiodecode_protocol::Dataset::Directory {
        path: case_dir().display().to_string(),
    };
    let resolved = audiodecode::feed::manifest::resolve(&dataset).expect("the case directory");
    let found: std::collections::HashSet<String> = resolved
        .items
        .iter()
        .filter_map(|item| Path::new(&item.path).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for case in CASES {
        assert!(
            found.contains(case.file),
            "{}: skipped by the scan",
            case.file
        );
    }
}

/// `path` decoded whole (all channels, on `threads`), undamaged and as long as FFmpeg's
/// decode within one MPEG audio frame.
fn decoded_whole_like_ffmpeg(name: &str, path: &Path, threads: usize) -> audiodecode::DecodedAudio {
    let ours = load(path, &keep(), threads).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = reference(path);
    assert!(!ours.is_damaged(), "{name}: reported damaged");
    assert_eq!(ours.channels(), want.planes.len(), "{name}: channels");
    let diff = ours.frames() as i64 - want.frames() as i64;
    assert!(
        diff.abs() <= 1152,
        "{name}: {} frames against FFmpeg's {}",
        ours.frames(),
        want.frames()
    );
    ours
}

/// The last half second of `audio` (at `rate`) holds a tone of `freq` Hz (amplitude 1/8):
/// the last part of a joined file is there.
fn assert_ends_with_tone(name: &str, audio: &audiodecode::DecodedAudio, rate: u32, freq: f64) {
    let tail = &audio.planes[0][audio.frames() - rate as usize / 2..];
    let amplitude = goertzel_amplitude(tail, rate, freq);
    assert!(
        amplitude > 0.1,
        "{name}: the end is not the last part ({amplitude})"
    );
}

/// Sets a little-endian u32 at `at`.
fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Byte offset of the size field of the first chunk `id` of a RIFF file.
fn chunk_size_at(bytes: &[u8], id: &[u8; 4]) -> usize {
    let mut at = 12;
    while &bytes[at..at + 4] != id {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + size + (size & 1);
    }
    at + 4
}

/// The stereo test signal in `codec` as a finished `format` file in `dir`, and the same
/// samples as FFmpeg writes them to a pipe (it cannot go back to write the sizes).
fn finished_and_piped(dir: &tempfile::TempDir, codec: &str, format: &str) -> (PathBuf, Vec<u8>) {
    let finished = dir.path().join(format!("{codec}.{format}"));
    ffmpeg_to(
        &["-f", "lavfi", "-i", STEREO_SIGNAL, "-c:a", codec],
        &finished,
    );
    let piped = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(&finished)
        .args(["-c:a", codec, "-f", format, "-"])
        .output()
        .unwrap();
    assert!(piped.status.success(), "{codec} in {format} to a pipe");
    (finished, piped.stdout)
}

/// Note [Unfinished WAV headers]: a WAV written to a pipe (FFmpeg leaves 0xFFFFFFFF sizes)
/// and one whose writer was killed before closing it (sizes of 0) hold their whole
/// recording: once the first was "truncated" (refused by strict decoding) and the second
/// "contains no audio samples".
#[test]
fn wav_headers_never_finished_read_to_the_end_of_the_file() {
    let dir = scratch_dir("unfinished-wav");
    for codec in ["pcm_s16le", "pcm_f32le", "pcm_s24le"] {
        let (finished, piped) = finished_and_piped(&dir, codec, "wav");
        let data = chunk_size_at(&piped, b"data");
        assert_eq!(&piped[data..data + 4], &[0xff; 4], "not a piped WAV");
        let mut killed = std::fs::read(&finished).unwrap();
        let data_size = chunk_size_at(&killed, b"data");
        put_u32(&mut killed, 4, 0);
        put_u32(&mut killed, data_size, 0);
        for (name, bytes) in [("piped", &piped), ("killed", &killed)] {
            let path = dir.path().join(format!("{codec}-{name}.wav"));
            std::fs::write(&path, bytes).unwrap();
            reads_like_the_finished_file(&format!("{codec} {name}"), &path, &finished);
        }
    }
}

/// A file read whole, undamaged and sample for sample as `finished` (the same recording with
/// a complete header, 3 s at 44.1 kHz): its length, a strict decode, parallel segments and
/// a slice.
fn reads_like_the_finished_file(what: &str, path: &Path, finished: &Path) {
    let want = load_ok(finished, &keep(), 1);
    let info = probe_info(path).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(info.frames, Some(want.frames() as u64), "{what}: length");
    let strict = load_ok(path, &keep(), 1);
    assert!(!strict.is_damaged(), "{what}: reported damaged");
    assert_planes_equal(what, &strict.planes, &want.planes);
    // The length is known, so a long decode may be cut into parallel segments.
    let parallel = load_ok(path, &mono_at(Some(16_000)), 4);
    let serial = load_ok(finished, &mono_at(Some(16_000)), 1);
    assert_planes_equal(what, &parallel.planes, &serial.planes);
    let slice = load_ok(
        path,
        &LoadRequest {
            offset: 1.0,
            duration: Some(0.5),
            ..keep()
        },
        1,
    );
    assert_planes_equal(
        what,
        &slice.planes,
        &want
            .planes
            .iter()
            .map(|p| p[44_100..66_150].to_vec())
            .collect::<Vec<_>>(),
    );
}

/// AIFF written to a pipe (`ffmpeg ... -f aiff -`: the `SSND` size and `COMM` frame count
/// left 0), which FFmpeg itself cannot read back: once "contains no audio samples".
#[test]
fn aiff_written_to_a_pipe_reads_to_the_end_of_the_file() {
    let dir = scratch_dir("piped-aiff");
    for codec in ["pcm_s16be", "pcm_s24be", "pcm_f32be"] {
        let (finished, piped) = finished_and_piped(&dir, codec, "aiff");
        let ssnd = 4 + piped.windows(4).position(|w| w == b"SSND").unwrap();
        assert_eq!(&piped[ssnd..ssnd + 4], &[0; 4], "not a piped AIFF");
        let path = dir.path().join(format!("{codec}-piped.aiff"));
        std::fs::write(&path, &piped).unwrap();
        reads_like_the_finished_file(&format!("{codec} piped AIFF"), &path, &finished);
    }
}

/// Note [Chunks without their pad byte]: an odd-sized chunk before `data` written without
/// its pad byte (FFmpeg, sox and libsndfile refuse such a file: no data chunk).
#[test]
fn a_wav_chunk_missing_its_pad_byte_does_not_hide_the_samples() {
    let dir = scratch_dir("unpadded-wav");
    for codec in ["pcm_s16le", "pcm_s24le"] {
        let finished = dir.path().join(format!("{codec}.wav"));
        ffmpeg_to(
            &["-f", "lavfi", "-i", STEREO_SIGNAL, "-c:a", codec],
            &finished,
        );
        let mut bytes = std::fs::read(&finished).unwrap();
        let data = chunk_size_at(&bytes, b"data") - 4;
        let mut list = b"LIST".to_vec();
        let info = b"INFOINAM\x07\0\0\0a take!";
        list.extend_from_slice(&(info.len() as u32).to_le_bytes());
        list.extend_from_slice(info);
        assert_eq!(info.len() % 2, 1, "the chunk must be odd-sized");
        bytes.splice(data..data, list.iter().copied());
        let riff_size = bytes.len() as u32 - 8;
        put_u32(&mut bytes, 4, riff_size);
        let path = dir.path().join(format!("{codec}-unpadded.wav"));
        std::fs::write(&path, &bytes).unwrap();
        reads_like_the_finished_file(&format!("{codec} unpadded"), &path, &finished);
    }
}

/// Offset of the frame count (big-endian u32) in the Xing/Info tag FFmpeg's libmp3lame
/// writes.
fn xing_frame_count_at(mp3: &[u8]) -> usize {
    let xing = mp3
        .windows(4)
        .position(|w| w == b"Xing" || w == b"Info")
        .expect("FFmpeg writes a Xing/Info tag");
    assert_ne!(mp3[xing + 7] & 1, 0, "the tag has a frame count");
    xing + 8
}

/// MP3 files joined end to end, and one whose Xing tag counts no frames: the tag of the
/// first part once cut the decode to that part (Note [Stated lengths that miss part of the file]).
#[test]
fn mp3_parts_past_a_stale_xing_count_are_decoded() {
    let dir = scratch_dir("stale-xing");
    let first = dir.path().join("first.mp3");
    let second = dir.path().join("second.mp3");
    for (path, signal) in [
        (&first, "sine=f=440:d=3:r=16000"),
        (&second, "sine=f=660:d=5:r=16000"),
    ] {
        ffmpeg_to(
            &[
                "-f",
                "lavfi",
                "-i",
                signal,
                "-c:a",
                "libmp3lame",
                "-q:a",
                "4",
            ],
            path,
        );
    }
    let mut joined = std::fs::read(&first).unwrap();
    joined.extend(std::fs::read(&second).unwrap());
    let joined_path = dir.path().join("joined.mp3");
    std::fs::write(&joined_path, &joined).unwrap();

    let mut uncounted = std::fs::read(&second).unwrap();
    let count = xing_frame_count_at(&uncounted);
    uncounted[count..count + 4].fill(0);
    let uncounted_path = dir.path().join("uncounted.mp3");
    std::fs::write(&uncounted_path, &uncounted).unwrap();

    for path in [&joined_path, &uncounted_path] {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ours = decoded_whole_like_ffmpeg(&name, path, 1);
        assert_ends_with_tone(&name, &ours, 16_000, 660.0);
    }
}

/// An MP3 whose Xing tag counts one frame, fewer than its LAME tag's encoder delay and
/// padding take off (mutagen's and tinytag's short test files): symphonia reads 0 frames
/// from the headers and a decode takes FFmpeg's reading, so `info` must report the frames
/// a decode gives, not 0 (nor FFmpeg's estimate from the same tag, 576).
#[test]
fn info_of_an_mp3_whose_tags_count_no_frames_reports_what_decodes() {
    let dir = scratch_dir("xing-one-frame");
    let path = dir.path().join("one-frame.mp3");
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=0.5:r=24000",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "32k",
        ],
        &path,
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let count = xing_frame_count_at(&bytes);
    bytes[count..count + 4].copy_from_slice(&1u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let decoded = decoded_whole_like_ffmpeg("one-frame.mp3", &path, 1);
    assert!(decoded.frames() > 10_000, "{} frames", decoded.frames());
    let info = audiodecode::probe_info(&path).unwrap();
    assert_eq!(info.frames, Some(decoded.frames() as u64));
    assert_eq!(info.backend, audiodecode::Backend::Ffmpeg);
    assert!(
        (info.duration.unwrap() - 0.5).abs() < 0.1,
        "{:?}",
        info.duration
    );
}

/// A fragmented MP4 cut off inside its fragment (an interrupted browser or phone
/// recording): symphonia finds no samples in it, FFmpeg reads what it holds. A lenient
/// decode gives FFmpeg's audio; a strict one fails with FFmpeg's reason, not "empty".
#[test]
fn a_cut_fragmented_mp4_is_read_as_far_as_ffmpeg_reads_it() {
    let dir = scratch_dir("cut-fragment");
    let whole = dir.path().join("whole.mp4");
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=f=300:d=4:r=48000",
            "-c:a",
            "aac",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration",
            "10000000",
        ],
        &whole,
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 4 / 5]).unwrap();
    let lenient = load_ok(
        &cut,
        &LoadRequest {
            lenient: true,
            ..keep()
        },
        1,
    );
    let want = reference(&cut);
    assert!(
        want.frames() > 48_000,
        "FFmpeg reads {} frames",
        want.frames()
    );
    assert_eq!(lenient.frames(), want.frames());
    assert!(goertzel_amplitude(&lenient.planes[0], 48_000, 300.0) > 0.1);
    let err = load(&cut, &keep(), 1).expect_err("a strict decode of a cut file");
    assert!(
        !matches!(err, audiodecode::DecodeError::Empty { .. }),
        "called empty: {err}"
    );
    assert!(err.to_string().contains("cut.mp4"), "{err}");
}

/// Files written by a writer that cannot seek back to finish its header (`ffmpeg ... -f
/// FORMAT -`, a recorder streaming to a socket): no length, no seek table, a size of -1.
/// Each decodes whole, undamaged, as FFmpeg decodes it (a CAF whose data size is -1 once
/// failed with "Invalid argument").
#[test]
fn files_written_to_a_pipe_decode_whole() {
    let dir = scratch_dir("piped");
    let formats: &[(&str, &[&str])] = &[
        ("caf", &["-c:a", "pcm_s16le", "-f", "caf"]),
        ("flac", &["-c:a", "flac", "-f", "flac"]),
        ("mp3", &["-c:a", "libmp3lame", "-f", "mp3"]),
        ("ogg", &["-c:a", "libvorbis", "-f", "ogg"]),
        ("webm", &["-c:a", "libopus", "-f", "webm"]),
        ("aac", &["-c:a", "aac", "-f", "adts"]),
    ];
    for (ext, args) in formats {
        let piped = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-nostdin",
                "-f",
                "lavfi",
                "-i",
                STEREO_SIGNAL,
            ])
            .args(*args)
            .arg("-")
            .output()
            .unwrap();
        assert!(piped.status.success(), "{ext}");
        let path = dir.path().join(format!("piped.{ext}"));
        std::fs::write(&path, &piped.stdout).unwrap();
        let ours = decoded_whole_like_ffmpeg(ext, &path, 1);
        let want = reference(&path);
        let lag = best_lag(&ours.planes, &want.planes, 2048);
        let corr = correlation_at(&ours.planes[0], &want.planes[0], lag);
        assert!(corr > 0.99, "{ext}: correlation {corr} at lag {lag}");
        if *ext == "webm" {
            // Note [Live WebM ends]: the same recording cut inside a block is truncated.
            let cut = dir.path().join("cut.webm");
            std::fs::write(&cut, &piped.stdout[..piped.stdout.len() * 2 / 3 + 1]).unwrap();
            let err = load(&cut, &keep(), 1).expect_err("a cut live WebM");
            assert!(
                matches!(err, audiodecode::DecodeError::Truncated { .. }),
                "cut live WebM: {err}"
            );
        }
    }
}

/// Ogg links one after another (`cat a.ogg b.ogg`, internet-radio dumps): every link is
/// decoded (once only the first was, without a word), and the first link's length is not
/// taken for the file's (Note [Stated lengths that miss part of the file]). A link that
/// changes the channel count is damage: strict refuses it, lenient keeps the whole file.
#[test]
fn chained_ogg_streams_decode_every_link() {
    let dir = scratch_dir("chained-ogg");
    let link = |name: &str, codec: &str, freq: u32, channels: &str| {
        let path = dir.path().join(name);
        let signal = format!("sine=f={freq}:d=2:r=48000");
        ffmpeg_to(
            &["-f", "lavfi", "-i", &signal, "-ac", channels, "-c:a", codec],
            &path,
        );
        std::fs::read(path).unwrap()
    };
    for (ext, codec) in [("ogg", "libvorbis"), ("opus", "libopus")] {
        let mut chain = link(&format!("a.{ext}"), codec, 300, "1");
        chain.extend(link(&format!("b.{ext}"), codec, 700, "1"));
        let path = dir.path().join(format!("chain.{ext}"));
        std::fs::write(&path, &chain).unwrap();
        let info = probe_info(&path).unwrap();
        assert_eq!(
            info.frames, None,
            "{ext}: the first link's length was stated"
        );
        let ours = decoded_whole_like_ffmpeg(ext, &path, 4);
        assert_ends_with_tone(ext, &ours, 48_000, 700.0);
    }
    let mut mixed = link("mono.opus", "libopus", 300, "1");
    mixed.extend(link("stereo.opus", "libopus", 700, "2"));
    let path = dir.path().join("layouts.opus");
    std::fs::write(&path, &mixed).unwrap();
    let err = load(&path, &keep(), 1).expect_err("a strict decode of a layout change");
    assert!(err.to_string().contains("channel count"), "{err}");
    let lenient = load_ok(
        &path,
        &LoadRequest {
            lenient: true,
            ..mono_at(None)
        },
        1,
    );
    assert!(lenient.is_damaged());
    assert!(lenient.frames() > 180_000, "{} frames", lenient.frames());
}
