//! Live labeling: requests that arrive over time (the HTTP service's uploads) share the
//! model. Workers decode and cut each request as it comes; one model thread packs and
//! batches the windows of every request in flight, a fair batch at a time, and answers each
//! request the moment its last window is in. See Note [Batching across requests].

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiodecode_protocol::TranscribeOptions;
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use super::engine::{PieceInput, WhisperEngine};
use super::mel::{SAMPLE_RATE, WINDOW_SAMPLES};
use super::model_loop::ModelLoop;
use super::prepare::{labeling_vad_options, prepare, speech_request, Failure, Input, Ready};
use super::record::FileLabel;
use super::run::speech_detector;
use crate::decode::load;
use crate::sys::MemFile;

/// How the live labeler spreads its work.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Decode and feature threads.
    pub workers: usize,
    /// Windows per model call.
    pub batch_size: usize,
    /// How long a batch waits for requests still being decoded.
    pub batch_wait: Duration,
    /// Requests held at most (decoding or waiting for the model); more are refused.
    pub max_queued: usize,
    /// Longer audio is refused.
    pub max_seconds: Option<f64>,
    /// A decode is abandoned past this (the daemon's item deadline).
    pub item_deadline: Duration,
}

/// Where a request's audio is.
#[derive(Debug)]
pub enum Audio {
    /// An upload held in memory.
    Upload(MemFile),
    /// A file the service may read.
    File(PathBuf),
}

impl Audio {
    fn path(&self) -> &Path {
        match self {
            Audio::Upload(file) => file.path(),
            Audio::File(path) => path,
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Transcribe (or translate, as the options say).
    Label,
    /// Only detect the language of the first 30 s.
    DetectLanguage,
}

/// One request.
pub struct LiveRequest {
    pub audio: Audio,
    /// What results and errors call it (the upload's file name).
    pub name: String,
    pub options: TranscribeOptions,
    pub task: Task,
    /// Where the text goes as the request's pieces become final (`stream=true`), before
    /// the whole label is the answer (Note [Streamed pieces]). Dropped when the request
    /// ends.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// A detected language and its probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    pub language: String,
    pub probability: f32,
}

/// A request's answer.
#[derive(Debug)]
pub enum Answer {
    Label(FileLabel),
    Language(Detected),
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiveError {
    /// Options the model cannot honour.
    #[error("{0}")]
    BadOptions(String),
    /// Not audio we can decode (empty, text, damaged beyond use).
    #[error("{0}")]
    Unreadable(String),
    /// Longer than the service accepts.
    #[error("{0}")]
    TooLong(String),
    /// The queue is full.
    #[error("the service is busy: {0} requests are queued; try again later")]
    Busy(usize),
    /// Ours: speech detection, features or the model failed.
    #[error("{0}")]
    Failed(String),
    /// The service is stopping.
    #[error("the service is shutting down")]
    Stopped,
}

pub type Reply = oneshot::Receiver<Result<Answer, LiveError>>;

/// Where a request's answer goes, and its place in the queue: a request counts in
/// `LiveStats::in_flight` exactly as long as its `ReplyTo` lives, whichever way it ends
/// (answered, forgotten when its client left, lost to a panic), so the count cannot leak.
struct ReplyTo {
    sender: Option<oneshot::Sender<Result<Answer, LiveError>>>,
    stats: Arc<LiveStats>,
}

impl ReplyTo {
    /// Counts a new request in; `None` when `limit` are held already.
    fn admit(stats: &Arc<LiveStats>, limit: usize) -> Option<(Self, Reply)> {
        if stats.in_flight.fetch_add(1, Ordering::Relaxed) >= limit {
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        let reply = Self {
            sender: Some(sender),
            stats: Arc::clone(stats),
        };
        Some((reply, receiver))
    }

    /// Whether the client stopped waiting.
    fn is_closed(&self) -> bool {
        self.sender.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn send(mut self, answer: Result<Answer, LiveError>) {
        let sender = self.sender.take();
        // Out of the queue before the client hears, so its next request finds room.
        drop(self);
        if let Some(sender) = sender {
            // A client that went away cannot be told.
            let _ = sender.send(answer);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters the service's `/metrics` reports.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub submitted: AtomicU64,
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    /// Requests whose client went away before the answer.
    pub abandoned: AtomicU64,
    /// Requests being decoded or waiting for the model.
    pub in_flight: AtomicUsize,
    /// Windows waiting for the model.
    pub queued_windows: AtomicUsize,
    pub batches: AtomicU64,
    pub batch_windows: AtomicU64,
    /// Requests per batch, summed: above `batches` when batches mix requests.
    pub batch_requests: AtomicU64,
    /// Batches by requests in them: 1, 2, 3–4, 5–8, 9–16, more.
    pub batch_request_buckets: [AtomicU64; 6],
    /// Microseconds of audio answered and of model time.
    pub audio_micros: AtomicU64,
    pub model_micros: AtomicU64,
}

impl LiveStats {
    fn record_batch(&self, windows: usize, requests: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_windows
            .fetch_add(windows as u64, Ordering::Relaxed);
        self.batch_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
        let bucket = match requests {
            0 | 1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=8 => 3,
            9..=16 => 4,
            _ => 5,
        };
        self.batch_request_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The upper bounds of `batch_request_buckets` (the last is unbounded).
    pub const BATCH_REQUEST_BOUNDS: [&'static str; 6] = ["1", "2", "4", "8", "16", "+Inf"];
}

/// How long the model loop waits idle before giving freed memory back.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

/// The live labeler: submit requests, await their replies.
pub struct LiveLabeler {
    jobs: Sender<Job>,
    engine: Arc<WhisperEngine>,
    stats: Arc<LiveStats>,
    next_index: AtomicUsize,
    max_queued: usize,
}

struct Job {
    index: usize,
    request: LiveRequest,
    reply: ReplyTo,
}

/// A prepared request on its way to the model thread.
struct Arrival {
    index: usize,
    options: TranscribeOptions,
    progress: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    reply: ReplyTo,
    work: Work,
}

enum Work {
    Label(Ready),
    Detect(Result<PieceInput, LiveError>),
}

impl LiveLabeler {
    /// Starts the workers and the model thread; they stop when the labeler is dropped,
    /// after answering what they hold.
    pub fn start(engine: Arc<WhisperEngine>, config: LiveConfig) -> Self {
        let stats = Arc::new(LiveStats::default());
        let (jobs, job_rx) = bounded::<Job>(config.max_queued.max(1));
        let (arrivals, arrival_rx) = unbounded::<Arrival>();
        for n in 0..config.workers.max(1) {
            let job_rx = job_rx.clone();
            let arrivals = arrivals.clone();
            let engine = Arc::clone(&engine);
            let limits = (config.max_seconds, config.item_deadline);
            let spawned = std::thread::Builder::new()
                .name(format!("live-prepare-{n}"))
                .spawn(move || prepare_jobs(&engine, limits, &job_rx, &arrivals));
            if let Err(e) = spawned {
                log::error!("cannot start a live labeling worker: {e}");
            }
        }
        drop(arrivals);
        {
            let engine = Arc::clone(&engine);
            let stats = Arc::clone(&stats);
            let config = config.clone();
            let spawned = std::thread::Builder::new()
                .name("live-model".into())
                .spawn(move || ModelThread::new(&engine, &stats, &config).run(&arrival_rx));
            if let Err(e) = spawned {
                log::error!("cannot start the live model thread: {e}");
            }
        }
        Self {
            jobs,
            engine,
            stats,
            next_index: AtomicUsize::new(0),
            max_queued: config.max_queued,
        }
    }

    pub fn engine(&self) -> &WhisperEngine {
        &self.engine
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    /// Queues a request; its answer comes on the returned receiver. Options the model
    /// cannot honour and a full queue are refused at once.
    pub fn submit(&self, request: LiveRequest) -> Result<Reply, LiveError> {
        self.engine
            .check_options(&request.options)
            .map_err(|e| LiveError::BadOptions(e.to_string()))?;
        if request.options.vad_filter {
            crate::vad::check_options(&request.options.vad)
                .map_err(|e| LiveError::BadOptions(e.to_string()))?;
        }
        // Requests held anywhere (decoding, or decoded and waiting for the model) are
        // bounded, and with them the audio held in memory.
        let Some((reply, answer)) = ReplyTo::admit(&self.stats, self.max_queued) else {
            return Err(LiveError::Busy(self.max_queued));
        };
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            index,
            request,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(answer)
            }
            // The job, and with it its place in the queue, is dropped with the error.
            Err(e) => Err(match e {
                TrySendError::Full(_) => LiveError::Busy(self.max_queued),
                TrySendError::Disconnected(_) => LiveError::Stopped,
            }),
        }
    }
}

/// A worker: prepares requests until the labeler is dropped.
fn prepare_jobs(
    engine: &WhisperEngine,
    limits: (Option<f64>, Duration),
    jobs: &Receiver<Job>,
    arrivals: &Sender<Arrival>,
) {
    for job in jobs {
        let Job {
            index,
            request,
            reply,
        } = job;
        // A client gone before its turn costs no decoding.
        let work = if reply.is_closed() {
            Work::Label(Ready::Failed {
                index,
                failure: Failure::Internal,
                label: FileLabel::failed(&request.name, None, "abandoned".into()),
            })
        } else {
            catch_unwind(AssertUnwindSafe(|| {
                prepare_request(engine, index, &request, limits)
            }))
            .unwrap_or_else(|_| {
                Work::Label(Ready::Failed {
                    index,
                    failure: Failure::Internal,
                    label: FileLabel::failed(
                        &request.name,
                        None,
                        format!("{}: preparing the audio panicked", request.name),
                    ),
                })
            })
        };
        // The upload's memory goes now, before the model's turn.
        let LiveRequest {
            audio,
            options,
            progress,
            ..
        } = request;
        drop(audio);
        let arrival = Arrival {
            index,
            options,
            progress,
            reply,
            work,
        };
        if arrivals.send(arrival).is_err() {
            break;
        }
    }
}

fn prepare_request(
    engine: &WhisperEngine,
    index: usize,
    request: &LiveRequest,
    (max_seconds, deadline): (Option<f64>, Duration),
) -> Work {
    let name = request.name.as_str();
    let path = request.audio.path();
    match request.task {
        Task::DetectLanguage => Work::Detect(first_window(engine, path, name)),
        Task::Label => {
            let vad = match speech_detector(&request.options) {
                Ok(vad) => vad.map(|d| (d, labeling_vad_options(&request.options.vad))),
                Err(e) => {
                    return Work::Label(Ready::Failed {
                        index,
                        failure: Failure::Internal,
                        label: FileLabel::failed(name, None, e.to_string()),
                    })
                }
            };
            let input = Input {
                path,
                name,
                max_seconds,
                // An upload cut short was most likely broken on its way: refused with the
                // damage named (a 400 the client can retry on), where a file a dataset
                // holds is labelled around its damage (Note [Damage rule]).
                strict: matches!(request.audio, Audio::Upload(_)),
                deadline,
            };
            Work::Label(prepare(&|| Some(engine), vad.as_ref(), index, input))
        }
    }
}

/// The first 30 s of `path` as one window, for language detection.
fn first_window(engine: &WhisperEngine, path: &Path, name: &str) -> Result<PieceInput, LiveError> {
    let request = crate::LoadRequest {
        duration: Some(WINDOW_SAMPLES as f64 / f64::from(SAMPLE_RATE)),
        ..speech_request()
    };
    let audio = load(path, &request, 1).map_err(|e| {
        LiveError::Unreadable(e.to_string().replace(&*path.to_string_lossy(), name))
    })?;
    let samples = audio.planes.into_iter().next().unwrap_or_default();
    if samples.is_empty() {
        return Err(LiveError::Unreadable(format!("{name}: no audio")));
    }
    // Detected over the whole padded window, as Whisper and faster-whisper do: a short
    // clip's own frames alone mislead it (a German sentence heard as Welsh).
    Ok(PieceInput {
        features: engine.front.window_features(&samples),
        samples: WINDOW_SAMPLES,
        language: None,
        group: 0,
        without_timestamps: false,
        sound: 0..samples.len(),
        packed_clips: None,
        judged_voiced_seconds: None,
    })
}

/// A request waiting for the model.
struct Waiting {
    reply: ReplyTo,
    lane: String,
}

/// The model thread's state: one `ModelLoop` per set of options (a lane).
struct ModelThread<'a> {
    engine: &'a WhisperEngine,
    stats: &'a LiveStats,
    config: &'a LiveConfig,
    lanes: BTreeMap<String, ModelLoop<'a>>,
    waiting: HashMap<usize, Waiting>,
    detections: Vec<(usize, PieceInput, ReplyTo)>,
    /// How long the last batch took: what a request that just misses a batch waits.
    last_batch: Duration,
}

impl<'a> ModelThread<'a> {
    fn new(engine: &'a WhisperEngine, stats: &'a LiveStats, config: &'a LiveConfig) -> Self {
        Self {
            engine,
            stats,
            config,
            lanes: BTreeMap::new(),
            waiting: HashMap::new(),
            detections: Vec::new(),
            last_batch: Duration::ZERO,
        }
    }

    fn run(mut self, arrivals: &Receiver<Arrival>) {
        loop {
            if !self.has_work() {
                self.fail_stranded();
                // Idle: sleep until a request is ready; all senders gone means stop. Idle
                // for a second, the freed memory of the last requests goes back to the
                // system (glibc keeps it, see `keep_large_allocations`), not between the
                // batches of a steady load.
                let arrival = match arrivals.recv_timeout(IDLE_TRIM_AFTER) {
                    Err(RecvTimeoutError::Timeout) => {
                        crate::sys::residency::return_free_heap();
                        arrivals.recv().ok()
                    }
                    waited => waited.ok(),
                };
                match arrival {
                    Some(arrival) => self.take(arrival),
                    None => break,
                }
            }
            let step = catch_unwind(AssertUnwindSafe(|| {
                self.gather(arrivals);
                self.forget_abandoned();
                self.detect_languages();
                self.run_one_batch();
                self.answer_finished();
                self.stats
                    .queued_windows
                    .store(self.queued_windows(), Ordering::Relaxed);
            }));
            if step.is_err() {
                log::error!("live labeling failed internally; failing the requests it held");
                self.fail_everything("the service failed internally on this request");
            }
        }
        self.fail_everything("the service is shutting down");
    }

    /// Fails the requests still waiting when no lane has work for them. Every step ends
    /// with each waiting request either answered or holding windows in its lane, so none
    /// should be left; one that is would otherwise hold its client until the request
    /// timeout and its place in the queue forever (a client that left is only forgotten
    /// by a step, and an idle thread takes none).
    fn fail_stranded(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        log::error!(
            "live labeling: {} request(s) waiting with no work queued for them; failing them",
            self.waiting.len()
        );
        self.fail_everything("the service lost track of this request; please send it again");
    }

    fn has_work(&self) -> bool {
        !self.detections.is_empty() || self.lanes.values().any(ModelLoop::has_work)
    }

    fn queued_windows(&self) -> usize {
        self.detections.len() + self.lanes.values().map(ModelLoop::queued).sum::<usize>()
    }

    /// Takes every request ready now, and waits for those still being decoded while the
    /// batch is not full: up to `batch_wait`, or a fifth of the last batch's time if that is
    /// longer. A request that misses a batch waits a whole batch; waiting a fifth of one
    /// for it is the better trade (clients that got their answers together send their next
    /// requests together, and those take a while to decode).
    fn gather(&mut self, arrivals: &Receiver<Arrival>) {
        while let Ok(arrival) = arrivals.try_recv() {
            self.take(arrival);
        }
        let wait = self.config.batch_wait.max(self.last_batch / 5);
        let deadline = Instant::now() + wait;
        while self.queued_windows() < self.config.batch_size && self.decoding() > 0 {
            match arrivals.recv_deadline(deadline) {
                Ok(arrival) => self.take(arrival),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stats
            .queued_windows
            .store(self.queued_windows(), Ordering::Relaxed);
    }

    /// Requests still with the workers.
    fn decoding(&self) -> usize {
        let in_flight = self.stats.in_flight.load(Ordering::Relaxed);
        in_flight.saturating_sub(self.waiting.len() + self.detections.len())
    }

    fn take(&mut self, arrival: Arrival) {
        let Arrival {
            index,
            options,
            progress,
            reply,
            work,
        } = arrival;
        match work {
            // An English-only model knows one language.
            Work::Detect(Ok(_)) if !self.engine.is_multilingual() => {
                let english = Detected {
                    language: "en".into(),
                    probability: 1.0,
                };
                self.answer(reply, Ok(Answer::Language(english)));
            }
            Work::Detect(Ok(window)) => self.detections.push((index, window, reply)),
            Work::Detect(Err(e)) => self.answer(reply, Err(e)),
            Work::Label(Ready::Failed { failure, label, .. }) => {
                let message = label.error.unwrap_or_default();
                let error = match failure {
                    Failure::Unreadable => LiveError::Unreadable(message),
                    Failure::TooLong => LiveError::TooLong(message),
                    Failure::Internal => LiveError::Failed(message),
                };
                self.answer(reply, Err(error));
            }
            Work::Label(ready) => {
                // Options decide the lane: the same options share batches.
                let lane = format!("{options:?}");
                let engine = self.engine;
                let model_loop = self
                    .lanes
                    .entry(lane.clone())
                    .or_insert_with(|| ModelLoop::new(engine, options, true));
                model_loop.accept(ready);
                if let Some(progress) = progress {
                    // A client that left is forgotten by the next step; nothing to tell.
                    model_loop.stream(
                        index,
                        Box::new(move |text| {
                            let _ = progress.send(text);
                        }),
                    );
                }
                self.waiting.insert(index, Waiting { reply, lane });
            }
        }
    }

    fn forget_abandoned(&mut self) {
        let gone: Vec<usize> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.reply.is_closed())
            .map(|(&i, _)| i)
            .collect();
        for index in gone {
            if let Some(w) = self.waiting.remove(&index) {
                if let Some(lane) = self.lanes.get_mut(&w.lane) {
                    lane.forget(index);
                }
                self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.detections.retain(|(_, _, reply)| {
            let closed = reply.is_closed();
            if closed {
                self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
            }
            !closed
        });
    }

    /// Detects the language of every waiting detection request, a batch at a time.
    fn detect_languages(&mut self) {
        let mut pending = std::mem::take(&mut self.detections);
        while !pending.is_empty() {
            let take = pending.len().min(self.config.batch_size.max(1));
            let chunk: Vec<(usize, PieceInput, ReplyTo)> = pending.drain(..take).collect();
            let started = Instant::now();
            let windows: Vec<&PieceInput> = chunk.iter().map(|(_, w, _)| w).collect();
            let detected = catch_unwind(AssertUnwindSafe(|| {
                self.engine.detect_clip_languages(&windows)
            }));
            self.stats
                .model_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.stats.record_batch(chunk.len(), chunk.len());
            let found = match detected {
                Ok(Ok(found)) if found.len() == chunk.len() => Ok(found),
                Ok(Err(e)) => Err(e.to_string()),
                _ => Err("language detection failed".to_string()),
            };
            match found {
                Ok(found) => {
                    for ((_, window, reply), (language, probability)) in
                        chunk.into_iter().zip(found)
                    {
                        let seconds = window.samples as f64 / f64::from(SAMPLE_RATE);
                        self.stats
                            .audio_micros
                            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
                        let detected = Detected {
                            language,
                            probability,
                        };
                        self.answer(reply, Ok(Answer::Language(detected)));
                    }
                }
                Err(message) => {
                    for (_, _, reply) in chunk {
                        self.answer(reply, Err(LiveError::Failed(message.clone())));
                    }
                }
            }
        }
    }

    /// Runs one fair batch of the lane whose oldest request is oldest.
    fn run_one_batch(&mut self) {
        let oldest_lane = self
            .waiting
            .iter()
            .filter(|(_, w)| self.lanes.get(&w.lane).is_some_and(ModelLoop::has_work))
            .min_by_key(|(&i, _)| i)
            .map(|(_, w)| w.lane.clone());
        let Some(lane) = oldest_lane.and_then(|l| self.lanes.get_mut(&l)) else {
            return;
        };
        let started = Instant::now();
        if let Some((windows, requests)) = lane.run_fair_batch(self.config.batch_size) {
            self.stats.record_batch(windows, requests);
            self.last_batch = started.elapsed();
        }
        self.stats
            .model_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Answers every request whose label is complete; drops lanes left empty.
    fn answer_finished(&mut self) {
        let mut done = Vec::new();
        for lane in self.lanes.values_mut() {
            done.extend(lane.take_finished());
        }
        for (index, label) in done {
            if let Some(w) = self.waiting.remove(&index) {
                let duration = label.duration.unwrap_or(0.0);
                self.stats
                    .audio_micros
                    .fetch_add((duration * 1e6) as u64, Ordering::Relaxed);
                self.answer(w.reply, Ok(Answer::Label(label)));
            }
        }
        let busy: std::collections::HashSet<&String> =
            self.waiting.values().map(|w| &w.lane).collect();
        self.lanes.retain(|lane, _| busy.contains(lane));
    }

    fn answer(&self, reply: ReplyTo, answer: Result<Answer, LiveError>) {
        let counter = match &answer {
            Ok(Answer::Label(label)) if label.error.is_some() => &self.stats.failed,
            Ok(_) => &self.stats.answered,
            Err(_) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        reply.send(answer);
    }

    fn fail_everything(&mut self, message: &str) {
        let waiting: Vec<Waiting> = self.waiting.drain().map(|(_, w)| w).collect();
        for w in waiting {
            self.answer(w.reply, Err(LiveError::Failed(message.to_string())));
        }
        for (_, _, reply) in std::mem::take(&mut self.detections) {
            self.answer(reply, Err(LiveError::Failed(message.to_string())));
        }
        self.lanes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(stats: &LiveStats) -> usize {
        stats.in_flight.load(Ordering::Relaxed)
    }

    #[test]
    fn a_request_counts_in_flight_exactly_while_its_reply_lives() {
        let stats = Arc::new(LiveStats::default());
        let (first, mut answer) = ReplyTo::admit(&stats, 2).expect("room");
        let (second, _) = ReplyTo::admit(&stats, 2).expect("room");
        assert!(ReplyTo::admit(&stats, 2).is_none(), "a third is refused");
        assert_eq!(held(&stats), 2);
        first.send(Err(LiveError::Stopped));
        assert_eq!(held(&stats), 1);
        assert!(matches!(answer.try_recv(), Ok(Err(LiveError::Stopped))));
        drop(second); // forgotten: its client left
        assert_eq!(held(&stats), 0);
        // Lost to a panic that unwinds through it.
        let (third, _) = ReplyTo::admit(&stats, 2).expect("room");
        let unwound = catch_unwind(AssertUnwindSafe(move || {
            let _held = third;
            panic!("a bug while taking the request in");
        }));
        assert!(unwound.is_err());
        assert_eq!(held(&stats), 0);
    }
}
