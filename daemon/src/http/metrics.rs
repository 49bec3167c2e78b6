//! `GET /metrics`: Prometheus text exposition of the service's requests and the live
//! labeler's batches.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::label::live::LiveStats;

/// Requests answered, by route and status.
#[derive(Debug, Default)]
pub(super) struct RequestCounts {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl RequestCounts {
    pub(super) fn count(&self, route: &str, status: u16) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

pub(super) fn render(requests: &RequestCounts, live: &LiveStats) -> String {
    let mut out = String::new();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    out.push_str(
        "# HELP audiodecode_http_requests_total HTTP requests answered, by route and status.\n",
    );
    out.push_str("# TYPE audiodecode_http_requests_total counter\n");
    let mut errors = 0u64;
    for ((route, status), n) in requests.snapshot() {
        if status >= 400 {
            errors += n;
        }
        let _ = writeln!(
            out,
            "audiodecode_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let counters = |out: &mut String, rows: &[(&str, &str, u64)]| {
        for (name, help, value) in rows {
            counter(out, name, help, *value);
        }
    };
    counters(
        &mut out,
        &[
            (
                "audiodecode_http_errors_total",
                "HTTP requests answered with a 4xx or 5xx status.",
                errors,
            ),
            (
                "audiodecode_transcriptions_submitted_total",
                "Requests queued for the model.",
                load(&live.submitted),
            ),
            (
                "audiodecode_transcriptions_answered_total",
                "Requests answered.",
                load(&live.answered),
            ),
            (
                "audiodecode_transcriptions_failed_total",
                "Requests that failed (bad audio, too long, model error).",
                load(&live.failed),
            ),
            (
                "audiodecode_transcriptions_abandoned_total",
                "Requests whose client left before the answer.",
                load(&live.abandoned),
            ),
        ],
    );
    gauge(
        &mut out,
        "audiodecode_queue_requests",
        "Requests being decoded or waiting for the model.",
        live.in_flight.load(Ordering::Relaxed) as f64,
    );
    gauge(
        &mut out,
        "audiodecode_queue_windows",
        "30 s windows waiting for the model.",
        live.queued_windows.load(Ordering::Relaxed) as f64,
    );
    counters(
        &mut out,
        &[
            (
                "audiodecode_batches_total",
                "Model batches run.",
                load(&live.batches),
            ),
            (
                "audiodecode_batch_windows_total",
                "Windows in all batches (over batches_total: the mean batch size).",
                load(&live.batch_windows),
            ),
            (
                "audiodecode_batch_requests_total",
                "Requests in all batches (over batches_total: requests batched together).",
                load(&live.batch_requests),
            ),
        ],
    );
    out.push_str("# HELP audiodecode_batch_requests Requests per model batch.\n");
    out.push_str("# TYPE audiodecode_batch_requests histogram\n");
    let mut cumulative = 0u64;
    for (bound, bucket) in LiveStats::BATCH_REQUEST_BOUNDS
        .iter()
        .zip(&live.batch_request_buckets)
    {
        cumulative += load(bucket);
        let _ = writeln!(
            out,
            "audiodecode_batch_requests_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "audiodecode_batch_requests_sum {}",
        load(&live.batch_requests)
    );
    let _ = writeln!(
        out,
        "audiodecode_batch_requests_count {}",
        load(&live.batches)
    );
    let audio = load(&live.audio_micros) as f64 / 1e6;
    let model = load(&live.model_micros) as f64 / 1e6;
    counter_f(
        &mut out,
        "audiodecode_audio_seconds_total",
        "Seconds of audio answered.",
        audio,
    );
    counter_f(
        &mut out,
        "audiodecode_model_seconds_total",
        "Seconds the model spent on batches.",
        model,
    );
    let rtf = if audio > 0.0 { model / audio } else { 0.0 };
    gauge(
        &mut out,
        "audiodecode_real_time_factor",
        "Model seconds per second of audio answered (below 1 is faster than real time).",
        rtf,
    );
    out
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    );
}

fn counter_f(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value:.3}\n"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    );
}
