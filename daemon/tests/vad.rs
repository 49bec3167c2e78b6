//! Voice activity detection on espeak-ng speech between generated non-speech (silence, a
//! tone, pink noise, a chord sequence): where Silero VAD finds speech, what labeling keeps,
//! and the errors when ONNX Runtime is missing.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use audiodecode::vad::{speech_ranges, SpeechDetector, VadOptions};
use audiodecode::{load, ChannelMode, LoadRequest};
use common::{require_tool, scratch_dir};

const RATE: u32 = 16_000;
const SENTENCES: &[&str] = &[
    "The farmer planted potatoes and carrots in the field behind the barn.",
    "She wrote a long letter to her grandmother who lives in the mountains.",
    "Fresh bread and warm coffee are the best way to start a weekend.",
];

/// A recording of speech between non-speech, and where its speech is (seconds).
struct Mixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    speech: Vec<(f64, f64)>,
    duration: f64,
}

fn run(program: &str, args: &[&str]) {
    require_tool(program);
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

/// 16 kHz mono samples of `path`.
fn samples(path: &Path) -> Vec<f32> {
    let request = LoadRequest {
        sample_rate: Some(RATE),
        channels: ChannelMode::Mono,
        ..LoadRequest::default()
    };
    load(path, &request, 1).unwrap().planes.remove(0)
}

/// From the first to the last 10 ms frame above −40 dBFS RMS, in seconds.
fn audible(samples: &[f32]) -> (f64, f64) {
    let loud = |c: &[f32]| c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32 > 1e-4;
    let first = samples.chunks(160).position(loud).unwrap();
    let last = samples.chunks(160).rposition(loud).unwrap();
    (first as f64 * 0.01, (last + 1) as f64 * 0.01)
}

fn mixture() -> &'static Mixture {
    static MIXTURE: OnceLock<Mixture> = OnceLock::new();
    MIXTURE.get_or_init(|| {
        let dir = scratch_dir("vad");
        let d = dir.path();
        let part = |name: &str| d.join(name).to_string_lossy().into_owned();
        let lavfi = |source: &str, seconds: &str, name: &str| {
            run(
                "ffmpeg",
                &["-y", "-loglevel", "error", "-f", "lavfi", "-i", source, "-t", seconds,
                  "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", &part(name)],
            );
        };
        lavfi("anullsrc=r=16000:cl=mono", "2", "silence.wav");
        lavfi("sine=f=440:r=16000,volume=0.3", "3", "tone.wav");
        lavfi("anoisesrc=color=pink:amplitude=0.1:r=16000:seed=7", "3", "noise.wav");
        // A chord that changes every half second: music-like, harmonic, not speech.
        lavfi(
            "aevalsrc='0.15*sin(2*PI*(262+131*floor(mod(2*t,4)))*t)+0.15*sin(2*PI*330*t)+0.1*sin(2*PI*392*t)':s=16000",
            "3",
            "chord.wav",
        );
        for (i, text) in SENTENCES.iter().enumerate() {
            let raw = part(&format!("raw{i}.wav"));
            run("espeak-ng", &["-v", "en-us", "-s", "140", "-w", &raw, text]);
            run(
                "ffmpeg",
                &["-y", "-loglevel", "error", "-i", &raw, "-ar", "16000", "-ac", "1",
                  "-c:a", "pcm_s16le", &part(&format!("speech{i}.wav"))],
            );
        }
        let order = [
            "silence.wav", "speech0.wav", "tone.wav", "speech1.wav", "noise.wav", "chord.wav",
            "speech2.wav", "silence.wav",
        ];
        let mut speech = Vec::new();
        let mut t = 0.0;
        for name in order {
            let s = samples(&d.join(name));
            if name.starts_with("speech") {
                let (a, b) = audible(&s);
                speech.push((t + a, t + b));
            }
            t += s.len() as f64 / f64::from(RATE);
        }
        let list = d.join("list.txt");
        let listing: String = order.iter().map(|n| format!("file '{}'\n", part(n))).collect();
        std::fs::write(&list, listing).unwrap();
        let path = d.join("mixture.wav");
        run(
            "ffmpeg",
            &["-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i",
              &list.to_string_lossy(), "-c", "copy", &path.to_string_lossy()],
        );
        Mixture { _dir: dir, path, speech, duration: t }
    })
}

fn detector() -> &'static SpeechDetector {
    SpeechDetector::shared()
        .expect("ONNX Runtime and Silero VAD (pip install onnxruntime faster-whisper)")
}

fn ranges(path: &Path, options: &VadOptions) -> Vec<(f64, f64)> {
    let s = samples(path);
    let p = detector().probabilities(&s).unwrap();
    speech_ranges(&p, s.len(), options)
        .into_iter()
        .map(|r| (r.start as f64 / 16_000.0, r.end as f64 / 16_000.0))
        .collect()
}

/// Speech found by `options` inside and outside the true speech regions.
fn check_found(found: &[(f64, f64)], speech: &[(f64, f64)], onset: f64, offset: f64) -> f64 {
    for &(a, b) in speech {
        let inside: Vec<&(f64, f64)> = found.iter().filter(|r| r.1 > a && r.0 < b).collect();
        assert!(!inside.is_empty(), "speech at {a:.2}–{b:.2} s not found");
        let (start, end) = (inside[0].0, inside[inside.len() - 1].1);
        assert!(
            start - a <= onset && a - start <= 0.1 + offset.max(0.0),
            "speech at {a:.2} s found from {start:.3} s"
        );
        assert!(
            b - end <= 0.1 && end - b <= offset,
            "speech ending at {b:.2} s found to {end:.3} s"
        );
    }
    found
        .iter()
        .map(|&(s, e)| {
            let covered: f64 = speech
                .iter()
                .map(|&(a, b)| (e.min(b) - s.max(a)).max(0.0))
                .sum();
            (e - s) - covered
        })
        .sum()
}

#[test]
fn finds_speech_within_100_ms_and_nothing_else() {
    let m = mixture();
    // Unpadded: the edges Silero itself finds. Ends within 100 ms; starts within 100 ms,
    // except that it calls speech from the first voiced sound, so a sentence opening on a
    // fricative ("She", "Fresh") is found up to ~120 ms after its first audible frame.
    let bare = VadOptions {
        speech_pad_ms: 0,
        min_silence_duration_ms: 500,
        ..VadOptions::silero()
    };
    let found = ranges(&m.path, &bare);
    eprintln!("speech {:?}\nfound  {found:?}", m.speech);
    let outside = check_found(&found, &m.speech, 0.13, 0.1);
    assert!(
        outside <= 0.2,
        "{outside:.2} s of non-speech kept: {found:?}"
    );

    // With labeling's defaults (400 ms of padding) every sentence is covered whole, and
    // the tone, the noise, the chord and the silence are removed but for the padding.
    let found = ranges(&m.path, &VadOptions::default());
    let outside = check_found(&found, &m.speech, 0.0, 0.5);
    assert!(
        outside <= 0.8 * m.speech.len() as f64 + 0.2,
        "{outside:.2} s of non-speech kept: {found:?}"
    );
    let kept: f64 = found.iter().map(|(a, b)| b - a).sum();
    assert!(
        kept < m.duration * 0.6,
        "kept {kept:.1} of {:.1} s",
        m.duration
    );
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audiodecode"))
}

/// `audiodecode label` on `input` with `args`: the JSON record, or the failed run's stderr.
fn label(input: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let dir = scratch_dir("vad-label");
    let out = dir.path().join("out.jsonl");
    let run = binary()
        .arg("label")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .args(["--quiet"])
        .args(if args.contains(&"--model") {
            &[][..]
        } else {
            &["--model", "base"][..]
        })
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    let text = std::fs::read_to_string(&out).unwrap();
    Ok(serde_json::from_str(text.lines().next().unwrap()).unwrap())
}

fn segments(record: &serde_json::Value) -> Vec<(f64, f64, String)> {
    record["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start"].as_f64().unwrap(),
                s["end"].as_f64().unwrap(),
                s["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn labeling_transcribes_only_the_speech_at_its_times() {
    let m = mixture();
    let record = label(&m.path, &[], &[]).unwrap();
    let text = record["text"].as_str().unwrap().to_lowercase();
    for word in [
        "farmer",
        "potatoes",
        "grandmother",
        "mountains",
        "bread",
        "coffee",
    ] {
        assert!(text.contains(word), "'{word}' missing from {text:?}");
    }
    let kept = record["speech_kept"].as_f64().unwrap();
    let removed = record["speech_removed"].as_f64().unwrap();
    assert!(
        (kept + removed - m.duration).abs() < 0.01,
        "{kept} + {removed} ≠ {}",
        m.duration
    );
    assert!(kept < m.duration * 0.6, "kept {kept} of {} s", m.duration);
    let mut last_end = 0.0;
    for (start, end, text) in segments(&record) {
        assert!(
            start >= last_end && end >= start && end <= m.duration + 1e-3,
            "times of {text:?}"
        );
        last_end = end;
        // Each segment lies on speech (400 ms of padding on each side at most).
        let on_speech = m
            .speech
            .iter()
            .any(|&(a, b)| start >= a - 0.45 && end <= b + 0.45 && end > a && start < b);
        assert!(
            on_speech,
            "segment {start}–{end} {text:?} is not on speech {:?}",
            m.speech
        );
    }
    // Without VAD every second reaches the model and nothing is recorded as removed.
    let plain = label(&m.path, &["--vad-filter", "false"], &[]).unwrap();
    assert!(plain.get("speech_kept").is_none());
}

#[test]
fn vad_options_reach_labeling() {
    let m = mixture();
    let default = label(&m.path, &[], &[]).unwrap();
    let unpadded = label(&m.path, &["--speech-pad-ms", "0"], &[]).unwrap();
    let kept = |r: &serde_json::Value| r["speech_kept"].as_f64().unwrap();
    assert!(
        kept(&unpadded) < kept(&default) - 1.0,
        "{} vs {}",
        kept(&unpadded),
        kept(&default)
    );
    // No sentence lasts 8 s: nothing is speech, nothing is transcribed.
    let none = label(&m.path, &["--min-speech-duration-ms", "8000"], &[]).unwrap();
    assert_eq!(kept(&none), 0.0);
    assert_eq!(none["text"], "");
    assert!(segments(&none).is_empty());
}

#[test]
fn missing_onnx_runtime_is_a_clear_error_and_vad_off_still_works() {
    let m = mixture();
    let missing = [("AUDIODECODE_ONNXRUNTIME", "/nonexistent/libonnxruntime.so")];
    let error = label(&m.path, &[], &missing).unwrap_err();
    assert!(
        error.contains("AUDIODECODE_ONNXRUNTIME") && error.contains("no such file"),
        "{error}"
    );
    // No Python package either: the message says what to install.
    // No Python package either (the model given as a directory, so only VAD needs Python):
    // the message says what to install.
    let model = audiodecode::label::model::resolve_model("base").unwrap();
    let model = model.to_string_lossy();
    let no_python = [("AUDIODECODE_PYTHON", "/nonexistent/python3")];
    let error = label(&m.path, &["--model", &model], &no_python).unwrap_err();
    assert!(error.contains("pip install onnxruntime"), "{error}");
    let record = label(&m.path, &["--vad-filter", "false"], &missing).unwrap();
    assert!(record["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("farmer"));

    let vad = binary()
        .arg("vad")
        .arg(&m.path)
        .envs(missing)
        .output()
        .unwrap();
    assert!(!vad.status.success());
    assert!(String::from_utf8_lossy(&vad.stderr).contains("AUDIODECODE_ONNXRUNTIME"));
}

#[test]
fn vad_command_prints_speech_per_file_and_names_bad_files() {
    let m = mixture();
    let run = binary()
        .args([
            "vad",
            "--speech-pad-ms",
            "0",
            "--min-silence-duration-ms",
            "500",
        ])
        .arg(&m.path)
        .arg("/nonexistent.wav")
        .output()
        .unwrap();
    assert!(!run.status.success(), "a missing file fails the run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent.wav"), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let speech = record["speech"].as_array().unwrap();
    assert_eq!(speech.len(), m.speech.len(), "{stdout}");
    for (found, &(a, b)) in speech.iter().zip(&m.speech) {
        let (s, e) = (found[0].as_f64().unwrap(), found[1].as_f64().unwrap());
        assert!(
            (s - a).abs() < 0.15 && (e - b).abs() < 0.15,
            "{s}–{e} vs {a}–{b}"
        );
    }
}
