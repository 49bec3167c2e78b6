//! Hostile inputs: header fields that declare absurd sizes, FIFOs, non-finite samples, and
//! a bounded mutation fuzzer over every generated format. See Note [Resource limits].
//!
//! The fuzzer runs the release CLI (`audiodecode decode`) once per mutant, under an
//! address-space cap (`prlimit --as`) and a deadline, so an abort, a hang or an allocation
//! past the cap fails the test instead of the test process. `AUDIODECODE_FUZZ_MUTANTS`
//! sets the number of mutants per fixture (default 12); `AUDIODECODE_FUZZ_CORPUS=DIR` adds
//! every file under DIR as a seed (real files, for the benchmark; never in CI).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audiodecode::{load, probe_info, DecodeError, LoadRequest};
use common::*;

/// Bytes of `name`'s fixture with `patch` applied at `at`, written under `dir`.
fn patched(dir: &Path, name: &str, out: &str, edits: &[(usize, &[u8])], keep: usize) -> PathBuf {
    let mut bytes = std::fs::read(&fixture(name).path).expect("fixture");
    bytes.truncate(keep.min(bytes.len()));
    for (at, patch) in edits {
        bytes[*at..*at + patch.len()].copy_from_slice(patch);
    }
    let path = dir.join(out);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn find(bytes: &[u8], tag: &[u8]) -> usize {
    bytes
        .windows(tag.len())
        .position(|w| w == tag)
        .expect("chunk tag")
}

/// A file declaring `rate` in its header, as WAV, AIFF and CAF write it.
fn rate_bombs(dir: &Path, tag: &str, rate: u32) -> Vec<PathBuf> {
    let wav = patched(
        dir,
        "wav_s16",
        &format!("{tag}.wav"),
        &[(24, &rate.to_le_bytes())],
        268,
    );
    let aiff_bytes = std::fs::read(&fixture("aiff").path).expect("aiff");
    // COMM: tag, size, channels (2), frames (4), bits (2), then an 80-bit extended rate.
    let comm = find(&aiff_bytes, b"COMM") + 8 + 8;
    let aiff = patched(
        dir,
        "aiff",
        &format!("{tag}.aiff"),
        &[(comm, &extended(rate))],
        4096,
    );
    let caf_bytes = std::fs::read(&fixture("caf").path).expect("caf");
    // desc: tag, 8-byte size, then the rate as a big-endian f64.
    let desc = find(&caf_bytes, b"desc") + 12;
    let caf = patched(
        dir,
        "caf",
        &format!("{tag}.caf"),
        &[(desc, &f64::from(rate).to_be_bytes())],
        4096,
    );
    vec![wav, aiff, caf]
}

/// `value` as an IEEE 754 80-bit extended float, big-endian (AIFF's sample-rate field).
fn extended(value: u32) -> [u8; 10] {
    let mut out = [0u8; 10];
    if value == 0 {
        return out;
    }
    let shift = value.leading_zeros();
    let exponent = 16383 + 31 - shift as u16;
    let mantissa = u64::from(value) << (32 + shift);
    out[..2].copy_from_slice(&exponent.to_be_bytes());
    out[2..].copy_from_slice(&mantissa.to_be_bytes());
    out
}

#[test]
fn header_rate_bombs_are_corrupt_errors_in_well_under_a_second() {
    let dir = scratch_dir("rate-bombs");
    let to_16k = LoadRequest {
        sample_rate: Some(16000),
        ..LoadRequest::default()
    };
    for rate in [u32::MAX, 2_147_483_647, 4_000_000, 1, 999] {
        for path in rate_bombs(dir.path(), &format!("rate{rate}"), rate) {
            let started = Instant::now();
            let err = load(&path, &to_16k, 2).expect_err("a bomb must not decode");
            // A rate the header field cannot hold may reach us as 0 (then no packet tells
            // the real one): empty rather than corrupt, still a clean error.
            assert!(
                matches!(err, DecodeError::Corrupt { .. } | DecodeError::Empty { .. }),
                "{}: {err}",
                path.display()
            );
            if matches!(err, DecodeError::Corrupt { .. }) {
                assert!(err.to_string().contains("sample rate"), "{err}");
            }
            assert_names_path(&err, &path);
            assert!(
                probe_info(&path).is_err(),
                "info must refuse {}",
                path.display()
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn output_rates_out_of_bounds_are_refused() {
    let path = &fixture("wav_s16").path;
    for rate in [0, 999, 768_001, 1_000_000_000] {
        let req = LoadRequest {
            sample_rate: Some(rate),
            ..LoadRequest::default()
        };
        let err = load(path, &req, 1).expect_err("refused");
        assert_eq!(err.kind(), "invalid_request", "{rate}: {err}");
    }
}

#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let dir = scratch_dir("fifo");
    let fifo = dir.path().join("pipe.wav");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    for path in [
        fifo.as_path(),
        Path::new("/dev/zero"),
        Path::new("/dev/urandom"),
    ] {
        let started = Instant::now();
        let err = load(path, &LoadRequest::default(), 1).expect_err("not a regular file");
        assert_eq!(err.kind(), "invalid_request", "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// A float WAV holding NaN, ±Inf and huge values decodes to finite samples at its own
/// rate: NaN silent, ±Inf ±1, headroom past 1.0 kept (as FFmpeg and soundfile keep it),
/// garbage bounded at ±2^20; resampled, to finite samples.
#[test]
fn non_finite_float_samples_are_kept_in_contract() {
    let dir = scratch_dir("nan");
    let values = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        0.25,
        -2.0,
    ];
    let mut data = Vec::new();
    for i in 0..16_000 {
        data.extend_from_slice(&values[i % values.len()].to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&64_000u32.to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&32u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    let path = dir.path().join("nan.wav");
    std::fs::write(&path, wav).expect("write");
    for rate in [None, Some(8000), Some(44100)] {
        let req = LoadRequest {
            sample_rate: rate,
            ..LoadRequest::default()
        };
        let audio = load(&path, &req, 1).expect("decodes");
        assert!(audio.frames() > 0);
        if rate.is_none() {
            let m = audiodecode::decode::samples::MAX_SAMPLE;
            let want = [0.0, 1.0, -1.0, m, -m, 0.25, -2.0];
            for (i, &s) in audio.planes[0].iter().enumerate() {
                assert_eq!(s, want[i % want.len()], "frame {i}");
            }
        }
        for &s in &audio.planes[0] {
            let bound = 4.0 * audiodecode::decode::samples::MAX_SAMPLE;
            assert!(s.is_finite() && s.abs() <= bound, "{rate:?}: {s}");
        }
    }
}

/// One way to damage a file.
fn mutate(seed: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    if bytes.is_empty() {
        return bytes;
    }
    // Headers live in the first few hundred bytes; aim most edits there.
    let at = |rng: &mut XorShift, n: usize| {
        if rng.below(3) > 0 {
            rng.below(n.min(512))
        } else {
            rng.below(n)
        }
    };
    for _ in 0..1 + rng.below(4) {
        let n = bytes.len();
        match rng.below(7) {
            0 => {
                let i = at(rng, n);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = at(rng, n);
                bytes[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            2 => {
                // An extreme 32-bit field: sizes, rates, counts.
                let i = at(rng, n.saturating_sub(4).max(1)).min(n.saturating_sub(4));
                let v: u32 = [u32::MAX, 0, 1, 0x7fff_ffff, 0x8000_0000][rng.below(5)];
                if n >= 4 {
                    bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            3 => bytes.truncate(1 + rng.below(n)),
            4 => {
                let i = rng.below(n);
                let len = (1 + rng.below(64)).min(n - i);
                let chunk = bytes[i..i + len].to_vec();
                let j = rng.below(n);
                bytes.splice(j..j, chunk);
            }
            5 => {
                let i = at(rng, n);
                let len = (1 + rng.below(32)).min(n - i);
                rng.fill(&mut bytes[i..i + len]);
            }
            _ => {
                let i = rng.below(n);
                let len = (1 + rng.below(256)).min(n - i);
                bytes.drain(i..i + len);
            }
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

/// What one run of the CLI on a mutant came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Decoded,
    CleanError,
    Panic(String),
    Crash(String),
    Hang,
}

const ADDRESS_SPACE_CAP: &str = "8000000000";
const DEADLINE: Duration = Duration::from_secs(20);

fn run_cli(input: &Path, out: &Path) -> Outcome {
    let mut child = Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE_CAP}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_audiodecode"))
        .arg("decode")
        .arg(input)
        .args(["--sr", "16000", "--mono", "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) and the audiodecode binary");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(status) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                return if stderr.contains("decoder crashed") || stderr.contains("panicked") {
                    Outcome::Panic(stderr)
                } else if status.success() {
                    Outcome::Decoded
                } else if status.code() == Some(1)
                    && stderr
                        .lines()
                        .any(|l| l.starts_with("error: ") && l.contains(&*input.to_string_lossy()))
                {
                    Outcome::CleanError
                } else {
                    Outcome::Crash(format!("{status}: {stderr}"))
                };
            }
            None if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Hang;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Files of the containers `decode/containers` parses (their header walkers are what a
/// mutant attacks first), made with ffmpeg and sox into `dir`.
fn container_seeds(dir: &Path) -> Vec<PathBuf> {
    let signal = "aevalsrc=0.5*sin(2*PI*(200*t+250*t*t))|0.3*sin(2*PI*700*t):s=16000:d=0.5";
    let made = [
        ("rf64.wav", &["-rf64", "always", "-c:a", "pcm_s16le"][..]),
        (
            "rf64-f32.wav",
            &["-rf64", "always", "-c:a", "pcm_f32le"][..],
        ),
        ("mp3-in.wav", &["-c:a", "libmp3lame"][..]),
        ("ima4.aifc", &["-c:a", "adpcm_ima_qt"][..]),
    ];
    let mut out = Vec::new();
    for (name, args) in made {
        let path = dir.join(name);
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", signal])
            .args(args)
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg could not make {name}");
        out.push(path);
    }
    for (name, args) in [
        ("ulaw.sph", &["-e", "u-law"][..]),
        ("s16.sph", &["-c", "2", "-b", "16"][..]),
    ] {
        let path = dir.join(name);
        let ok = Command::new("sox")
            .args(["-n", "-r", "8000"])
            .args(args)
            .arg(&path)
            .args(["synth", "0.5", "sine", "300-3000"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "sox could not make {name}");
        out.push(path);
    }
    out
}

fn seeds(dir: &Path) -> Vec<PathBuf> {
    let mut seeds: Vec<PathBuf> = short_fixture_names()
        .into_iter()
        .map(|n| fixture(n).path.clone())
        .collect();
    seeds.extend(container_seeds(dir));
    if let Some(dir) = std::env::var_os("AUDIODECODE_FUZZ_CORPUS") {
        let mut stack = vec![PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.metadata().is_ok_and(|m| m.len() <= 64 << 20) {
                    seeds.push(p);
                }
            }
        }
        seeds.sort();
    }
    seeds
}

#[test]
fn mutation_fuzzer_finds_no_abort_panic_or_hang() {
    let per_seed: usize = std::env::var("AUDIODECODE_FUZZ_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = scratch_dir("fuzz");
    let seed_dir = scratch_dir("fuzz-seeds");
    let out = dir.path().join("out.f32");
    let mut rng = XorShift::new(0xf022);
    let (mut decoded, mut errors, mut failures) = (0usize, 0usize, Vec::new());
    for seed in seeds(seed_dir.path()) {
        let Ok(bytes) = std::fs::read(&seed) else {
            continue;
        };
        for k in 0..per_seed {
            let ext = seed.extension().and_then(|e| e.to_str()).unwrap_or("bin");
            let mutant = dir.path().join(format!("mutant.{ext}"));
            std::fs::write(&mutant, mutate(&bytes, &mut rng)).expect("write");
            match run_cli(&mutant, &out) {
                Outcome::Decoded => decoded += 1,
                Outcome::CleanError => errors += 1,
                bad => {
                    // Keep the crasher beside the report, for a regression test.
                    let kept = std::env::temp_dir().join(format!(
                        "audiodecode-crasher-{}-{k}.{ext}",
                        seed.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    ));
                    let _ = std::fs::copy(&mutant, &kept);
                    failures.push(format!(
                        "{} (mutant {k}, kept as {}): {bad:?}",
                        seed.display(),
                        kept.display()
                    ));
                }
            }
        }
    }
    eprintln!(
        "fuzz: {} mutants: {decoded} decoded, {errors} clean errors, {} aborts/panics/hangs",
        decoded + errors + failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
