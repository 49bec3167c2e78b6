//! `audiodecode label` end to end with the small English `tiny.en` model: JSONL fields,
//! resume after a kill, shards, subtitle formats, error lines.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{require_tool, scratch_dir};

const LINES: &[&str] = &[
    "Open the door and let the cat inside.",
    "The red kite flew high above the hill.",
    "Dinner is ready, so please wash your hands.",
    "A cold wind blew across the empty beach.",
    "He reads the newspaper every evening.",
    "The bus stops right in front of the school.",
    "The sun is shining over the quiet town.",
    "Our garden is full of roses this year.",
];

struct Corpus {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        require_tool("espeak-ng");
        let dir = scratch_dir("label-cli");
        let files = LINES
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let path = dir.path().join(format!("line{i}.wav"));
                let ok = Command::new("espeak-ng")
                    .args(["-v", "en-us", "-s", "130", "-w"])
                    .arg(&path)
                    .arg(line)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "espeak-ng");
                path
            })
            .collect();
        Corpus { dir, files }
    })
}

fn label_command(inputs: &[&Path], out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiodecode"));
    cmd.arg("label")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .args([
            "--model",
            "tiny.en",
            "--threads",
            "2",
            "--batch-size",
            "2",
            // Blocks of two files, so a run can be killed between blocks.
            "--block",
            "2",
            "--quiet",
        ])
        .args(extra);
    cmd
}

fn label(inputs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    succeeds(&mut label_command(inputs, out, extra))
}

/// Runs `cmd`, which must succeed.
fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run audiodecode");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn records(path: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read output")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["audio_filepath"].as_str().unwrap_or_default().to_string(),
                v,
            )
        })
        .collect()
}

fn texts(records: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    records
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn full_run() -> &'static BTreeMap<String, serde_json::Value> {
    static FULL: OnceLock<BTreeMap<String, serde_json::Value>> = OnceLock::new();
    FULL.get_or_init(|| {
        let out = corpus().dir.path().join("full.jsonl");
        label(&[corpus().dir.path()], &out, &[]);
        records(&out)
    })
}

#[test]
fn a_directory_becomes_a_manifest_with_every_field() {
    let full = full_run();
    assert_eq!(full.len(), LINES.len());
    let (mut heard_total, mut content_total) = (0, 0);
    for (i, file) in corpus().files.iter().enumerate() {
        let r = &full[&file.display().to_string()];
        for field in [
            "duration",
            "text",
            "language",
            "language_probability",
            "segments",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert_eq!(r["language"], "en");
        // tiny.en on a synthetic voice gets most content words, not all.
        let said: Vec<String> = r["text"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
            .collect();
        let content: Vec<String> = LINES[i]
            .to_lowercase()
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
            .filter(|w| w.len() > 3)
            .collect();
        let heard = content.iter().filter(|w| said.contains(w)).count();
        assert!(heard >= 1, "{said:?} vs {:?}", LINES[i]);
        heard_total += heard;
        content_total += content.len();
        for s in r["segments"].as_array().expect("segments") {
            for field in [
                "start",
                "end",
                "text",
                "avg_logprob",
                "no_speech_prob",
                "compression_ratio",
            ] {
                assert!(!s[field].is_null(), "{field} missing in {s}");
            }
        }
    }
    assert!(
        heard_total * 10 >= content_total * 7,
        "{heard_total} of {content_total} content words"
    );
}

#[test]
fn resume_after_a_kill_gives_the_same_manifest() {
    let dir = scratch_dir("label-resume");
    let out = dir.path().join("labels.jsonl");
    let inputs: Vec<&Path> = corpus().files.iter().map(PathBuf::as_path).collect();
    let mut child = label_command(&inputs, &out, &[])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill as soon as the first block is written.
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let before = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        before < LINES.len(),
        "the run finished before it could be killed"
    );
    // Simulate a torn last line as a crash mid-write would leave it.
    let mut torn = std::fs::read(&out).expect("read");
    torn.extend_from_slice(b"{\"audio_filepath\": \"/half");
    std::fs::write(&out, torn).expect("write");

    let refused = label_command(&inputs, &out, &[]).output().expect("run");
    assert!(
        !refused.status.success(),
        "an existing output needs --resume or --overwrite"
    );
    label(&inputs, &out, &["--resume"]);
    let resumed = records(&out);
    assert_eq!(resumed.len(), LINES.len(), "every file exactly once");
    let lines = std::fs::read_to_string(&out).expect("read").lines().count();
    assert_eq!(lines, LINES.len());
    assert_eq!(texts(&resumed), texts(full_run()));
}

#[test]
fn shards_cover_every_file_once() {
    let dir = scratch_dir("label-shards");
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for shard in 0..3 {
        let out = dir.path().join(format!("part{shard}.jsonl"));
        label(
            &[corpus().dir.path()],
            &out,
            &["--shard", &format!("{shard}/3")],
        );
        let part = records(&out);
        total += part.len();
        for (path, record) in part {
            // Shards pack other neighbours into a window than the full run does, and tiny.en
            // hears a synthetic voice differently in another context: the file and its
            // audio are the same, the words may not be.
            assert_eq!(record["duration"], full_run()[&path]["duration"]);
            let said = record["text"].as_str().unwrap_or_default();
            assert!(!said.trim().is_empty(), "no text for {path}");
            seen.insert(path);
        }
    }
    assert_eq!(total, LINES.len());
    assert_eq!(seen.len(), LINES.len());
    let bad = label_command(
        &[corpus().dir.path()],
        &dir.path().join("x.jsonl"),
        &["--shard", "3/3"],
    )
    .output()
    .expect("run");
    assert!(!bad.status.success());
}

#[test]
fn subtitle_formats_are_written_beside_each_other() {
    let dir = scratch_dir("label-formats");
    let inputs: Vec<&Path> = corpus().files[..2].iter().map(PathBuf::as_path).collect();
    for format in ["srt", "vtt", "txt", "tsv", "json"] {
        let out = dir.path().join(format);
        label(&inputs, &out, &["--format", format]);
        for input in &inputs {
            let stem = input
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let text =
                std::fs::read_to_string(out.join(format!("{stem}.{format}"))).expect("output file");
            match format {
                "srt" => assert!(
                    text.starts_with("1\n00:00:0") && text.contains(" --> "),
                    "{text}"
                ),
                "vtt" => assert!(text.starts_with("WEBVTT\n\n00:00:0"), "{text}"),
                "tsv" => assert!(text.starts_with("start\tend\ttext\n"), "{text}"),
                "json" => {
                    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
                    assert_eq!(v["text"], full_run()[&input.display().to_string()]["text"]);
                }
                _ => assert!(!text.trim().is_empty()),
            }
        }
    }
}

#[test]
fn broken_and_missing_inputs_are_error_lines_not_failures() {
    let dir = scratch_dir("label-errors");
    let garbage = dir.path().join("notes.wav");
    std::fs::write(&garbage, "these are meeting notes, not audio\n".repeat(200)).expect("write");
    let missing = dir.path().join("gone.wav");
    // A 268-byte WAV whose header declares 4,294,967,295 Hz once aborted the whole run.
    let mut bomb = std::fs::read(&corpus().files[0]).expect("read");
    bomb.truncate(268);
    bomb[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let rate_bomb = dir.path().join("bomb.wav");
    std::fs::write(&rate_bomb, bomb).expect("write");
    let out = dir.path().join("labels.jsonl");
    let run = label(
        &[&garbage, &corpus().files[0], &missing, &rate_bomb],
        &out,
        &[],
    );
    assert!(run.status.success());
    let r = records(&out);
    assert_eq!(r.len(), 4);
    for path in [&garbage, &missing, &rate_bomb] {
        let error = r[&path.display().to_string()]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains(&path.display().to_string()), "{error}");
    }
    assert!(r[&corpus().files[0].display().to_string()]["error"].is_null());

    let no_model = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
        .args(["label", "--model", "/no/such/model", "--out"])
        .arg(dir.path().join("none.jsonl"))
        .arg(&corpus().files[0])
        .output()
        .expect("run");
    assert!(!no_model.status.success());
    assert!(String::from_utf8_lossy(&no_model.stderr).contains("/no/such/model"));
}

#[test]
fn a_cut_file_is_labelled_up_to_the_cut_and_marked_damaged_unless_strict() {
    let dir = scratch_dir("label-damage");
    let mut bytes = std::fs::read(&corpus().files[0]).expect("read");
    bytes.truncate(bytes.len() * 7 / 10);
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, bytes).expect("write");
    let name = cut.display().to_string();

    let out = dir.path().join("lenient.jsonl");
    label(&[&cut], &out, &[]);
    let line = &records(&out)[&name];
    let text = line["text"].as_str().unwrap_or_default().to_lowercase();
    // "Open the door and let the cat inside.": the cut falls after "door".
    assert!(text.contains("door"), "{line}");
    let damage = line["damage"].as_str().unwrap_or_default();
    assert!(
        damage.contains(&name) && damage.contains("truncated"),
        "{line}"
    );
    assert!(line["error"].is_null());

    let strict = dir.path().join("strict.jsonl");
    // Its only file failed, so the strict run fails (its line says why).
    let run = label_command(&[&cut], &strict, &["--strict"])
        .output()
        .expect("run audiodecode");
    assert_eq!(run.status.code(), Some(1));
    let line = &records(&strict)[&name];
    assert!(line["text"].is_null() && line["damage"].is_null(), "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap_or_default()
            .contains("truncated"),
        "{line}"
    );
    // An intact file has no damage field.
    assert!(full_run().values().all(|r| r.get("damage").is_none()));
}

/// A log-probability threshold no decode can pass makes every piece fall back to sampling
/// at every higher temperature (looped speech no longer does: Note [Fallback without a
/// storm]); with each block's sampling seeded on its own (Note [Deterministic labeling
/// blocks]), two runs write the same bytes, and so does a run resumed after its first block
/// (whose generator has not drawn what the first block drew).
#[test]
fn fallback_sampling_is_reproducible_across_runs_and_resumes() {
    require_tool("espeak-ng");
    let dir = scratch_dir("label-repeat");
    let phrases = [
        "one two three four five",
        "stop here and wait",
        "the lamp is on",
    ];
    let inputs: Vec<PathBuf> = phrases
        .iter()
        .enumerate()
        .map(|(i, phrase)| {
            let path = dir.path().join(format!("loop{i}.wav"));
            let text = [*phrase; 8].join(", ");
            let ok = Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "170", "-w"])
                .arg(&path)
                .arg(&text)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "espeak-ng");
            path
        })
        .collect();
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let always_fall_back = ["--log-prob-threshold", "-0.001"];
    let runs: Vec<Vec<u8>> = (0..2)
        .map(|run| {
            let out = dir.path().join(format!("run{run}.jsonl"));
            label(&inputs, &out, &always_fall_back);
            std::fs::read(&out).expect("read")
        })
        .collect();
    let fell_back = records(&dir.path().join("run0.jsonl")).values().all(|r| {
        r["segments"].as_array().is_some_and(|segments| {
            !segments.is_empty()
                && segments
                    .iter()
                    .all(|s| s["avg_logprob"].as_f64().is_some_and(|p| p < -0.001))
        })
    });
    assert!(fell_back, "every piece should have failed the threshold");
    assert!(
        runs[0] == runs[1],
        "two runs labelled the same files differently"
    );
    // The first block (two files: `label_command` uses `--block 2`) as if the run had been
    // killed after it, then resumed with every input.
    let resumed = dir.path().join("resumed.jsonl");
    label(&inputs[..2], &resumed, &always_fall_back);
    let mut resume_args = always_fall_back.to_vec();
    resume_args.push("--resume");
    label(&inputs, &resumed, &resume_args);
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&resumed).expect("read")),
        String::from_utf8_lossy(&runs[0]),
        "a resumed run differs from the uninterrupted one"
    );
}

/// A decode that never ends (here a server that accepts the connection and never answers)
/// is abandoned at the item deadline: its line is an error naming the input and the
/// deadline, the other files are labelled, and the run ends.
#[test]
fn a_stuck_decode_is_abandoned_at_the_item_deadline() {
    let dir = scratch_dir("label-deadline");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn); // accepted, never answered
        }
    });
    let stuck = format!("http://127.0.0.1:{port}/stuck.wav");
    let out = dir.path().join("labels.jsonl");
    let started = Instant::now();
    let run = label(
        &[Path::new(&stuck), &corpus().files[1]],
        &out,
        &["--item-deadline", "3"],
    );
    assert!(run.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the run waited for the stuck input: {:?}",
        started.elapsed()
    );
    let r = records(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    let error = r[&stuck]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&stuck) && error.contains("deadline"),
        "{error}"
    );
    let text = r[&corpus().files[1].display().to_string()]["text"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(text.contains("kite"), "{text}");
}

/// `fs::copy` of a corpus file into `dir` (made if missing) as `name`.
fn copy_into(dir: &Path, name: &str, from: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let to = dir.join(name);
    std::fs::copy(from, &to).expect("copy");
    to
}

/// A manifest written outside the working directory names relative inputs relative to its
/// own directory (as manifests are read), so it can be labelled again from anywhere; and a
/// run resumed from another directory still finds its lines.
#[test]
fn a_manifest_elsewhere_names_inputs_relative_to_itself() {
    let dir = scratch_dir("label-relative");
    let root = dir.path();
    copy_into(&root.join("corpus"), "a.wav", &corpus().files[0]);
    copy_into(&root.join("corpus"), "b.wav", &corpus().files[1]);
    let run_in = |cwd: &Path, inputs: &[&str], out: &str, extra: &[&str]| {
        let inputs: Vec<&Path> = inputs.iter().map(Path::new).collect();
        succeeds(label_command(&inputs, Path::new(out), extra).current_dir(cwd));
    };
    run_in(&root.join("corpus"), &["a.wav"], "../m/labels.jsonl", &[]);
    let manifest = root.join("m/labels.jsonl");
    let first = records(&manifest);
    assert_eq!(first.keys().collect::<Vec<_>>(), ["../corpus/a.wav"]);
    assert!(first["../corpus/a.wav"]["error"].is_null());

    // Read back as a manifest from the root: every entry is found.
    run_in(root, &["m/labels.jsonl"], "again.jsonl", &[]);
    let again = records(&root.join("again.jsonl"));
    assert_eq!(again.len(), 1);
    assert!(again.values().all(|r| r["error"].is_null()), "{again:?}");

    // Resumed from the root: a.wav is not labelled twice, b.wav is added.
    run_in(
        root,
        &["corpus/a.wav", "corpus/b.wav"],
        "m/labels.jsonl",
        &["--resume"],
    );
    let resumed = records(&manifest);
    let lines = std::fs::read_to_string(&manifest)
        .expect("read")
        .lines()
        .count();
    assert_eq!(lines, 2);
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        ["../corpus/a.wav", "../corpus/b.wav"]
    );

    // A line written by an older version (relative to the working directory it ran in)
    // still matches the same input given the same way.
    let old = root.join("m/old.jsonl");
    std::fs::write(
        &old,
        "{\"audio_filepath\":\"corpus/a.wav\",\"text\":\"x\"}\n",
    )
    .expect("write");
    run_in(root, &["corpus/a.wav"], "m/old.jsonl", &["--resume"]);
    assert_eq!(
        std::fs::read_to_string(&old).expect("read").lines().count(),
        1
    );

    // A missing input's error names it absolutely; the line names it from the manifest.
    let missing = label_command(
        &[Path::new("corpus/gone.wav")],
        Path::new("m/gone.jsonl"),
        &[],
    )
    .current_dir(root)
    .output()
    .expect("run");
    assert!(!missing.status.success());
    let gone = records(&root.join("m/gone.jsonl"));
    let error = gone["../corpus/gone.wav"]["error"]
        .as_str()
        .unwrap_or_default();
    let absolute = root
        .canonicalize()
        .expect("canonical")
        .join("corpus/gone.wav");
    assert!(
        error.starts_with(&absolute.display().to_string()),
        "{error}"
    );
}

/// `--format` refuses to write over existing files, as the JSONL output does, unless
/// `--overwrite` (or `--resume`, which skips them).
#[test]
fn per_file_formats_refuse_to_overwrite_existing_files() {
    let dir = scratch_dir("label-clobber");
    let input = copy_into(dir.path(), "x.wav", &corpus().files[0]);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mine = out.join("x.txt");
    std::fs::write(&mine, "MY HAND-CORRECTED TRANSCRIPT\n").expect("write");
    let refused = label_command(&[&input], &out, &["--format", "txt"])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("x.txt") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    let kept = std::fs::read_to_string(&mine).expect("read");
    assert_eq!(kept, "MY HAND-CORRECTED TRANSCRIPT\n");
    label(&[&input], &out, &["--format", "txt", "--resume"]);
    assert_eq!(std::fs::read_to_string(&mine).expect("read"), kept);
    label(&[&input], &out, &["--format", "txt", "--overwrite"]);
    let text = std::fs::read_to_string(&mine).expect("read").to_lowercase();
    assert!(text.contains("door"), "{text}");
}

/// Each `--format` file is named after its own input (inputs sharing a stem add a hash of
/// their path), so adding an input that sorts first renames nothing and `--resume` labels
/// exactly the new one.
#[test]
fn format_names_are_stable_when_inputs_are_added() {
    let dir = scratch_dir("label-names");
    let root = dir.path().join("in");
    copy_into(&root.join("a"), "x.wav", &corpus().files[0]);
    copy_into(&root.join("b"), "x.wav", &corpus().files[1]);
    copy_into(&root.join("b"), "y.wav", &corpus().files[2]);
    let out = dir.path().join("out");
    let owners = || -> BTreeMap<String, String> {
        std::fs::read_dir(&out)
            .expect("list")
            .map(|e| {
                let path = e.expect("entry").path();
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                        .expect("json");
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    v["audio_filepath"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    label(&[&root], &out, &["--format", "json"]);
    let before = owners();
    assert_eq!(before.len(), 3);
    assert_eq!(before["y.json"], root.join("b/y.wav").display().to_string());
    copy_into(&root.join("0"), "x.wav", &corpus().files[3]);
    label(&[&root], &out, &["--format", "json", "--resume"]);
    let after = owners();
    assert_eq!(after.len(), 4, "{after:?}");
    for (name, owner) in &before {
        assert_eq!(&after[name], owner, "{name} changed hands");
    }
    let new = root.join("0/x.wav").display().to_string();
    assert_eq!(after.values().filter(|o| **o == new).count(), 1);
}

/// Options out of range are usage errors before anything is opened or loaded.
#[test]
fn bad_options_are_refused_up_front() {
    let dir = scratch_dir("label-options");
    let out = dir.path().join("labels.jsonl");
    for flags in [
        &["--patience", "0"][..],
        &["--temperature=-1"],
        &["--temperature", "0,nan"],
        &["--beam-size", "0"],
        &["--log-prob-threshold", "inf"],
        &["--vad-threshold", "0.5", "--vad-neg-threshold", "0.6"],
        &["--vad-threshold", "1.5"],
    ] {
        let run = label_command(&[&corpus().files[0]], &out, flags)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{flags:?}: {stderr}");
        // The last flag given is the one refused (`--flag=value` or `--flag value`).
        let flag = flags
            .iter()
            .rev()
            .find_map(|f| f.strip_prefix("--"))
            .and_then(|f| f.split('=').next())
            .unwrap_or_default();
        assert!(stderr.contains(&format!("--{flag}")), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} wrote an output");
    }
}

/// A run that labels none of its files exits non-zero (its error lines are written);
/// one file labelled is a success.
#[test]
fn a_run_in_which_every_file_failed_exits_non_zero() {
    let dir = scratch_dir("label-all-failed");
    let out = dir.path().join("labels.jsonl");
    let gone = [dir.path().join("a.wav"), dir.path().join("b.wav")];
    let gone: Vec<&Path> = gone.iter().map(PathBuf::as_path).collect();
    let run = label_command(&gone, &out, &[]).output().expect("run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no file was labelled"), "{stderr}");
    assert_eq!(records(&out).len(), 2);
    // Resumed with a good file: it is labelled, and the run succeeds.
    let mut inputs = gone.clone();
    inputs.push(&corpus().files[0]);
    label(&inputs, &out, &["--resume"]);
    assert_eq!(records(&out).len(), 3);
}
