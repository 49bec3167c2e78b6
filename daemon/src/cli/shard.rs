//! `audiodecode shard`: pack a dataset (files, directories, manifests — a labeling manifest's
//! transcripts included — local or remote) into WebDataset tar shards the loader streams:
//! label → shard → train. Each sample is `KEY.EXT` (the audio: the original bytes, or
//! re-encoded at `--sr` as FLAC or WAV), `KEY.cls` (an integer label), `KEY.txt` (a
//! transcript) and `KEY.json` (the source path, label name, text, duration). Shards are
//! written under a temporary name and renamed when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use audiodecode_protocol::Dataset;
use clap::Args;

use crate::cli::error::CliError;
use crate::cli::progress::files_progress;
use crate::decode::AUDIO_EXTENSIONS;
use crate::decode::{load, probe_info, ChannelMode, DecodedAudio, LoadRequest};
use crate::feed::manifest;

#[derive(Args, Clone, Debug)]
pub struct ShardArgs {
    /// Audio files, directories (classes from their first level), JSONL/CSV manifests (a
    /// labeling manifest's `text` becomes each sample's `.txt`), or URLs of any of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the shards.
    #[arg(long, required_unless_present = "index")]
    pub out: Option<PathBuf>,
    /// Only write index sidecars (`.audiodecode-index/SHARD.idx`) for the tar files given
    /// (paths, URLs, brace patterns), e.g. shards written by webdataset's ShardWriter: a
    /// remote shard with one is read member by member with ranged GETs instead of being
    /// fetched whole. A remote tar is streamed once (never held) and its sidecar written
    /// beside it in the store.
    #[arg(long, conflicts_with_all = ["out", "sample_rate", "codec"])]
    pub index: bool,
    /// Shard format: WebDataset tar shards (NAME-000000.tar, …), or Lhotse Shar
    /// (cuts.000000.jsonl.gz with recording.000000.tar, …).
    #[arg(long, default_value = "webdataset", value_parser = ["webdataset", "shar"])]
    pub format: String,
    /// WebDataset shard names: NAME-000000.tar, NAME-000001.tar, …
    #[arg(long, default_value = "shard")]
    pub name: String,
    /// Replace the shards an earlier run left in --out (without it, such a directory is
    /// refused: a pattern or glob over it would mix two datasets).
    #[arg(long)]
    pub overwrite: bool,
    /// Start a new shard once one holds this much (e.g. 1GB, 256MB, 5000000).
    #[arg(long, default_value = "1GB", value_parser = parse_size)]
    pub shard_size: u64,
    /// Re-encode the audio at this rate (default: the original bytes are stored).
    #[arg(long = "sr")]
    pub sample_rate: Option<u32>,
    /// How the audio is stored: `copy` (the original file), `flac` (16-bit) or `wav`
    /// (32-bit float). Default: copy, or flac with --sr.
    #[arg(long, value_parser = ["copy", "flac", "wav"])]
    pub codec: Option<String>,
    /// Average channels into one when re-encoding.
    #[arg(long)]
    pub mono: bool,
    /// Manifest field holding the label (default `label`; `text` for transcripts).
    #[arg(long)]
    pub label_field: Option<String>,
    /// Files prepared at once (default: all cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// No progress bar or summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `1GB`, `256MB`, `64KiB`, `5000000` → bytes.
fn parse_size(s: &str) -> Result<u64, CliError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(CliError::Usage(format!("shard size {s:?}: unknown unit"))),
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && (n * scale).is_finite() => Ok((n * scale) as u64),
        _ => Err(CliError::Usage(format!(
            "shard size {s:?}: a positive size, e.g. 1GB"
        ))),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Copy,
    Flac,
    Wav,
}

/// One input row: where the audio is and what labels it.
struct Row {
    path: String,
    label: i64,
    class: Option<String>,
    text: Option<String>,
}

/// One prepared sample: its audio as stored and what describes it.
struct Sample {
    key: String,
    ext: String,
    audio: Vec<u8>,
    source: String,
    label: i64,
    class: Option<String>,
    text: Option<String>,
    sample_rate: u32,
    frames: Option<u64>,
    channels: u16,
}

impl Sample {
    fn duration(&self) -> Option<f64> {
        self.frames
            .map(|f| f as f64 / f64::from(self.sample_rate.max(1)))
    }

    /// WebDataset members: the audio, `.cls`, `.txt`, and `.json` metadata.
    fn webdataset_members(&self) -> Vec<(String, Vec<u8>)> {
        let key = &self.key;
        let mut members = vec![(format!("{key}.{}", self.ext), self.audio.clone())];
        if self.label >= 0 {
            members.push((format!("{key}.cls"), self.label.to_string().into_bytes()));
        }
        if let Some(text) = &self.text {
            members.push((format!("{key}.txt"), text.clone().into_bytes()));
        }
        let meta = serde_json::json!({
            "audio_filepath": self.source,
            "label": self.label_value(),
            "text": self.text,
            "duration": self.duration(),
        });
        members.push((format!("{key}.json"), meta.to_string().into_bytes()));
        members
    }

    fn label_value(&self) -> serde_json::Value {
        match (&self.class, self.label) {
            (Some(class), _) => serde_json::Value::from(class.clone()),
            (None, label) if label >= 0 => serde_json::Value::from(label),
            _ => serde_json::Value::Null,
        }
    }

    /// The Lhotse recording (for the tar) and cut (for the JSONL) of a Shar sample, as
    /// lhotse's `to_shar` writes them: the audio is the cut's own, from 0.
    fn shar_manifests(&self) -> (serde_json::Value, serde_json::Value) {
        let frames = self.frames.unwrap_or(0);
        let duration = self.duration().unwrap_or(0.0);
        let channels: Vec<u16> = (0..self.channels.max(1)).collect();
        let recording = serde_json::json!({
            "id": self.key,
            "sources": [{"type": "shar", "channels": channels, "source": ""}],
            "sampling_rate": self.sample_rate,
            "num_samples": frames,
            "duration": duration,
            "channel_ids": channels,
        });
        let mut cut = serde_json::json!({
            "id": self.key,
            "start": 0,
            "duration": duration,
            "channel": if channels.len() == 1 { serde_json::json!(0) } else { serde_json::json!(channels) },
            "supervisions": [],
            "recording": recording,
            "type": if channels.len() == 1 { "MonoCut" } else { "MultiCut" },
            "custom": {"audio_filepath": self.source},
        });
        if let Some(text) = &self.text {
            cut["supervisions"] = serde_json::json!([{
                "id": self.key,
                "recording_id": self.key,
                "start": 0,
                "duration": duration,
                "channel": 0,
                "text": text,
            }]);
        }
        let label = self.label_value();
        if !label.is_null() {
            cut["custom"]["label"] = label;
        }
        (recording, cut)
    }
}

/// The files a run into `out` writes (either format) that are there already, with their
/// index sidecars: `NAME-*.tar`, `cuts.*.jsonl.gz`, `recording.*.tar`.
fn earlier_shards(out: &Path, name: &str) -> Vec<PathBuf> {
    let ours = |file: &str| {
        let tar = file
            .strip_prefix(&format!("{name}-"))
            .is_some_and(|r| r.ends_with(".tar"));
        let shar = (file.starts_with("cuts.") && file.ends_with(".jsonl.gz"))
            || (file.starts_with("recording.") && file.ends_with(".tar"));
        tar || shar
    };
    let mut found = Vec::new();
    for dir in [out.to_path_buf(), out.join(".audiodecode-index")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if ours(file.strip_suffix(".idx").unwrap_or(&file)) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Bytes a member takes in a tar: a header and the data padded to 512.
fn tar_bytes(data: usize) -> u64 {
    512 + (data as u64).div_ceil(512) * 512
}

pub fn run_shard(args: &ShardArgs) -> ExitCode {
    // `file:` URLs read as the local paths they name, like every other path taken.
    let inputs: Result<Vec<PathBuf>, _> = args
        .inputs
        .iter()
        .map(|input| match input.to_str() {
            Some(text) if crate::store::is_file_url(text) => {
                manifest::local_form(text).map(PathBuf::from)
            }
            _ => Ok(input.clone()),
        })
        .collect();
    let args = &match inputs {
        Ok(inputs) => ShardArgs {
            inputs,
            ..args.clone()
        },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match &args.out {
        _ if args.index => index_tars(
            &args.inputs,
            args.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }),
        ),
        Some(out) => shard(args, out),
        None => Err(CliError::Usage(
            "--out DIR is needed to write shards".into(),
        )),
    };
    match outcome {
        Ok(failed) => crate::cli::exit_code(failed),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--index`: a sidecar beside each tar (brace patterns expanded, local or remote),
/// `jobs` at once; a tar that cannot be read is reported and the others still get theirs.
fn index_tars(inputs: &[PathBuf], jobs: usize) -> Result<bool, CliError> {
    let mut tars = Vec::new();
    for input in inputs {
        let input = input.to_string_lossy();
        tars.extend(
            crate::feed::webdataset::expand_braces(&input)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        );
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, tars.len().max(1)) {
            scope.spawn(|| {
                while let Some(tar) = tars.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = crate::store::tar::write_sidecar(tar) {
                        eprintln!("error: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(failed.into_inner() > 0)
}

fn shard(args: &ShardArgs, out: &Path) -> Result<bool, CliError> {
    let codec = match (args.codec.as_deref(), args.sample_rate) {
        (Some("copy"), Some(_)) => {
            return Err(CliError::Usage(
                "--sr re-encodes: use --codec flac or wav".into(),
            ))
        }
        (Some("copy"), None) | (None, None) => Codec::Copy,
        (Some("wav"), _) => Codec::Wav,
        _ => Codec::Flac,
    };
    if args.name.is_empty() || args.name.contains('/') {
        return Err(CliError::Usage(format!(
            "--name {:?}: a plain file name",
            args.name
        )));
    }
    if crate::store::is_url(&out.to_string_lossy()) {
        return Err(CliError::Usage(format!(
            "--out {}: shards are written to a local directory; copy them to the store \
             afterwards (e.g. `aws s3 cp --recursive`)",
            out.display()
        )));
    }
    let earlier = earlier_shards(out, &args.name);
    if let Some(first) = earlier.first() {
        if !args.overwrite {
            return Err(CliError::Usage(format!(
                "{}: holds shards of an earlier run ({} files, e.g. {}); use --overwrite to \
                 replace them, or another --out",
                out.display(),
                earlier.len(),
                first.display()
            )));
        }
    }
    let rows = rows_of(&args.inputs, args.label_field.as_deref())?;
    for old in &earlier {
        std::fs::remove_file(old)
            .map_err(|e| CliError::Failed(format!("{}: {e}", old.display())))?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = files_progress(rows.len(), args.quiet || rows.len() < 2);
    let shar = args.format == "shar";
    let mut writer = ShardWriter::new(out, &args.name, shar, args.shard_size);
    let mut failed = 0usize;
    // Prepared in parallel a chunk at a time, written in input order.
    let chunk = (jobs * 16).max(1);
    for (chunk_no, rows) in rows.chunks(chunk).enumerate() {
        let prepared = prepare_all(rows, chunk_no * chunk, codec, args, jobs);
        for (row, sample) in rows.iter().zip(prepared) {
            match sample {
                Ok(sample) => writer
                    .append(&sample)
                    .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?,
                Err(e) => {
                    progress.suspend(|| eprintln!("error: {e}"));
                    let _ = row;
                    failed += 1;
                }
            }
            progress.inc(1);
        }
    }
    let shards = writer
        .finish()
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    progress.finish_and_clear();
    if !args.quiet {
        let packed = rows.len() - failed;
        let pattern = match shards {
            0 => String::from("(no shards)"),
            _ if shar => format!("{} (Lhotse Shar)", out.display()),
            1 => out
                .join(format!("{}-000000.tar", args.name))
                .display()
                .to_string(),
            n => out
                .join(format!("{}-{{000000..{:06}}}.tar", args.name, n - 1))
                .display()
                .to_string(),
        };
        eprintln!(
            "packed {packed} of {} files into {shards} shards: {pattern}",
            rows.len()
        );
    }
    Ok(failed > 0)
}

/// Every input as rows, in order; string labels keep their class names.
fn rows_of(inputs: &[PathBuf], label_field: Option<&str>) -> Result<Vec<Row>, CliError> {
    let mut rows = Vec::new();
    for input in inputs {
        let text = input.to_string_lossy().into_owned();
        let remote_dir = crate::store::is_url(&text) && text.ends_with('/');
        let ext = crate::store::extension_of(input);
        let dataset = if remote_dir || input.is_dir() {
            Some(Dataset::Directory { path: text.clone() })
        } else if matches!(ext.as_deref(), Some("jsonl" | "json" | "csv" | "tsv")) {
            Some(Dataset::Manifest {
                path: text.clone(),
                label_field: label_field.map(str::to_string),
            })
        } else {
            None
        };
        match dataset {
            Some(dataset) => {
                let resolved =
                    manifest::resolve(&dataset).map_err(|e| CliError::Usage(e.to_string()))?;
                for item in resolved.items {
                    let class = usize::try_from(item.label)
                        .ok()
                        .and_then(|i| resolved.classes.get(i).cloned());
                    rows.push(Row {
                        path: item.path,
                        label: item.label,
                        class,
                        text: item.text,
                    });
                }
            }
            None => rows.push(Row {
                path: text,
                label: -1,
                class: None,
                text: None,
            }),
        }
    }
    Ok(rows)
}

fn prepare_all(
    rows: &[Row],
    first: usize,
    codec: Codec,
    args: &ShardArgs,
    jobs: usize,
) -> Vec<Result<Sample, CliError>> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Sample, CliError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.min(rows.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(row) = rows.get(i) else { break };
                        out.push((i, prepare(row, first + i, codec, args)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The sample's members: audio, then label, text and metadata.
fn prepare(row: &Row, n: usize, codec: Codec, args: &ShardArgs) -> Result<Sample, CliError> {
    let path = Path::new(&row.path);
    let key = format!("{n:09}");
    let (ext, audio, sample_rate, frames, channels) = match codec {
        Codec::Copy => {
            let ext = crate::store::extension_of(path)
                .filter(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{}: no audio extension to store it under; re-encode it with \
                         --codec flac",
                        row.path
                    ))
                })?;
            // Checked readable now, not found broken in training.
            let info = probe_info(path)?;
            let bytes = read_bytes(&row.path)?;
            (ext, bytes, info.sample_rate, info.frames, info.channels)
        }
        Codec::Flac | Codec::Wav => {
            let request = LoadRequest {
                sample_rate: args.sample_rate,
                channels: ChannelMode::from_mono(args.mono),
                ..LoadRequest::default()
            };
            let audio = load(path, &request, 1)?;
            let (ext, bytes) = if codec == Codec::Flac {
                ("flac".to_string(), encode_flac(&audio, &row.path)?)
            } else {
                ("wav".to_string(), encode_wav(&audio, &row.path)?)
            };
            let channels = u16::try_from(audio.channels()).unwrap_or(u16::MAX);
            (
                ext,
                bytes,
                audio.sample_rate,
                Some(audio.frames() as u64),
                channels,
            )
        }
    };
    Ok(Sample {
        key,
        ext,
        audio,
        source: row.path.clone(),
        label: row.label,
        class: row.class.clone(),
        text: row.text.clone(),
        sample_rate,
        frames,
        channels,
    })
}

fn read_bytes(path: &str) -> Result<Vec<u8>, CliError> {
    match crate::store::url_of(Path::new(path)) {
        Some(url) => crate::store::read(url).map_err(|e| CliError::Decode(e.into())),
        None => std::fs::read(path)
            .map_err(|e| CliError::Decode(crate::error::DecodeError::open(Path::new(path), e))),
    }
}

/// 16-bit FLAC (flacenc, pure Rust); samples past full scale are clipped.
fn encode_flac(audio: &DecodedAudio, path: &str) -> Result<Vec<u8>, CliError> {
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let failed = |why: String| CliError::Failed(format!("{path}: cannot encode FLAC: {why}"));
    let channels = audio.channels();
    let frames = audio.frames();
    let mut interleaved = Vec::with_capacity(frames * channels);
    for t in 0..frames {
        for plane in &audio.planes {
            interleaved.push((plane[t] * 32768.0).round().clamp(-32768.0, 32767.0) as i32);
        }
    }
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| failed(format!("{e:?}")))?;
    let source = flacenc::source::MemSource::from_samples(
        &interleaved,
        channels,
        16,
        audio.sample_rate as usize,
    );
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| failed(format!("{e:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| failed(format!("{e:?}")))?;
    Ok(sink.as_slice().to_vec())
}

fn encode_wav(audio: &DecodedAudio, path: &str) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    crate::cli::output::write_wav(&mut bytes, audio)
        .map_err(|e| CliError::Failed(format!("{path}: cannot encode WAV: {e}")))?;
    Ok(bytes)
}

/// One open tar, written under a temporary name until it is complete.
struct OpenTar {
    builder: tar::Builder<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
    /// Write its index sidecar (WebDataset shards; not Lhotse Shar, whose reader takes
    /// anything else in its directory for a field's shard).
    sidecar: bool,
}

impl OpenTar {
    fn create(path: PathBuf, sidecar: bool) -> std::io::Result<Self> {
        let partial = path.with_extension("tar.partial");
        let file = BufWriter::new(File::create(&partial)?);
        Ok(Self {
            builder: tar::Builder::new(file),
            partial,
            path,
            sidecar,
        })
    }

    fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder.append_data(&mut header, name, data)
    }

    /// Completes the tar, and writes its index sidecar (Note [Shard index sidecars]).
    fn close(self) -> std::io::Result<()> {
        let mut file = self.builder.into_inner()?;
        file.flush()?;
        file.get_ref().sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        if self.sidecar {
            crate::store::tar::write_sidecar(&self.path.to_string_lossy())
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// A Shar shard's other half: the cuts, gzip-compressed JSONL.
struct OpenCuts {
    encoder: flate2::write::GzEncoder<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
}

impl OpenCuts {
    fn create(path: PathBuf) -> std::io::Result<Self> {
        let partial = path.with_extension("gz.partial");
        let file = BufWriter::new(File::create(&partial)?);
        Ok(Self {
            encoder: flate2::write::GzEncoder::new(file, flate2::Compression::default()),
            partial,
            path,
        })
    }

    fn close(self) -> std::io::Result<()> {
        let mut file = self.encoder.finish()?;
        file.flush()?;
        file.get_ref().sync_all()?;
        std::fs::rename(self.partial, self.path)
    }
}

/// Shards written in sequence: WebDataset tars, or Shar's tar and cuts side by side (a new
/// pair at the same sample, so they stay in lockstep).
struct ShardWriter {
    dir: PathBuf,
    name: String,
    shar: bool,
    max_bytes: u64,
    count: usize,
    open: Option<(OpenTar, Option<OpenCuts>)>,
    bytes: u64,
}

impl ShardWriter {
    fn new(dir: &Path, name: &str, shar: bool, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            shar,
            max_bytes,
            count: 0,
            open: None,
            bytes: 0,
        }
    }

    fn append(&mut self, sample: &Sample) -> std::io::Result<()> {
        let (members, cut) = if self.shar {
            let (recording, cut) = sample.shar_manifests();
            let members = vec![
                (
                    format!("{}.{}", sample.key, sample.ext),
                    sample.audio.clone(),
                ),
                (
                    format!("{}.json", sample.key),
                    recording.to_string().into_bytes(),
                ),
            ];
            (members, Some(cut))
        } else {
            (sample.webdataset_members(), None)
        };
        let size: u64 = members.iter().map(|(_, data)| tar_bytes(data.len())).sum();
        if self.open.is_some() && self.bytes + size > self.max_bytes {
            self.close()?;
        }
        if self.open.is_none() {
            let n = self.count;
            self.open = Some(if self.shar {
                (
                    OpenTar::create(self.dir.join(format!("recording.{n:06}.tar")), false)?,
                    Some(OpenCuts::create(
                        self.dir.join(format!("cuts.{n:06}.jsonl.gz")),
                    )?),
                )
            } else {
                (
                    OpenTar::create(self.dir.join(format!("{}-{n:06}.tar", self.name)), true)?,
                    None,
                )
            });
            self.count += 1;
            self.bytes = 0;
        }
        if let Some((tar, cuts)) = self.open.as_mut() {
            for (name, data) in &members {
                tar.add(name, data)?;
            }
            if let (Some(cuts), Some(cut)) = (cuts.as_mut(), cut) {
                writeln!(cuts.encoder, "{cut}")?;
            }
        }
        self.bytes += size;
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some((tar, cuts)) = self.open.take() {
            tar.close()?;
            if let Some(cuts) = cuts {
                cuts.close()?;
            }
        }
        Ok(())
    }

    /// Close the last shard; the number of shards written.
    fn finish(mut self) -> std::io::Result<usize> {
        self.close()?;
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("256MB").unwrap(), 256_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("5000").unwrap(), 5000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 parsec").is_err());
    }
}
