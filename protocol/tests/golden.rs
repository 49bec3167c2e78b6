//! Golden byte vectors: one file per message, written by this test (with
//! `AUDIODECODE_WRITE_GOLDEN=1`) and checked by both this test and the Python codec's tests,
//! so the two implementations cannot drift apart.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.

use std::path::PathBuf;

use audiodecode_protocol::ring::RingGeometry;
use audiodecode_protocol::*;

fn stream_spec() -> StreamSpec {
    StreamSpec {
        dataset: Dataset::Files {
            paths: vec!["/data/a.wav".into(), "/data/b é.flac".into()],
            labels: Some(vec![0, -3]),
        },
        sample_rate: 16000,
        mono: true,
        channels: 1,
        batch_size: 32,
        max_seconds: Some(2.5),
        crop: CropMode::Random,
        pad_to_max: false,
        shuffle: true,
        seed: 0x0123_4567_89ab_cdef,
        epoch: 3,
        start_batch: 5,
        rank: 1,
        world_size: 4,
        drop_last: false,
        on_error: OnError::Raise,
        quality: Quality::Hq,
        prefetch: 0,
        cache: true,
        max_batch_seconds: None,
        augment: vec![
            Augment::Gain {
                min_db: -6.0,
                max_db: 6.0,
                p: 1.0,
            },
            Augment::Noise {
                min_snr_db: 5.0,
                max_snr_db: 20.0,
                noise: Some(Dataset::Directory {
                    path: "/noise".into(),
                }),
                p: 0.5,
            },
            Augment::Speed {
                factors: vec![0.9, 1.0, 1.1],
                p: 1.0,
            },
            Augment::Shift {
                max_seconds: 0.25,
                p: 0.3,
            },
            Augment::Reverb {
                rirs: Dataset::Manifest {
                    path: "/rir.jsonl".into(),
                    label_field: None,
                },
                p: 0.3,
            },
        ],
        strict: false,
        downmix: Downmix::Mean,
    }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let spec = stream_spec();
    let requests = vec![
        (
            "req_hello",
            Request::Hello {
                version: PROTOCOL_VERSION,
                client_pid: 4242,
            },
        ),
        ("req_open_stream", Request::OpenStream(spec)),
        (
            "req_open_manifest",
            Request::OpenStream(StreamSpec {
                dataset: Dataset::Manifest {
                    path: "/m.jsonl".into(),
                    label_field: Some("text".into()),
                },
                sample_rate: 8000,
                mono: false,
                channels: 2,
                batch_size: 1,
                max_seconds: None,
                crop: CropMode::Start,
                pad_to_max: true,
                shuffle: false,
                seed: 0,
                epoch: 0,
                start_batch: 0,
                rank: 0,
                world_size: 1,
                drop_last: true,
                on_error: OnError::Skip,
                quality: Quality::Vhq,
                prefetch: 3,
                cache: false,
                max_batch_seconds: Some(120.5),
                augment: vec![],
                strict: true,
                downmix: Downmix::Itu,
            }),
        ),
        (
            "req_open_directory",
            Request::OpenStream(StreamSpec {
                dataset: Dataset::Directory { path: "/d".into() },
                quality: Quality::Fast,
                ..stream_spec()
            }),
        ),
        (
            "req_open_shards",
            Request::OpenStream(StreamSpec {
                dataset: Dataset::Shards {
                    format: "webdataset".into(),
                    sources: vec!["s3://b/s-{0..1}.tar".into()],
                    label_field: Some("cls".into()),
                },
                ..stream_spec()
            }),
        ),
        (
            "req_release",
            Request::Release {
                stream: 2,
                released: 7,
            },
        ),
        ("req_close", Request::CloseStream { stream: 2 }),
        (
            "req_load",
            Request::Load(LoadSpec {
                path: "/x.mp3".into(),
                sample_rate: None,
                mono: false,
                offset: 1.25,
                duration: Some(0.5),
                quality: Quality::Fast,
                strict: true,
                downmix: Downmix::Itu,
            }),
        ),
        ("req_status", Request::Status),
        ("req_shutdown", Request::Shutdown),
        (
            "req_transcribe",
            Request::Transcribe(TranscribeSpec {
                paths: vec!["/data/a.wav".into(), "/data/b é.flac".into()],
                options: TranscribeOptions {
                    language: Some("de".into()),
                    hotwords: Some("AudioDecode".into()),
                    word_timestamps: true,
                    ..TranscribeOptions::default()
                },
            }),
        ),
    ];
    let responses = vec![
        (
            "resp_hello",
            Response::Hello {
                version: PROTOCOL_VERSION,
                daemon_pid: 99,
            },
        ),
        (
            "resp_stream_opened",
            Response::StreamOpened(StreamInfo {
                stream: 1,
                shm_name: "/audiodecode-0-1-abc".into(),
                ring: RingGeometry::new(3, 4, 1, 16000, 16000),
                batches_per_epoch: 10,
                items: vec![
                    ItemInfo {
                        path: "/a.wav".into(),
                        label: 1,
                        text: None,
                    },
                    ItemInfo {
                        path: "/b.wav".into(),
                        label: -1,
                        text: Some("hello".into()),
                    },
                ],
                classes: vec!["cat".into(), "dog".into()],
            }),
        ),
        (
            "resp_batch_ready",
            Response::BatchReady {
                stream: 1,
                slot: 2,
                seq: 9,
            },
        ),
        (
            "resp_end_of_epoch",
            Response::EndOfEpoch {
                stream: 1,
                skipped: vec![SkippedItem {
                    index: 4,
                    path: "/bad.mp3".into(),
                    message: "/bad.mp3: corrupt".into(),
                }],
                damaged: vec![SkippedItem {
                    index: 7,
                    path: "/cut.flac".into(),
                    message: "/cut.flac: truncated: audio ends at 1.500 s".into(),
                }],
            },
        ),
        (
            "resp_stream_failed",
            Response::StreamFailed {
                stream: 1,
                error: ErrorInfo {
                    kind: ErrorKind::Corrupt,
                    path: Some("/bad.mp3".into()),
                    message: "m".into(),
                },
            },
        ),
        (
            "resp_loaded",
            Response::Loaded(LoadedAudio {
                sample_rate: 16000,
                channels: 1,
                frames: 2,
                samples: [0.5f32, -1.0]
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect(),
                damage: Some("/x.mp3: corrupt audio data near 0.500 s: bad frame".into()),
            }),
        ),
        (
            "resp_status",
            Response::Status(StatusReport {
                daemon_pid: 1,
                uptime_seconds: 2.5,
                clients: 1,
                streams: vec![StreamStatus {
                    stream: 1,
                    batches_done: 3,
                    batches_total: 10,
                    items_per_second: 100.0,
                    audio_seconds_per_second: 500.0,
                    workers: 2,
                    ring_depth: 4,
                    ring_filled: 1,
                    skipped: 0,
                    damaged: 2,
                    padding_share: 0.25,
                    decode_wait_share: 0.5,
                    client_wait_share: 0.125,
                }],
                cache_bytes: 1 << 20,
                cache_capacity: 1 << 30,
                cache_hits: 7,
                cache_misses: 3,
                decodes: 3,
                workers: 2,
                min_workers: 1,
                max_workers: 4,
                worker_busy_share: 0.75,
                ring_budget_bytes: 1 << 28,
                gpus: vec![GpuStatus {
                    name: "H200".into(),
                    memory_bytes: 141 << 30,
                }],
                failed_jobs: 2,
                abandoned_jobs: 1,
            }),
        ),
        ("resp_ok", Response::Ok),
        (
            "resp_error",
            Response::Error(ErrorInfo {
                kind: ErrorKind::VersionMismatch,
                path: None,
                message: "v".into(),
            }),
        ),
        (
            "resp_error_timed_out",
            Response::Error(ErrorInfo {
                kind: ErrorKind::TimedOut,
                path: Some("/slow.flac".into()),
                message: "t".into(),
            }),
        ),
        (
            "resp_transcribed",
            Response::Transcribed {
                index: 3,
                record: r#"{"audio_filepath":"/a.wav","duration":1.5,"text":"Hallo."}"#.into(),
            },
        ),
        (
            "resp_transcribe_done",
            Response::TranscribeDone {
                files: 5,
                errors: 1,
            },
        ),
    ];
    let mut out: Vec<(&str, Vec<u8>)> = requests
        .into_iter()
        .map(|(n, m)| (n, encode(&m).expect("encodes")))
        .collect();
    out.extend(
        responses
            .into_iter()
            .map(|(n, m)| (n, encode(&m).expect("encodes"))),
    );
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The stored vector `name`, or `None` after writing `bytes` as it (with
/// `AUDIODECODE_WRITE_GOLDEN=1`).
fn stored_golden(name: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let path = golden_dir().join(format!("{name}.bin"));
    if std::env::var_os("AUDIODECODE_WRITE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).expect("write golden");
        return None;
    }
    Some(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with AUDIODECODE_WRITE_GOLDEN=1)",
            path.display()
        )
    }))
}

#[test]
fn golden_vectors_match() {
    for (name, bytes) in samples() {
        let Some(stored) = stored_golden(name, &bytes) else {
            continue;
        };
        assert_eq!(
            stored, bytes,
            "{name}: encoding changed; bump PROTOCOL_VERSION and regenerate"
        );
    }
}

#[test]
fn messages_round_trip() {
    for (name, bytes) in samples() {
        let ok = if name.starts_with("req_") {
            encode(&decode::<Request>(&bytes).expect("decodes")).expect("encodes") == bytes
        } else {
            encode(&decode::<Response>(&bytes).expect("decodes")).expect("encodes") == bytes
        };
        assert!(ok, "{name} does not round-trip");
    }
}

#[test]
fn trailing_bytes_and_truncation_are_errors() {
    let mut bytes = encode(&Request::Status).expect("encodes");
    bytes.push(0);
    assert!(decode::<Request>(&bytes).is_err());
    let bytes = encode(&Request::Release {
        stream: 1,
        released: 2,
    })
    .expect("encodes");
    assert!(decode::<Request>(&bytes[..bytes.len() - 1]).is_err());
}

/// `TranscribeOptions::default()` is the one definition of the Whisper defaults (the CLI's
/// flags read theirs from it); this vector holds the Python client's dataclass to it.
#[test]
fn transcribe_options_default_matches_golden() {
    let bytes = encode(&TranscribeOptions::default()).expect("encodes");
    let Some(stored) = stored_golden("transcribe_options_default", &bytes) else {
        return;
    };
    assert_eq!(
        stored, bytes,
        "the Whisper defaults changed: regenerate, and change the Python client's to match"
    );
    assert_eq!(
        decode::<TranscribeOptions>(&stored).expect("decodes"),
        TranscribeOptions::default()
    );
}
