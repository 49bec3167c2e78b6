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
use crate::decode::{load, probe_info, ChannelMode, DecodedAudio, LoadRequest};
use crate::feed::manifest::{self, AUDIO_EXTENSIONS};

#[derive(Args, Debug)]
pub struct ShardArgs {
    /// Audio files, directories (classes from their first level), JSONL/CSV manifests (a
    /// labeling manifest's `text` becomes each sample's `.txt`), or URLs of any of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the shards.
    #[arg(long)]
    pub out: PathBuf,
    /// Shard format (WebDataset tar shards).
    #[arg(long, default_value = "webdataset", value_parser = ["webdataset"])]
    pub format: String,
    /// Shard names: NAME-000000.tar, NAME-000001.tar, …
    #[arg(long, default_value = "shard")]
    pub name: String,
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

/// One prepared sample, ready to append.
struct Sample {
    members: Vec<(String, Vec<u8>)>,
}

impl Sample {
    fn bytes(&self) -> u64 {
        self.members
            .iter()
            .map(|(_, data)| 512 + (data.len() as u64).div_ceil(512) * 512)
            .sum()
    }
}

pub fn run_shard(args: &ShardArgs) -> ExitCode {
    match shard(args) {
        Ok(failed) => crate::cli::exit_code(failed),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn shard(args: &ShardArgs) -> Result<bool, CliError> {
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
    let rows = rows_of(&args.inputs, args.label_field.as_deref())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Failed(format!("{}: {e}", args.out.display())))?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = files_progress(rows.len(), args.quiet || rows.len() < 2);
    let mut writer = ShardWriter::new(&args.out, &args.name, args.shard_size);
    let mut failed = 0usize;
    // Prepared in parallel a chunk at a time, written in input order.
    let chunk = (jobs * 16).max(1);
    for (chunk_no, rows) in rows.chunks(chunk).enumerate() {
        let prepared = prepare_all(rows, chunk_no * chunk, codec, args, jobs);
        for (row, sample) in rows.iter().zip(prepared) {
            match sample {
                Ok(sample) => writer
                    .append(&sample)
                    .map_err(|e| CliError::Failed(format!("{}: {e}", args.out.display())))?,
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
        .map_err(|e| CliError::Failed(format!("{}: {e}", args.out.display())))?;
    progress.finish_and_clear();
    if !args.quiet {
        let packed = rows.len() - failed;
        let pattern = match shards {
            0 => String::from("(no shards)"),
            1 => args
                .out
                .join(format!("{}-000000.tar", args.name))
                .display()
                .to_string(),
            n => args
                .out
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
        let ext = input
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
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
    let (ext, audio, duration) = match codec {
        Codec::Copy => {
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
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
            (ext, read_bytes(&row.path)?, info.duration)
        }
        Codec::Flac | Codec::Wav => {
            let request = LoadRequest {
                sample_rate: args.sample_rate,
                channels: ChannelMode::from_mono(args.mono),
                ..LoadRequest::default()
            };
            let audio = load(path, &request, 1)?;
            let encoded = if codec == Codec::Flac {
                ("flac".to_string(), encode_flac(&audio, &row.path)?)
            } else {
                ("wav".to_string(), encode_wav(&audio, &row.path)?)
            };
            (encoded.0, encoded.1, Some(audio.duration()))
        }
    };
    let mut members = vec![(format!("{key}.{ext}"), audio)];
    if row.label >= 0 {
        members.push((format!("{key}.cls"), row.label.to_string().into_bytes()));
    }
    if let Some(text) = &row.text {
        members.push((format!("{key}.txt"), text.clone().into_bytes()));
    }
    let meta = serde_json::json!({
        "audio_filepath": row.path,
        "label": row.class.clone().map_or_else(
            || if row.label >= 0 { serde_json::json!(row.label) } else { serde_json::Value::Null },
            serde_json::Value::from,
        ),
        "text": row.text,
        "duration": duration,
    });
    members.push((format!("{key}.json"), meta.to_string().into_bytes()));
    Ok(Sample { members })
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

/// Shards written in sequence, each under a temporary name until it is complete.
struct ShardWriter {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    count: usize,
    open: Option<(tar::Builder<BufWriter<File>>, PathBuf, PathBuf)>,
    bytes: u64,
}

impl ShardWriter {
    fn new(dir: &Path, name: &str, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            max_bytes,
            count: 0,
            open: None,
            bytes: 0,
        }
    }

    fn append(&mut self, sample: &Sample) -> std::io::Result<()> {
        let size = sample.bytes();
        if self.open.is_some() && self.bytes + size > self.max_bytes {
            self.close()?;
        }
        if self.open.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:06}.tar", self.name, self.count));
            let partial = path.with_extension("tar.partial");
            let file = BufWriter::new(File::create(&partial)?);
            self.open = Some((tar::Builder::new(file), partial, path));
            self.count += 1;
            self.bytes = 0;
        }
        if let Some((builder, _, _)) = self.open.as_mut() {
            for (name, data) in &sample.members {
                let mut header = tar::Header::new_ustar();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, name, data.as_slice())?;
            }
        }
        self.bytes += size;
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some((builder, partial, path)) = self.open.take() {
            let mut file = builder.into_inner()?;
            file.flush()?;
            file.get_ref().sync_all()?;
            std::fs::rename(partial, path)?;
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
