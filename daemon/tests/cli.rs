//! The `audiodecode` binary: `info` output, `decode` output files (WAV/NPY/raw f32) and how
//! failed inputs are reported.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use audiodecode::{probe_info, ChannelMode, LoadRequest, Quality};
use common::*;

fn audiodecode(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
        .args(args)
        .output()
        .expect("run audiodecode");
    eprintln!(
        "audiodecode {}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files in a directory, by name.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A parsed 32-bit float WAV: channels, rate and planar samples.
struct Wav {
    channels: usize,
    rate: u32,
    planes: Vec<Vec<f32>>,
}

fn parse_wav(path: &Path) -> Wav {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..4], b"RIFF", "RIFF magic");
    assert_eq!(u32_at(&b, 4) as usize, b.len() - 8, "RIFF size");
    assert_eq!(&b[8..12], b"WAVE");
    // Walk the chunks.
    let (mut at, mut fmt, mut data) = (12, None, None);
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32_at(&b, at + 4) as usize;
        let body = at + 8;
        match id {
            b"fmt " => fmt = Some((body, size)),
            b"data" => data = Some((body, size)),
            _ => {}
        }
        at = body + size + (size & 1);
    }
    let (f, fmt_size) = fmt.expect("fmt chunk");
    assert!(fmt_size >= 16);
    assert_eq!(u16_at(&b, f), 3, "format tag: WAVE_FORMAT_IEEE_FLOAT");
    let channels = usize::from(u16_at(&b, f + 2));
    let rate = u32_at(&b, f + 4);
    assert_eq!(u32_at(&b, f + 8), rate * channels as u32 * 4, "byte rate");
    assert_eq!(usize::from(u16_at(&b, f + 12)), channels * 4, "block align");
    assert_eq!(u16_at(&b, f + 14), 32, "bits per sample");
    let (d, data_size) = data.expect("data chunk");
    assert_eq!(
        d + data_size,
        b.len(),
        "data chunk runs to the end of the file"
    );
    assert_eq!(data_size % (channels * 4), 0, "data length is whole frames");
    let samples = le_f32(&b[d..d + data_size]);
    Wav {
        channels,
        rate,
        planes: deinterleave(&samples, channels),
    }
}

/// A parsed `.npy`: shape and data (C order).
fn parse_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..6], b"\x93NUMPY", "npy magic");
    assert_eq!(b[6], 1, "npy major version");
    let header_len = usize::from(u16_at(&b, 8));
    assert_eq!((10 + header_len) % 64, 0, "npy header is 64-byte aligned");
    let header = std::str::from_utf8(&b[10..10 + header_len]).unwrap();
    assert!(header.ends_with('\n'));
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no shape in {header}"));
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = le_f32(&b[10 + header_len..]);
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "npy data length"
    );
    (shape, data)
}

fn request(rate: Option<u32>, mono: bool, offset: f64, duration: Option<f64>) -> LoadRequest {
    LoadRequest {
        sample_rate: rate,
        channels: if mono {
            ChannelMode::Mono
        } else {
            ChannelMode::Keep
        },
        offset,
        duration,
        ..Default::default()
    }
}

#[test]
fn info_json_prints_one_object_per_file() {
    let files = ["flac", "mp3", "webm", "wav_ext4"].map(|n| &fixture(n).path);
    let mut args = vec!["info", "--json"];
    args.extend(files.iter().map(|p| s(p)));
    let out = audiodecode(&args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), files.len(), "one line per file");
    let keys: BTreeSet<&str> = [
        "path",
        "codec",
        "container",
        "sample_rate",
        "channels",
        "frames",
        "duration",
        "backend",
    ]
    .into();
    for (line, path) in lines.iter().zip(files) {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        let obj = v.as_object().expect("a JSON object");
        let got: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(got, keys, "keys of {line}");
        let info = probe_info(path).unwrap();
        assert_eq!(obj["path"], s(path));
        assert_eq!(obj["codec"], info.codec.as_str());
        assert_eq!(obj["container"], info.container.as_str());
        assert_eq!(obj["sample_rate"], info.sample_rate);
        assert_eq!(obj["channels"], info.channels);
        match info.frames {
            Some(f) => {
                assert_eq!(obj["frames"], f);
                assert!((obj["duration"].as_f64().unwrap() - info.duration.unwrap()).abs() < 1e-9);
            }
            None => {
                assert!(obj["frames"].is_null());
                assert!(obj["duration"].is_null());
            }
        }
    }
}

#[test]
fn info_plain_and_failures() {
    let dir = scratch_dir("cli-info");
    let missing = dir.path().join("missing.flac");
    let flac = &fixture("flac").path;
    let out = audiodecode(&["info", s(flac), s(&missing)]);
    assert!(!out.status.success(), "a missing file fails the command");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(s(flac)) && text.contains("44100"), "{text}");
    assert!(
        stderr(&out).contains(s(&missing)),
        "stderr names the missing file"
    );
}

#[test]
fn decode_to_wav() {
    let dir = scratch_dir("cli-wav");
    let input = &fixture("flac").path;
    // Native rate, all channels.
    let out_path = dir.path().join("out.wav");
    let out = audiodecode(&["decode", s(input), "-o", s(&out_path), "-q"]);
    assert!(out.status.success());
    let wav = parse_wav(&out_path);
    let want = load_ok(input, &request(None, false, 0.0, None), 1);
    assert_eq!(wav.channels, 2);
    assert_eq!(wav.rate, 44100);
    assert_eq!(wav.planes[0].len(), want.frames());
    assert_planes_equal("out.wav", &wav.planes, &want.planes);

    // Resampled, mono, sliced, another quality.
    let out_path = dir.path().join("slice.wav");
    let out = audiodecode(&[
        "decode",
        s(input),
        "-o",
        s(&out_path),
        "--sr",
        "16000",
        "--mono",
        "--offset",
        "0.5",
        "--duration",
        "1.25",
        "--quality",
        "vhq",
        "-q",
    ]);
    assert!(out.status.success());
    let wav = parse_wav(&out_path);
    let req = LoadRequest {
        quality: Quality::Vhq,
        ..request(Some(16_000), true, 0.5, Some(1.25))
    };
    let want = load_ok(input, &req, 1);
    assert_eq!((wav.channels, wav.rate), (1, 16_000));
    assert_eq!(wav.planes[0].len(), 20_000);
    assert_planes_equal("slice.wav", &wav.planes, &want.planes);
}

#[test]
fn decode_to_npy() {
    let dir = scratch_dir("cli-npy");
    let input = &fixture("ogg").path;

    let mono = dir.path().join("mono.npy");
    let out = audiodecode(&[
        "decode",
        s(input),
        "-o",
        s(&mono),
        "--mono",
        "--sr",
        "22050",
        "-q",
    ]);
    assert!(out.status.success());
    let (shape, data) = parse_npy(&mono);
    let want = load_ok(input, &request(Some(22_050), true, 0.0, None), 1);
    assert_eq!(shape, vec![want.frames()], "shape [T] with --mono");
    assert_planes_equal("mono.npy", &[data], &want.planes);

    let stereo = dir.path().join("stereo.npy");
    let out = audiodecode(&["decode", s(input), "-o", s(&stereo), "-q"]);
    assert!(out.status.success());
    let (shape, data) = parse_npy(&stereo);
    let want = load_ok(input, &request(None, false, 0.0, None), 1);
    assert_eq!(shape, vec![2, want.frames()], "shape [C, T]");
    let planes: Vec<Vec<f32>> = data.chunks(want.frames()).map(<[f32]>::to_vec).collect();
    assert_planes_equal("stereo.npy", &planes, &want.planes);
}

#[test]
fn decode_to_raw_f32() {
    let dir = scratch_dir("cli-f32");
    let input = &fixture("wav_ext4").path;
    let out_path = dir.path().join("four.f32");
    let out = audiodecode(&[
        "decode",
        s(input),
        "-o",
        s(&out_path),
        "--offset",
        "1",
        "-q",
    ]);
    assert!(out.status.success());
    let bytes = std::fs::read(&out_path).unwrap();
    let want = load_ok(input, &request(None, false, 1.0, None), 1);
    assert_eq!(want.frames(), 96_000);
    assert_eq!(
        bytes.len(),
        want.frames() * 4 * 4,
        "frames * channels * 4 bytes"
    );
    let planes = deinterleave(&le_f32(&bytes), 4);
    assert_planes_equal("four.f32", &planes, &want.planes);
}

/// Copies of fixtures under distinct stems in `dir`.
fn inputs(dir: &Path, names: &[(&str, &str)]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|(fixture_name, file)| {
            let path = dir.join(file);
            std::fs::copy(&fixture(fixture_name).path, &path).unwrap();
            path
        })
        .collect()
}

#[test]
fn decode_many_into_a_directory() {
    let dir = scratch_dir("cli-many");
    let files = inputs(
        dir.path(),
        &[
            ("flac", "alpha.flac"),
            ("mp3", "beta.mp3"),
            ("ogg", "gamma.ogg"),
            ("wav_s24", "delta.wav"),
            ("m4a_aac", "epsilon.m4a"),
        ],
    );
    for (format, jobs) in [("wav", "1"), ("npy", "3"), ("f32", "2")] {
        let out_dir = dir.path().join(format!("out-{format}"));
        let out_arg = format!("{}/", out_dir.display());
        let mut args = vec!["decode"];
        args.extend(files.iter().map(|p| s(p)));
        args.extend([
            "-o", &out_arg, "--format", format, "--sr", "16000", "--mono", "-j", jobs,
        ]);
        let out = audiodecode(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let want: BTreeSet<String> = ["alpha", "beta", "gamma", "delta", "epsilon"]
            .iter()
            .map(|stem| format!("{stem}.{format}"))
            .collect();
        assert_eq!(listing(&out_dir), want, "one output per input, same stems");
        for input in &files {
            let stem = input.file_stem().unwrap().to_string_lossy();
            let path = out_dir.join(format!("{stem}.{format}"));
            let samples = match format {
                "wav" => {
                    let wav = parse_wav(&path);
                    assert_eq!((wav.channels, wav.rate), (1, 16_000));
                    wav.planes.into_iter().next().unwrap()
                }
                "npy" => parse_npy(&path).1,
                _ => le_f32(&std::fs::read(&path).unwrap()),
            };
            let want = load_ok(input, &request(Some(16_000), true, 0.0, None), 1);
            assert_planes_equal(&format!("{}", path.display()), &[samples], &want.planes);
        }
    }
}

#[test]
fn same_stems_do_not_overwrite_each_other() {
    let dir = scratch_dir("cli-stems");
    let files = inputs(dir.path(), &[("flac", "x.flac"), ("mp3", "x.mp3")]);
    let out_dir = dir.path().join("out");
    let out_arg = format!("{}/", out_dir.display());
    let out = audiodecode(&["decode", s(&files[0]), s(&files[1]), "-o", &out_arg, "-q"]);
    assert!(out.status.success());
    assert_eq!(
        listing(&out_dir),
        ["x.wav".to_string(), "x-1.wav".to_string()].into()
    );
}

#[test]
fn failed_inputs_are_reported_and_leave_no_output() {
    let dir = scratch_dir("cli-fail");
    let good = inputs(dir.path(), &[("flac", "good1.flac"), ("ogg", "good2.ogg")]);
    let missing = dir.path().join("missing.wav");
    let corrupt = dir.path().join("corrupt.mp3");
    let mut noise = vec![0u8; 32 * 1024];
    XorShift::new(42).fill(&mut noise);
    std::fs::write(&corrupt, noise).unwrap();
    let truncated = dir.path().join("truncated.flac");
    let flac = std::fs::read(&fixture("flac").path).unwrap();
    std::fs::write(&truncated, &flac[..flac.len() / 2]).unwrap();

    for jobs in ["1", "4"] {
        let out_dir = dir.path().join(format!("out-j{jobs}"));
        let out_arg = format!("{}/", out_dir.display());
        let out = audiodecode(&[
            "decode",
            s(&good[0]),
            s(&missing),
            s(&corrupt),
            s(&truncated),
            s(&good[1]),
            "-o",
            &out_arg,
            "-j",
            jobs,
            "--strict",
        ]);
        assert!(!out.status.success(), "exit status with failed inputs");
        let err = stderr(&out);
        for bad in [&missing, &corrupt, &truncated] {
            assert!(
                err.contains(s(bad)),
                "stderr names {}: {err}",
                bad.display()
            );
        }
        for good in &good {
            assert!(
                !err.contains(&format!("error: {}", good.display())),
                "{err}"
            );
        }
        // Outputs for the good inputs only, and no temporary files left behind.
        assert_eq!(
            listing(&out_dir),
            ["good1.wav".to_string(), "good2.wav".to_string()].into(),
            "outputs (no partial files)"
        );
        for (input, name) in good.iter().zip(["good1.wav", "good2.wav"]) {
            let wav = parse_wav(&out_dir.join(name));
            let want = load_ok(input, &request(None, false, 0.0, None), 1);
            assert_planes_equal(name, &wav.planes, &want.planes);
        }
    }

    // A single failed input: no output file, no temporary file beside it.
    for bad in [&missing, &corrupt, &truncated] {
        let out_dir = dir.path().join(format!(
            "single-{}",
            bad.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::create_dir(&out_dir).unwrap();
        let target = out_dir.join("out.npy");
        let out = audiodecode(&["decode", s(bad), "-o", s(&target), "--strict"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(s(bad)));
        assert!(
            listing(&out_dir).is_empty(),
            "left behind: {:?}",
            listing(&out_dir)
        );
    }

    // By default (lenient, as FFmpeg and librosa are) what decoded before the cut is kept,
    // with a warning naming the file.
    let out_dir = dir.path().join("lenient");
    let out_arg = format!("{}/", out_dir.display());
    let out = audiodecode(&["decode", s(&truncated), "-o", &out_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("warning: {}: truncated", s(&truncated))),
        "warning names the file: {}",
        stderr(&out)
    );
    let wav = parse_wav(&out_dir.join("truncated.wav"));
    assert!(!wav.planes[0].is_empty() && wav.planes[0].len() < 132_300);
}

#[test]
fn info_check_decodes_to_the_end_and_reports_damage() {
    let dir = scratch_dir("cli-info-check");
    let intact = &fixture("flac").path;
    let bytes = std::fs::read(intact).unwrap();
    let cut = dir.path().join("cut.flac");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = audiodecode(&["info", "--check", "--json", s(intact), s(&cut)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["damaged"], false);
    assert!(lines[0]["damage"].is_null());
    assert_eq!(lines[0]["decoded_frames"], lines[0]["frames"]);
    assert_eq!(lines[1]["damaged"], true);
    let damage = lines[1]["damage"].as_str().unwrap_or_default();
    assert!(
        damage.contains(s(&cut)) && damage.contains("truncated"),
        "{damage}"
    );
    let (declared, decoded) = (
        lines[1]["frames"].as_u64(),
        lines[1]["decoded_frames"].as_u64(),
    );
    assert!(
        decoded.unwrap() > 0 && decoded < declared,
        "{declared:?} {decoded:?}"
    );
    // Without --check only the headers are read: no verdict.
    let plain = audiodecode(&["info", "--json", s(&cut)]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("damaged"));
    let text = audiodecode(&["info", "--check", s(&cut)]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("damaged,"));
}

#[test]
fn usage_errors() {
    let dir = scratch_dir("cli-usage");
    let flac = s(&fixture("flac").path).to_string();
    let mp3 = s(&fixture("mp3").path).to_string();
    let out_wav = dir.path().join("x.wav");
    let bad = [
        vec!["decode", &flac, "-o", s(&out_wav), "--quality", "best"],
        vec!["decode", &flac, "-o", s(&out_wav), "--format", "ogg"],
        vec!["decode", &flac, &mp3, "-o", s(&out_wav)],
        vec!["decode", &flac, "-o", "x.ogg"],
        vec!["decode", &flac, "-o", s(&out_wav), "--offset", "-1"],
        vec!["decode", &flac, "-o", s(&out_wav), "--sr", "0"],
        vec!["frobnicate"],
    ];
    for args in bad {
        let out = audiodecode(&args);
        assert!(!out.status.success(), "{args:?} should fail");
    }
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}
