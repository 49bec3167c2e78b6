//! `audiodecode label --ray [ADDRESS]`: the same labeling on a Ray cluster, run by the Python
//! package's `audiodecode.ray` (Ray Data schedules the actors; each owns a daemon with the
//! model loaded once). This command only hands its inputs and options over.

use std::process::{Command, ExitCode};

use audiodecode_protocol::TranscribeOptions;

use crate::cli::label::{LabelArgs, AUTO_LANGUAGE};

/// The Python that runs `audiodecode.ray` (default `python3`).
const PYTHON_ENV: &str = "AUDIODECODE_PYTHON";

pub fn run_on_ray(args: &LabelArgs, address: &str) -> ExitCode {
    if let Err(message) = only_forwarded_options(args) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "audiodecode.ray", "label"])
        .args(&args.inputs)
        .arg("--out")
        .arg(&args.out)
        .args(["--model", &args.model.model, "--device", &args.model.device])
        .args(["--compute-type", &args.model.compute_type])
        .args(["--beam-size", &args.beam_size.to_string()]);
    if args.language != AUTO_LANGUAGE {
        cmd.args(["--language", &args.language]);
    }
    if !address.is_empty() {
        cmd.args(["--address", address]);
    }
    if args.resume {
        cmd.arg("--resume");
    }
    if args.overwrite {
        cmd.arg("--overwrite");
    }
    // The actors' daemons are this binary.
    if let Ok(exe) = std::env::current_exe() {
        cmd.env("AUDIODECODE_BIN", exe);
    }
    match cmd.status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!(
                "error: --ray runs `{python} -m audiodecode.ray` (pip install \
                 'audiodecode[ray]'; ${PYTHON_ENV} picks the Python): {e}"
            );
            ExitCode::FAILURE
        }
    }
}

/// `audiodecode.ray` takes the model, device, compute type, language and beam size; any
/// other decoding option set here would be silently lost, so it is refused.
fn only_forwarded_options(args: &LabelArgs) -> Result<(), String> {
    let asked = args.options();
    let forwarded = TranscribeOptions {
        language: asked.language.clone(),
        beam_size: asked.beam_size,
        // Local resources; the cluster's actors size their own.
        threads: asked.threads,
        batch_size: asked.batch_size,
        ..args.model.options()
    };
    if asked != forwarded {
        return Err(
            "--ray passes --model, --device, --compute-type, --language and --beam-size to \
             the cluster; other decoding options are not supported with --ray yet"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn label_args(flags: &[&str]) -> Result<Box<LabelArgs>, clap::Error> {
        let argv = [&["audiodecode", "label", "a.wav", "-o", "out.jsonl"], flags].concat();
        match Cli::try_parse_from(argv)?.command {
            Command::Label(args) => Ok(args),
            _ => panic!("not the label command"),
        }
    }

    #[test]
    fn ray_takes_an_optional_address_and_refuses_what_it_cannot_forward() {
        let local = label_args(&["--ray"]).expect("parses");
        assert_eq!(local.ray.as_deref(), Some(""));
        // `--ray=ADDRESS`: a bare `--ray` never swallows the next argument.
        let remote = label_args(&["--ray=10.0.0.1:6379", "--language", "de"]).expect("parses");
        assert_eq!(remote.ray.as_deref(), Some("10.0.0.1:6379"));
        assert!(only_forwarded_options(&remote).is_ok());
        let sizes = label_args(&["--ray", "--threads", "4", "--batch-size", "2"]).expect("parses");
        assert!(only_forwarded_options(&sizes).is_ok());
        let words = label_args(&["--ray", "--word-timestamps"]).expect("parses");
        assert!(only_forwarded_options(&words).is_err());
        assert!(label_args(&["--ray", "--format", "srt"]).is_err());
        let argv = ["audiodecode", "label", "--ray", "b.wav", "-o", "out.jsonl"];
        let Command::Label(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("not the label command");
        };
        assert_eq!((args.ray.as_deref(), args.inputs.len()), (Some(""), 1));
    }
}
