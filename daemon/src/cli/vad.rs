//! `audiodecode vad`: where each file holds speech (Silero VAD), as JSON lines; and the VAD
//! options `label` shares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::cli::error::CliError;
use crate::decode::{load, LoadRequest};
use crate::vad::{check_options, speech_ranges, SpeechDetector, VadOptions};
use crate::{ChannelMode, Quality};

/// Detection runs at 16 kHz, Silero's rate.
const RATE: u32 = 16_000;

#[derive(Args, Debug)]
pub struct VadArgs {
    /// Audio files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub options: VadOptionArgs,
}

/// Silero VAD's options with faster-whisper's names; each defaults to what the command
/// says (`vad`: Silero's defaults; `label`: those of faster-whisper's batched pipeline).
#[derive(Args, Debug, Default)]
pub struct VadOptionArgs {
    /// Speech probability at or above which a 32 ms window is speech [0.5].
    #[arg(long = "vad-threshold")]
    pub threshold: Option<f32>,
    /// Probability below which speech ends [threshold − 0.15].
    #[arg(long = "vad-neg-threshold")]
    pub neg_threshold: Option<f32>,
    /// Drop speech shorter than this [0].
    #[arg(long)]
    pub min_speech_duration_ms: Option<u32>,
    /// Split speech longer than this, at a pause where possible [vad: none; label: 30].
    #[arg(long)]
    pub max_speech_duration_s: Option<f32>,
    /// Silence that ends speech [vad: 2000; label: 160].
    #[arg(long)]
    pub min_silence_duration_ms: Option<u32>,
    /// Audio kept on each side of speech [400].
    #[arg(long)]
    pub speech_pad_ms: Option<u32>,
}

impl VadOptionArgs {
    /// `base` with the options given on the command line.
    pub fn apply(&self, base: VadOptions) -> VadOptions {
        VadOptions {
            threshold: self.threshold.unwrap_or(base.threshold),
            neg_threshold: self.neg_threshold.or(base.neg_threshold),
            min_speech_duration_ms: self
                .min_speech_duration_ms
                .unwrap_or(base.min_speech_duration_ms),
            max_speech_duration_s: self.max_speech_duration_s.or(base.max_speech_duration_s),
            min_silence_duration_ms: self
                .min_silence_duration_ms
                .unwrap_or(base.min_silence_duration_ms),
            speech_pad_ms: self.speech_pad_ms.unwrap_or(base.speech_pad_ms),
        }
    }
}

/// One file's speech, as printed.
#[derive(serde::Serialize)]
struct FileSpeech<'a> {
    audio_filepath: &'a str,
    duration: f64,
    speech_seconds: f64,
    /// `[start, end]` in seconds.
    speech: Vec<[f64; 2]>,
}

pub fn run_vad(args: &VadArgs) -> ExitCode {
    match detect_all(args) {
        Ok(failed) => super::exit_code(failed),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one JSON line per file; a file that cannot be read is reported on stderr and
/// makes the exit status non-zero. Returns whether any failed.
fn detect_all(args: &VadArgs) -> Result<bool, CliError> {
    let options = args.options.apply(VadOptions::silero());
    check_options(&options).map_err(|e| CliError::Usage(e.to_string()))?;
    let detector = SpeechDetector::load().map_err(|e| CliError::Failed(e.to_string()))?;
    let mut failed = false;
    for path in &args.files {
        match file_speech(&detector, path, &options) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(failed)
}

fn file_speech(
    detector: &SpeechDetector,
    path: &Path,
    options: &VadOptions,
) -> Result<String, CliError> {
    let request = LoadRequest {
        sample_rate: Some(RATE),
        channels: ChannelMode::Mono,
        quality: Quality::Hq,
        ..LoadRequest::default()
    };
    let audio = load(path, &request, 1)?;
    let samples = audio.planes.first().map(Vec::as_slice).unwrap_or_default();
    let probabilities = detector
        .probabilities(samples)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    let ranges = speech_ranges(&probabilities, samples.len(), options);
    let seconds = |s: usize| (s as f64 / f64::from(RATE) * 1000.0).round() / 1000.0;
    let name = path.to_string_lossy();
    let line = FileSpeech {
        audio_filepath: &name,
        duration: seconds(samples.len()),
        speech_seconds: seconds(ranges.iter().map(|r| r.len()).sum()),
        speech: ranges
            .iter()
            .map(|r| [seconds(r.start), seconds(r.end)])
            .collect(),
    };
    serde_json::to_string(&line).map_err(|e| CliError::Failed(e.to_string()))
}
