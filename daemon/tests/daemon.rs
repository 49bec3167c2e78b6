//! The daemon end to end over its socket: streams into shared memory, ownership of slots,
//! error policies, and cleanup when a client disappears.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Tests may panic and print.
#![allow(unsafe_code)] // Maps the daemon's shared memory as a client does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audiodecode::client::Client;
use audiodecode::{load, ChannelMode, LoadRequest};
use audiodecode_protocol::ring::{RingGeometry, SlotHeader};
use audiodecode_protocol::{
    CropMode, Dataset, OnError, Quality, Request, Response, SkippedItem, StreamInfo, StreamSpec,
};

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(&["--workers", "2"])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("d.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_audiodecode"))
            .args(["serve", "--foreground", "--socket"])
            .arg(&socket)
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("start daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Client::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mono 16-bit WAV of a tone whose frequency encodes the item, `seconds` long.
fn write_wav(path: &Path, seconds: f64, rate: u32, freq: f64) {
    let n = (seconds * f64::from(rate)) as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = (0.3
            * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()
            * 32767.0) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).expect("write wav");
}

fn corpus(dir: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("clip{i:03}.wav"));
            let rate = if i % 2 == 0 { 44100 } else { 22050 };
            write_wav(&p, 0.2 + 0.05 * i as f64, rate, 200.0 + 10.0 * i as f64);
            p.to_string_lossy().into_owned()
        })
        .collect()
}

fn spec(paths: Vec<String>, batch_size: u32) -> StreamSpec {
    let labels = (0..paths.len() as i64).collect();
    StreamSpec {
        dataset: Dataset::Files {
            paths,
            labels: Some(labels),
        },
        sample_rate: 16000,
        mono: true,
        channels: 1,
        batch_size,
        max_seconds: None,
        crop: CropMode::Start,
        pad_to_max: false,
        shuffle: true,
        seed: 3,
        epoch: 0,
        start_batch: 0,
        rank: 0,
        world_size: 1,
        drop_last: false,
        on_error: OnError::Skip,
        quality: Quality::Hq,
        prefetch: 2,
        cache: false,
        max_batch_seconds: None,
        augment: vec![],
        strict: false,
        downmix: audiodecode_protocol::Downmix::Mean,
    }
}

fn open(client: &mut Client, spec: StreamSpec) -> StreamInfo {
    match client.request(&Request::OpenStream(spec)).expect("open") {
        Response::StreamOpened(info) => info,
        other => panic!("unexpected {other:?}"),
    }
}

fn map_ring(info: &StreamInfo) -> memmap2::Mmap {
    let path = format!("/dev/shm{}", info.shm_name);
    let file = std::fs::File::open(&path).expect("open shm");
    // SAFETY: read-only view of a segment the daemon keeps alive while the stream is open.
    unsafe { memmap2::Mmap::map(&file).expect("map shm") }
}

struct Batch {
    header: SlotHeader,
    lengths: Vec<u32>,
    labels: Vec<i64>,
    indices: Vec<u64>,
    audio: Vec<f32>,
}

fn read_slot(map: &[u8], g: &RingGeometry, slot: u32) -> Batch {
    let base = g.slot_offset(slot) as usize;
    let s = &map[base..base + g.slot_bytes as usize];
    let header = SlotHeader::from_bytes(s).expect("header");
    let b = header.batch as usize;
    let u32_at = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().expect("8"));
    let lengths = (0..b)
        .map(|i| u32_at(g.lengths_offset as usize + 4 * i))
        .collect();
    let labels = (0..b)
        .map(|i| u64_at(g.labels_offset as usize + 8 * i) as i64)
        .collect();
    let indices = (0..b)
        .map(|i| u64_at(g.indices_offset as usize + 8 * i))
        .collect();
    let count = b * header.channels as usize * header.frames as usize;
    let audio = (0..count)
        .map(|i| {
            let o = g.audio_offset as usize + 4 * i;
            f32::from_le_bytes(s[o..o + 4].try_into().expect("4"))
        })
        .collect();
    Batch {
        header,
        lengths,
        labels,
        indices,
        audio,
    }
}

#[test]
fn a_stream_delivers_every_item_once_equal_to_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 11);
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let info = open(&mut client, spec(paths.clone(), 4));
    assert_eq!(info.batches_per_epoch, 3);
    assert_eq!(info.items.len(), 11);
    let map = map_ring(&info);
    let mut seen = Vec::new();
    let mut seqs = Vec::new();
    loop {
        match client.receive().expect("message") {
            Response::BatchReady { slot, seq, .. } => {
                seqs.push(seq);
                let batch = read_slot(&map, &info.ring, slot);
                assert_eq!(batch.header.seq, seq);
                let t = batch.header.frames as usize;
                assert_eq!(
                    t,
                    *batch.lengths.iter().max().expect("items") as usize,
                    "pad to longest"
                );
                for (row, &index) in batch.indices.iter().enumerate() {
                    let expected = load(
                        Path::new(&paths[index as usize]),
                        &LoadRequest {
                            sample_rate: Some(16000),
                            channels: ChannelMode::Mono,
                            ..Default::default()
                        },
                        1,
                    )
                    .expect("load");
                    let got = &batch.audio[row * t..(row + 1) * t];
                    let n = expected.frames();
                    assert_eq!(batch.lengths[row] as usize, n);
                    assert_eq!(&got[..n], &expected.planes[0][..], "item {index}");
                    assert!(got[n..].iter().all(|&v| v == 0.0), "zero padding");
                    assert_eq!(batch.labels[row], index as i64);
                    seen.push(index);
                }
                client
                    .send(&Request::Release {
                        stream: info.stream,
                        released: seqs.len() as u64,
                    })
                    .expect("release");
            }
            Response::EndOfEpoch { skipped, .. } => {
                assert!(skipped.is_empty());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(seen.len(), 11);
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>().len(), 11);
    assert_ne!(seen, (0..11).collect::<Vec<u64>>(), "shuffled");
    assert_eq!(
        client
            .request(&Request::CloseStream {
                stream: info.stream
            })
            .expect("close"),
        Response::Ok
    );
    assert!(
        std::fs::metadata(format!("/dev/shm{}", info.shm_name)).is_err(),
        "unlinked on close"
    );
}

#[test]
fn the_daemon_waits_for_released_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 8);
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let info = open(&mut client, spec(paths, 1));
    // Depth 2: without releases only two batches may be announced.
    let mut slots = Vec::new();
    for _ in 0..2 {
        match client.receive().expect("message") {
            Response::BatchReady { slot, .. } => slots.push(slot),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut status = daemon.client();
    std::thread::sleep(Duration::from_millis(300));
    match status.request(&Request::Status).expect("status") {
        Response::Status(r) => {
            let s = r
                .streams
                .iter()
                .find(|s| s.stream == info.stream)
                .expect("stream listed");
            assert_eq!(s.batches_done, 2, "no third batch without a free slot");
            assert_eq!(s.ring_filled, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    client
        .send(&Request::Release {
            stream: info.stream,
            released: 1,
        })
        .expect("release");
    match client.receive().expect("message") {
        Response::BatchReady { slot, seq, .. } => {
            assert_eq!(slot, slots[0]);
            assert_eq!(seq, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A header word of a writable ring mapping.
fn ring_word(map: &memmap2::MmapMut, offset: u64) -> &std::sync::atomic::AtomicU64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= 4096);
    // SAFETY: in bounds, 8-aligned (the mapping is page aligned), lives as long as `map`.
    unsafe {
        std::sync::atomic::AtomicU64::from_ptr(map.as_ptr().add(offset as usize).cast_mut().cast())
    }
}

#[test]
fn a_client_handing_back_through_the_ring_header_rings_once_per_two_batches() {
    use audiodecode_protocol::ring::{
        announcement, ANNOUNCED_OFFSET, ANNOUNCE_LOG_OFFSET, DOORBELL_OFFSET, NO_DOORBELL,
        RELEASED_OFFSET,
    };
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 24);
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let mut slow_client = spec(paths, 2);
    slow_client.prefetch = 4;
    let info = open(&mut client, slow_client);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm{}", info.shm_name))
        .expect("open shm");
    // SAFETY: the daemon keeps the segment alive while the stream is open.
    let map = unsafe { memmap2::MmapMut::map_mut(&file).expect("map shm") };
    let (mut taken, mut sent, mut rings) = (0u64, 0u64, 0u64);
    loop {
        match client.receive().expect("message") {
            Response::BatchReady { slot, seq, .. } => {
                assert!(ring_word(&map, ANNOUNCED_OFFSET).load(SeqCst) > taken);
                let entry = ANNOUNCE_LOG_OFFSET + 8 * (taken % u64::from(info.ring.slots));
                assert_eq!(ring_word(&map, entry).load(SeqCst), announcement(seq, slot));
                // A training step long enough for decoding to fill the ring: the driver
                // then waits for a slot (and has set the doorbell), or has finished.
                let deadline = Instant::now() + Duration::from_secs(10);
                let asked = |sent: u64| {
                    let doorbell = ring_word(&map, DOORBELL_OFFSET).load(SeqCst);
                    doorbell != NO_DOORBELL && doorbell > sent
                };
                while !asked(sent) && ring_word(&map, ANNOUNCED_OFFSET).load(SeqCst) < 12 {
                    assert!(
                        Instant::now() < deadline,
                        "the driver neither waits nor ends"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                taken += 1;
                ring_word(&map, RELEASED_OFFSET).store(taken, SeqCst);
                // Ring once per doorbell: a count already sent covers it.
                let doorbell = ring_word(&map, DOORBELL_OFFSET).load(SeqCst);
                if taken >= doorbell && doorbell > sent {
                    rings += 1;
                    sent = taken;
                    client
                        .send(&Request::Release {
                            stream: info.stream,
                            released: taken,
                        })
                        .expect("release");
                }
            }
            Response::EndOfEpoch { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(taken, 12);
    // Four slots in circulation: the driver asks again once two are back, so the client
    // rings every other batch until the last batch is announced (at 2, 4, 6 and 8).
    assert_eq!(rings, 4, "rang {rings} times for 12 batches");
}

#[test]
fn broken_items_are_skipped_or_raised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = corpus(dir.path(), 5);
    let broken = dir.path().join("broken.wav");
    std::fs::write(&broken, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").expect("write");
    paths.insert(2, broken.to_string_lossy().into_owned());
    paths.push(
        dir.path()
            .join("missing.flac")
            .to_string_lossy()
            .into_owned(),
    );

    let daemon = Daemon::start();
    let mut client = daemon.client();
    let (delivered, skipped, _) = epoch_report(&mut client, spec(paths.clone(), 3));
    assert_eq!(delivered, 5);
    let names: HashSet<String> = skipped.iter().map(|s| s.path.clone()).collect();
    assert!(
        names.contains(&paths[2]) && names.contains(&paths[6]),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().all(|s| s.message.contains(&s.path)),
        "messages name the file"
    );

    let mut raise = spec(paths.clone(), 3);
    raise.on_error = OnError::Raise;
    raise.shuffle = false;
    let info = open(&mut client, raise);
    let mut released = 0;
    loop {
        match client.receive().expect("message") {
            Response::BatchReady { .. } => {
                released += 1;
                client
                    .send(&Request::Release {
                        stream: info.stream,
                        released,
                    })
                    .expect("release");
            }
            Response::StreamFailed { error, .. } => {
                assert_eq!(error.path.as_deref(), Some(paths[2].as_str()));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Runs one epoch, releasing every batch; returns (items delivered, skipped, damaged).
fn epoch_report(
    client: &mut Client,
    spec: StreamSpec,
) -> (u32, Vec<SkippedItem>, Vec<SkippedItem>) {
    let info = open(client, spec);
    let (mut delivered, mut released) = (0, 0);
    loop {
        match client.receive().expect("message") {
            Response::BatchReady { slot, .. } => {
                let map = map_ring(&info);
                delivered += read_slot(&map, &info.ring, slot).header.batch;
                released += 1;
                client
                    .send(&Request::Release {
                        stream: info.stream,
                        released,
                    })
                    .expect("release");
            }
            Response::EndOfEpoch {
                skipped, damaged, ..
            } => return (delivered, skipped, damaged),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn damaged_items_are_used_and_reported_unless_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = corpus(dir.path(), 4);
    // A download cut short. A FLAC's cut is met only where decoding reaches it (a WAV's
    // header already tells a cut file from its size): 2 s, cut at about 1.2 s.
    let long = dir.path().join("long.wav");
    write_wav(&long, 2.0, 16000, 300.0);
    let flac = dir.path().join("long.flac");
    let made = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&long)
        .arg(&flac)
        .status()
        .expect("ffmpeg (install FFmpeg to run this test)");
    assert!(made.success());
    let cut = dir.path().join("cut.flac");
    let whole = std::fs::read(&flac).expect("read");
    std::fs::write(&cut, &whole[..whole.len() * 6 / 10]).expect("write");
    paths.push(cut.to_string_lossy().into_owned());

    let daemon = Daemon::start();
    let mut client = daemon.client();
    // One decision per file (Note [Damage rule]): with and without the cache, whole or
    // cropped to a part before the cut (where a crop alone sees no damage), any epoch.
    let crops = [
        (None, CropMode::Start),
        (Some(0.3), CropMode::Start),
        (Some(0.3), CropMode::Random),
    ];
    for cache in [false, true] {
        for (max_seconds, crop) in crops {
            for epoch in 0..4 {
                let case = format!("cache {cache}, crop {max_seconds:?} {crop:?}, epoch {epoch}");
                let base = StreamSpec {
                    cache,
                    max_seconds,
                    crop,
                    epoch,
                    ..spec(paths.clone(), 2)
                };
                let (delivered, skipped, damaged) = epoch_report(&mut client, base.clone());
                assert_eq!(delivered, 5, "the damaged file is used ({case})");
                assert!(skipped.is_empty(), "{case}: {skipped:?}");
                assert_eq!(damaged.len(), 1, "{case}: {damaged:?}");
                assert_eq!(damaged[0].path, paths[4]);
                assert!(
                    damaged[0].message.contains(&paths[4])
                        && damaged[0].message.contains("truncated"),
                    "{case}: {damaged:?}"
                );
                let strict = StreamSpec {
                    strict: true,
                    ..base
                };
                let (delivered, skipped, damaged) = epoch_report(&mut client, strict);
                assert_eq!(delivered, 4, "strict skips the damaged file ({case})");
                assert!(damaged.is_empty(), "{case}: {damaged:?}");
                assert_eq!(skipped.len(), 1, "{case}: {skipped:?}");
                assert_eq!(skipped[0].path, paths[4]);
                assert!(skipped[0].message.contains("truncated"), "{skipped:?}");
            }
        }
    }
}

#[test]
fn a_vanished_client_frees_its_shared_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 6);
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let info = open(&mut client, spec(paths, 2));
    let shm = format!("/dev/shm{}", info.shm_name);
    assert!(std::fs::metadata(&shm).is_ok());
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::fs::metadata(&shm).is_ok() {
        assert!(Instant::now() < deadline, "segment outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let mut bad = spec(vec!["/nonexistent.wav".into()], 0);
    bad.batch_size = 0;
    match client.request(&Request::OpenStream(bad)).expect("reply") {
        Response::Error(e) => assert!(e.message.contains("batch size"), "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let manifest = spec(vec![], 1);
    let manifest = StreamSpec {
        dataset: Dataset::Manifest {
            path: "/nonexistent/m.jsonl".into(),
            label_field: None,
        },
        ..manifest
    };
    match client
        .request(&Request::OpenStream(manifest))
        .expect("reply")
    {
        Response::Error(e) => assert!(e.message.contains("/nonexistent/m.jsonl"), "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
    match client
        .request(&Request::Load(audiodecode_protocol::LoadSpec {
            path: "/nonexistent.wav".into(),
            sample_rate: None,
            mono: true,
            offset: 0.0,
            duration: None,
            quality: Quality::Hq,
            strict: false,
            downmix: audiodecode_protocol::Downmix::Mean,
        }))
        .expect("reply")
    {
        Response::Error(e) => {
            assert_eq!(e.kind, audiodecode_protocol::ErrorKind::NotFound);
            assert_eq!(e.path.as_deref(), Some("/nonexistent.wav"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // A wrong protocol version is refused with a message saying so.
    let mut raw = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect");
    use std::io::{Read, Write};
    raw.write_all(
        &audiodecode_protocol::frame(&Request::Hello {
            version: 999,
            client_pid: 1,
        })
        .expect("frame"),
    )
    .expect("write");
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).expect("reply");
    let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
    raw.read_exact(&mut payload).expect("payload");
    match audiodecode_protocol::decode::<Response>(&payload).expect("decode") {
        Response::Error(e) => assert!(e.message.contains("version"), "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

fn status(daemon: &Daemon) -> audiodecode_protocol::StatusReport {
    match daemon.client().request(&Request::Status).expect("status") {
        Response::Status(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// Per item (index, audio), per batch (items, padded frames).
type Epoch = (Vec<(u64, Vec<f32>)>, Vec<(usize, u64)>);

/// Receive a stream's batches until the end of its epoch, releasing each slot after
/// `on_batch` has seen it; `on_batch` returns false to stop early.
fn each_batch(client: &mut Client, info: &StreamInfo, mut on_batch: impl FnMut(Batch) -> bool) {
    let map = map_ring(info);
    let mut released = 0;
    loop {
        match client.receive().expect("message") {
            Response::BatchReady { slot, .. } => {
                let keep_going = on_batch(read_slot(&map, &info.ring, slot));
                released += 1;
                client
                    .send(&Request::Release {
                        stream: info.stream,
                        released,
                    })
                    .expect("release");
                if !keep_going {
                    return;
                }
            }
            Response::EndOfEpoch { .. } => return,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Open a stream, run it to its end and close it.
fn run_epoch(client: &mut Client, spec: StreamSpec) -> Epoch {
    let info = open(client, spec);
    let mut items = Vec::new();
    let mut batches = Vec::new();
    each_batch(client, &info, |b| {
        let t = b.header.frames as usize;
        for (row, &index) in b.indices.iter().enumerate() {
            let n = b.lengths[row] as usize;
            items.push((index, b.audio[row * t..row * t + n].to_vec()));
        }
        batches.push((b.indices.len(), b.header.frames));
        true
    });
    client
        .request(&Request::CloseStream {
            stream: info.stream,
        })
        .expect("close");
    items.sort_by_key(|(i, _)| *i);
    (items, batches)
}

#[test]
fn the_cache_serves_later_epochs_and_notices_changed_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 6);
    let daemon = Daemon::start_with(&["--workers", "2", "--cache-bytes", "100000000"]);
    let mut client = daemon.client();
    let mut cached = spec(paths.clone(), 4);
    cached.cache = true;
    cached.max_seconds = Some(0.25);
    cached.crop = CropMode::Random;

    let (first, _) = run_epoch(&mut client, cached.clone());
    assert_eq!(status(&daemon).decodes, 6);
    // A random crop from the cached whole file equals the same window of a full decode.
    for (index, got) in &first {
        let full = load(
            Path::new(&paths[*index as usize]),
            &LoadRequest {
                sample_rate: Some(16000),
                channels: ChannelMode::Mono,
                ..Default::default()
            },
            1,
        )
        .expect("load");
        let whole = &full.planes[0];
        assert_eq!(got.len(), 4000.min(whole.len()));
        assert!(
            whole.windows(got.len()).any(|w| w == got.as_slice()),
            "item {index} is a window"
        );
    }

    let mut next = cached.clone();
    next.epoch = 1;
    run_epoch(&mut client, next.clone());
    let after = status(&daemon);
    assert_eq!(after.decodes, 6, "second epoch decodes nothing");
    assert!(after.cache_hits >= 6, "{after:?}");

    // Rewrite one file with other content: it must be decoded again, never served stale.
    write_wav(Path::new(&paths[3]), 0.4, 22050, 999.0);
    let (third, _) = run_epoch(&mut client, StreamSpec { epoch: 2, ..next });
    assert_eq!(status(&daemon).decodes, 7);
    let fresh = load(
        Path::new(&paths[3]),
        &LoadRequest {
            sample_rate: Some(16000),
            channels: ChannelMode::Mono,
            ..Default::default()
        },
        1,
    )
    .expect("load");
    let (_, got) = third.iter().find(|(i, _)| *i == 3).expect("item 3");
    assert!(
        fresh.planes[0]
            .windows(got.len())
            .any(|w| w == got.as_slice()),
        "new content"
    );
}

#[test]
fn the_cache_stays_within_its_byte_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 10);
    // Each clip is 0.2-0.65 s at 16 kHz mono: 13-42 kB decoded; 60 kB holds only a few.
    let daemon = Daemon::start_with(&["--workers", "2", "--cache-bytes", "60000"]);
    let mut client = daemon.client();
    let mut cached = spec(paths, 3);
    cached.cache = true;
    for epoch in 0..2 {
        run_epoch(
            &mut client,
            StreamSpec {
                epoch,
                ..cached.clone()
            },
        );
        let s = status(&daemon);
        assert!(
            s.cache_bytes <= 60_000 && s.cache_capacity == 60_000,
            "{s:?}"
        );
    }
    assert!(
        status(&daemon).decodes > 10,
        "evicted clips are decoded again"
    );
}

#[test]
fn bucketing_keeps_every_item_and_cuts_padding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 24); // 0.2 s .. 1.35 s
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let fixed = spec(paths.clone(), 8);
    let (fixed_items, fixed_batches) = run_epoch(&mut client, fixed.clone());
    let bucketed = StreamSpec {
        max_batch_seconds: Some(3.0),
        ..fixed
    };
    let (items, batches) = run_epoch(&mut client, bucketed);
    assert_eq!(items.len(), 24);
    assert_eq!(
        items.iter().map(|(i, _)| *i).collect::<HashSet<_>>().len(),
        24
    );
    for &(b, frames) in &batches {
        assert!(
            b == 1 || b as f64 * frames as f64 / 16000.0 <= 3.0 + 1e-3,
            "{b} x {frames}"
        );
    }
    let share = |items: &[(u64, Vec<f32>)], batches: &[(usize, u64)]| {
        let real: usize = items.iter().map(|(_, a)| a.len()).sum();
        let padded: u64 = batches.iter().map(|&(b, t)| b as u64 * t).sum();
        1.0 - real as f64 / padded as f64
    };
    let (plain, bucketed) = (share(&fixed_items, &fixed_batches), share(&items, &batches));
    eprintln!("padding share: fixed batches of 8 {plain:.3}, bucketed {bucketed:.3}");
    assert!(
        bucketed < plain / 2.0,
        "bucketed {bucketed:.3} vs fixed {plain:.3}"
    );
}

#[test]
fn augmentations_are_reproducible_per_seed() {
    use audiodecode_protocol::Augment;
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 6);
    let noise_dir = dir.path().join("noise");
    std::fs::create_dir_all(&noise_dir).expect("mkdir");
    write_wav(&noise_dir.join("hum.wav"), 1.0, 16000, 50.0);
    write_wav(&noise_dir.join("whine.wav"), 1.0, 16000, 3000.0);
    let daemon = Daemon::start();
    let mut client = daemon.client();
    let clean = StreamSpec {
        shuffle: false,
        ..spec(paths.clone(), 3)
    };
    let augmented = StreamSpec {
        augment: vec![
            Augment::Speed {
                factors: vec![1.25],
                p: 1.0,
            },
            Augment::Gain {
                min_db: -3.0,
                max_db: 3.0,
                p: 1.0,
            },
            Augment::Noise {
                min_snr_db: 10.0,
                max_snr_db: 20.0,
                noise: Some(Dataset::Directory {
                    path: noise_dir.to_string_lossy().into_owned(),
                }),
                p: 1.0,
            },
        ],
        ..clean.clone()
    };
    let (plain, _) = run_epoch(&mut client, clean);
    let (a, _) = run_epoch(&mut client, augmented.clone());
    let (b, _) = run_epoch(&mut client, augmented.clone());
    let (c, _) = run_epoch(
        &mut client,
        StreamSpec {
            seed: 99,
            ..augmented.clone()
        },
    );
    assert_eq!(a, b, "same seed, same audio");
    assert_ne!(a, c, "another seed, other audio");
    for ((_, x), (_, y)) in plain.iter().zip(&a) {
        let expected = (x.len() as f64 / 1.25).ceil() as usize;
        assert!(
            y.len().abs_diff(expected) <= 1,
            "speed 1.25: {} -> {}",
            x.len(),
            y.len()
        );
    }
    // A bad augmentation is refused when the stream opens, with the reason.
    let bad = StreamSpec {
        augment: vec![Augment::Speed {
            factors: vec![],
            p: 1.0,
        }],
        ..augmented
    };
    match client.request(&Request::OpenStream(bad)).expect("reply") {
        Response::Error(e) => assert!(e.message.contains("speed"), "{e:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

/// Consume epochs (releasing each slot after `hold`) until `done` says so or 15 s pass.
fn consume_until(
    daemon: &Daemon,
    paths: &[String],
    batch_size: u32,
    hold: Duration,
    done: impl Fn(&audiodecode_protocol::StatusReport) -> bool,
) -> audiodecode_protocol::StatusReport {
    let mut client = daemon.client();
    let deadline = Instant::now() + Duration::from_secs(15);
    for epoch in 0.. {
        let info = open(
            &mut client,
            StreamSpec {
                epoch,
                ..spec(paths.to_vec(), batch_size)
            },
        );
        let mut stopped = None;
        each_batch(&mut client, &info, |_| {
            std::thread::sleep(hold);
            let s = status(daemon);
            if done(&s) || Instant::now() > deadline {
                stopped = Some(s);
            }
            stopped.is_none()
        });
        if let Some(s) = stopped {
            return s;
        }
        client
            .request(&Request::CloseStream {
                stream: info.stream,
            })
            .expect("close");
    }
    unreachable!("epochs are unbounded")
}

#[test]
fn the_pool_grows_when_the_client_waits_on_decoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 40);
    let daemon =
        Daemon::start_with(&["--workers", "1", "--min-workers", "1", "--max-workers", "2"]);
    let s = consume_until(&daemon, &paths, 8, Duration::ZERO, |s| s.workers == 2);
    assert_eq!(
        (s.workers, s.min_workers, s.max_workers),
        (2, 1, 2),
        "{s:?}"
    );
}

#[test]
fn the_pool_shrinks_when_the_client_is_slow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = corpus(dir.path(), 40);
    let daemon =
        Daemon::start_with(&["--workers", "2", "--min-workers", "1", "--max-workers", "2"]);
    // Batches of two over 40 files: epochs long enough for the tuner's one-second view.
    let s = consume_until(&daemon, &paths, 2, Duration::from_millis(300), |s| {
        s.workers == 1
    });
    assert_eq!(s.workers, 1, "{s:?}");
    let stream = s.streams.first().expect("a stream");
    assert!(stream.client_wait_share > 0.5, "{stream:?}");
}
