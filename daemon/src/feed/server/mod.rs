//! The daemon's control plane: a mio event loop on a Unix socket.
//!
//! The loop only parses frames, updates bookkeeping and queues replies; decoding, stream
//! setup and `load` run on other threads and report back through a channel plus a waker, so
//! a slow file never stalls another client.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiodecode_protocol::{
    decode, frame, ErrorInfo, ErrorKind, GpuStatus, LoadedAudio, Request, Response, StatusReport,
    StreamStatus, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::decode::load;
use crate::feed::cache::{AudioCache, DurationCache};
use crate::feed::pool::Pool;
use crate::feed::ring::RingMemory;
use crate::feed::slots::SlotLedger;
use crate::feed::stats::StreamStats;
use crate::feed::stream;
use crate::feed::tune::{Plan, Tuner};
use crate::feed::wire::load_request;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

pub struct ServeOptions {
    pub socket: PathBuf,
    /// Pool size and bounds, cache size, ring memory.
    pub plan: Plan,
    /// Longest one pooled decode may take (see [`Pool::run`]).
    pub item_deadline: Duration,
}

/// Default socket: `$XDG_RUNTIME_DIR/audiodecode/daemon.sock`, else
/// `/tmp/audiodecode-<uid>/daemon.sock`; `$AUDIODECODE_SOCKET` overrides both.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AUDIODECODE_SOCKET") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("audiodecode").join("daemon.sock"),
        _ => PathBuf::from(format!("/tmp/audiodecode-{}", crate::sys::effective_uid()))
            .join("daemon.sock"),
    }
}

/// What worker threads send back to the loop.
enum Event {
    /// A reply to the connection's outstanding request.
    Reply(Token, Response),
    /// A stream finished opening: register it, then reply.
    Opened(Token, Box<stream::Opened>),
    /// An unsolicited message (batch ready, end of epoch, stream failure).
    Push(Token, Response),
}

struct StreamEntry {
    conn: Token,
    ring: Arc<RingMemory>,
    slots: Arc<SlotLedger>,
    cancel: Arc<AtomicBool>,
    stats: Arc<StreamStats>,
    total_batches: u64,
    tunable: bool,
    opened: Instant,
}

/// Dropping the entry closes the stream: its driver stops (also when it waits for a slot)
/// and the ring's name is unlinked.
impl Drop for StreamEntry {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.slots.close();
        self.ring.unlink();
    }
}

struct Connection {
    socket: UnixStream,
    inbox: Vec<u8>,
    outbox: VecDeque<u8>,
    greeted: bool,
    /// A request is being served off-loop; later requests wait so replies stay in order.
    busy: bool,
    deferred: VecDeque<Request>,
    writable_interest: bool,
    closing: bool,
}

struct Daemon {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<Token, Connection>,
    streams: HashMap<u32, StreamEntry>,
    next_token: usize,
    next_stream: Arc<AtomicU32>,
    pool: Pool,
    cache: Arc<AudioCache>,
    durations: Arc<DurationCache>,
    tuner: Tuner,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    waker: Arc<Waker>,
    started: Instant,
    shutdown: bool,
    models: Arc<crate::label::service::ModelCache>,
    /// Cancel flags of running transcriptions, by connection.
    transcriptions: HashMap<Token, Arc<AtomicBool>>,
}

/// Exclusive lock on `<socket>.lock` for the daemon's lifetime: a second daemon for the same
/// socket finds it held and leaves the running one alone.
fn take_lock(socket: &Path) -> std::io::Result<Option<std::fs::File>> {
    let path = socket.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    Ok(crate::sys::try_lock_exclusive(&file).then_some(file))
}

/// The socket's directory must be private to this user. See Note [Local users].
fn prepare_socket_dir(socket: &Path) -> std::io::Result<()> {
    let dir = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::sys::ensure_private_dir(dir).map_err(std::io::Error::other)
}

/// Returns Ok(false) when another daemon already serves this socket.
pub fn serve(options: ServeOptions, ready: impl FnOnce()) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    prepare_socket_dir(&options.socket)?;
    let Some(_lock) = take_lock(&options.socket)? else {
        return Ok(false);
    };
    // We hold the lock, so any socket file is left over from a dead daemon.
    let _ = std::fs::remove_file(&options.socket);
    // Until a client asks to label, the model libraries' start-up code is dead weight.
    crate::sys::residency::release_labeling_code();
    crate::sys::use_batch_scheduling();
    let removed = crate::feed::ring::remove_stale_segments();
    if removed > 0 {
        log::info!("removed {removed} shared-memory segments of dead daemons");
    }
    let mut listener = UnixListener::bind(&options.socket)?;
    std::fs::set_permissions(&options.socket, std::fs::Permissions::from_mode(0o600))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    crate::sys::install_stop_signals();
    let mut daemon = Daemon {
        poll,
        listener,
        conns: HashMap::new(),
        streams: HashMap::new(),
        next_token: FIRST_CONN,
        next_stream: Arc::new(AtomicU32::new(1)),
        pool: Pool::with_deadline(options.plan.workers, options.item_deadline),
        cache: Arc::new(AudioCache::new(options.plan.cache_bytes)),
        tuner: Tuner::new(options.plan.clone()),
        durations: Arc::new(DurationCache::default()),
        events_tx,
        events_rx,
        waker,
        started: Instant::now(),
        shutdown: false,
        models: Arc::default(),
        transcriptions: HashMap::new(),
    };
    ready();
    let result = daemon.run();
    daemon.streams.clear();
    let _ = std::fs::remove_file(&options.socket);
    result.map(|_| true)
}

impl Daemon {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.shutdown && !crate::sys::stop_requested() {
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(250)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    token => {
                        if event.is_readable() || event.is_read_closed() {
                            self.read(token);
                        }
                        if event.is_writable() {
                            self.flush(token);
                        }
                    }
                }
            }
            self.drain_events();
            self.reap();
            self.tune();
        }
        // Let the last replies (e.g. to Shutdown) go out.
        for token in self.conns.keys().copied().collect::<Vec<_>>() {
            self.flush(token);
        }
        Ok(())
    }

    fn accept(&mut self) -> std::io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut socket, _)) => {
                    if !same_user(&socket) {
                        // Only the daemon's own user may use it (the socket is 0600 too).
                        continue;
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    self.poll
                        .registry()
                        .register(&mut socket, token, Interest::READABLE)?;
                    self.conns.insert(
                        token,
                        Connection {
                            socket,
                            inbox: Vec::new(),
                            outbox: VecDeque::new(),
                            greeted: false,
                            busy: false,
                            deferred: VecDeque::new(),
                            writable_interest: false,
                            closing: false,
                        },
                    );
                }
                Err(e) if e.kind() == IoKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return Ok(());
                }
            }
        }
    }

    fn read(&mut self, token: Token) {
        let mut closed = false;
        let mut requests = Vec::new();
        if let Some(conn) = self.conns.get_mut(&token) {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match conn.socket.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => conn.inbox.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == IoKind::WouldBlock => break,
                    Err(e) if e.kind() == IoKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            // Split complete frames off the inbox.
            loop {
                if conn.inbox.len() < 4 {
                    break;
                }
                let len = u32::from_le_bytes([
                    conn.inbox[0],
                    conn.inbox[1],
                    conn.inbox[2],
                    conn.inbox[3],
                ]);
                if len > MAX_FRAME_BYTES {
                    requests.push(Err(format!("frame of {len} bytes is too large")));
                    conn.inbox.clear();
                    break;
                }
                let end = 4 + len as usize;
                if conn.inbox.len() < end {
                    break;
                }
                requests.push(decode::<Request>(&conn.inbox[4..end]).map_err(|e| e.to_string()));
                conn.inbox.drain(..end);
            }
        }
        for request in requests {
            match request {
                Ok(r) => self.handle(token, r),
                Err(message) => {
                    self.reply(token, Response::Error(ErrorInfo::bad_request(message)));
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.closing = true;
                    }
                }
            }
        }
        if closed {
            self.drop_connection(token);
        }
    }

    fn handle(&mut self, token: Token, request: Request) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.busy && !matches!(request, Request::Release { .. }) {
            conn.deferred.push_back(request);
            return;
        }
        if !conn.greeted && !matches!(request, Request::Hello { .. }) {
            conn.closing = true;
            self.reply(token, bad("the first message must be Hello"));
            return;
        }
        match request {
            Request::Hello { version, .. } => {
                if version != PROTOCOL_VERSION {
                    conn.closing = true;
                    let message = format!(
                        "protocol version mismatch: client speaks {version}, daemon speaks \
                         {PROTOCOL_VERSION}; use the client and daemon from the same release"
                    );
                    self.reply(
                        token,
                        Response::Error(ErrorInfo::new(ErrorKind::VersionMismatch, message)),
                    );
                } else {
                    conn.greeted = true;
                    self.reply(
                        token,
                        Response::Hello {
                            version: PROTOCOL_VERSION,
                            daemon_pid: std::process::id(),
                        },
                    );
                }
            }
            Request::Release { stream, released } => {
                // No reply: releases are fire-and-forget so the client never waits on them.
                if let Some(entry) = self.streams.get(&stream).filter(|e| e.conn == token) {
                    entry.slots.released(released);
                }
            }
            Request::CloseStream { stream } => {
                if self.streams.get(&stream).is_some_and(|e| e.conn == token) {
                    self.streams.remove(&stream);
                }
                self.reply(token, Response::Ok);
            }
            Request::OpenStream(spec) => {
                conn.busy = true;
                let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
                let pool = self.pool.clone();
                let cache = Arc::clone(&self.cache);
                let durations = Arc::clone(&self.durations);
                let plan = self.tuner.plan().clone();
                let streams = self.streams.len() + 1;
                let tx = self.events_tx.clone();
                let waker = Arc::clone(&self.waker);
                let spawned = std::thread::Builder::new()
                    .name("open-stream".into())
                    .spawn(move || {
                        let push_tx = tx.clone();
                        let push_waker = Arc::clone(&waker);
                        let notify = Box::new(move |message| {
                            let _ = push_tx.send(Event::Push(token, message));
                            let _ = push_waker.wake();
                        });
                        let event = match stream::open(
                            id,
                            spec,
                            &pool,
                            &cache,
                            &durations,
                            (&plan, streams),
                            notify,
                        ) {
                            Ok(opened) => Event::Opened(token, Box::new(opened)),
                            Err(e) => Event::Reply(token, Response::Error(e)),
                        };
                        let _ = tx.send(event);
                        let _ = waker.wake();
                    });
                if let Err(e) = spawned {
                    self.finish_busy(token, internal(format!("cannot start stream setup: {e}")));
                }
            }
            Request::Load(spec) => {
                conn.busy = true;
                let tx = self.events_tx.clone();
                let waker = Arc::clone(&self.waker);
                let path = spec.path.clone();
                self.pool.run(
                    move || load_reply(&spec),
                    move |reply| {
                        let reply = reply.unwrap_or_else(|failure| {
                            let error = failure.for_item(Path::new(&path));
                            Response::Error(ErrorInfo::from(&error))
                        });
                        let _ = tx.send(Event::Reply(token, reply));
                        let _ = waker.wake();
                    },
                );
            }
            Request::Transcribe(spec) => {
                conn.busy = true;
                let tx = self.events_tx.clone();
                let waker = Arc::clone(&self.waker);
                let models = Arc::clone(&self.models);
                let workers = self.tuner.plan().workers;
                let cancel = Arc::new(AtomicBool::new(false));
                self.transcriptions.insert(token, Arc::clone(&cancel));
                let spawned =
                    std::thread::Builder::new()
                        .name("transcribe".into())
                        .spawn(move || {
                            let mut push = |message| {
                                let _ = tx.send(Event::Push(token, message));
                                let _ = waker.wake();
                            };
                            let done = crate::label::service::serve_transcribe(
                                &spec, &models, workers, &cancel, &mut push,
                            );
                            let _ = tx.send(Event::Reply(token, done));
                            let _ = waker.wake();
                        });
                if let Err(e) = spawned {
                    self.finish_busy(token, internal(format!("cannot start transcription: {e}")));
                }
            }
            Request::Status => {
                let report = self.status();
                self.reply(token, Response::Status(report));
            }
            Request::Shutdown => {
                self.reply(token, Response::Ok);
                self.shutdown = true;
            }
        }
    }

    /// Let the tuner look at the last interval and apply what it decides.
    fn tune(&mut self) {
        let views: Vec<(u32, &StreamStats)> = self
            .streams
            .iter()
            .map(|(id, e)| (*id, e.stats.as_ref()))
            .collect();
        let Some(decision) = self.tuner.tick(&views, self.pool.size(), self.pool.busy()) else {
            return;
        };
        if decision.workers != self.pool.size() {
            self.pool.resize(decision.workers);
        }
        for (id, grow) in decision.depth {
            let Some(e) = self.streams.get(&id).filter(|e| e.tunable) else {
                continue;
            };
            e.slots.retarget(grow, crate::feed::tune::SETTLED_DEPTH);
        }
    }

    fn status(&self) -> StatusReport {
        let mut streams: Vec<StreamStatus> = self
            .streams
            .iter()
            .map(|(&id, e)| {
                let secs = e.opened.elapsed().as_secs_f64().max(1e-9);
                let slots = e.slots.counts();
                StreamStatus {
                    stream: id,
                    batches_done: slots.announced,
                    batches_total: e.total_batches,
                    items_per_second: e.stats.items.load(Ordering::Relaxed) as f64 / secs,
                    audio_seconds_per_second: e.stats.frames.load(Ordering::Relaxed) as f64
                        / f64::from(e.ring.geometry().sample_rate)
                        / secs,
                    workers: self.pool.size() as u32,
                    ring_depth: slots.depth,
                    ring_filled: (slots.announced - slots.handed_back) as u32,
                    skipped: e.stats.skipped.load(Ordering::Relaxed),
                    padding_share: padding_share(&e.stats),
                    decode_wait_share: self.tuner.decode_wait_share(id),
                    client_wait_share: self.tuner.client_wait_share(id),
                }
            })
            .collect();
        streams.sort_by_key(|s| s.stream);
        let cache = self.cache.stats();
        StatusReport {
            daemon_pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            clients: self.conns.len() as u32,
            streams,
            cache_bytes: cache.bytes,
            cache_capacity: cache.capacity,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            decodes: crate::feed::item::DECODES.load(Ordering::Relaxed),
            workers: self.pool.size() as u32,
            min_workers: self.tuner.plan().min_workers as u32,
            max_workers: self.tuner.plan().max_workers as u32,
            worker_busy_share: self.tuner.busy_share(),
            ring_budget_bytes: self.tuner.plan().ring_budget,
            gpus: self
                .tuner
                .plan()
                .gpus
                .iter()
                .map(|g| GpuStatus {
                    name: g.name.clone(),
                    memory_bytes: g.memory,
                })
                .collect(),
            failed_jobs: self.pool.panicked(),
            abandoned_jobs: self.pool.abandoned(),
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.events_rx.try_recv() {
            match event {
                Event::Reply(token, response) => self.finish_busy(token, response),
                Event::Push(token, response) => self.reply(token, response),
                Event::Opened(token, opened) => {
                    let opened = *opened;
                    if !self.conns.contains_key(&token) {
                        // The client left while the stream was being set up.
                        opened.cancel.store(true, Ordering::SeqCst);
                        opened.ring.unlink();
                        continue;
                    }
                    let id = opened.info.stream;
                    self.streams.insert(
                        id,
                        StreamEntry {
                            conn: token,
                            ring: Arc::clone(&opened.ring),
                            slots: opened.slots,
                            cancel: opened.cancel,
                            stats: opened.stats,
                            total_batches: opened.info.batches_per_epoch,
                            tunable: opened.tunable,
                            opened: Instant::now(),
                        },
                    );
                    // See Note [Stream open ordering]: queue the reply first, then start the
                    // driver; its first BatchReady comes through this same queue, after it.
                    self.finish_busy(token, Response::StreamOpened(opened.info));
                    if let Err(e) = (opened.start)() {
                        self.reply(
                            token,
                            Response::StreamFailed {
                                stream: id,
                                error: ErrorInfo::internal(format!(
                                    "cannot start stream thread: {e}"
                                )),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Send the reply to the outstanding request, then serve requests that waited for it.
    fn finish_busy(&mut self, token: Token, response: Response) {
        self.reply(token, response);
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            conn.busy = false;
            let Some(next) = conn.deferred.pop_front() else {
                return;
            };
            self.handle(token, next);
            if self.conns.get(&token).is_none_or(|c| c.busy) {
                return;
            }
        }
    }

    fn reply(&mut self, token: Token, response: Response) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match frame(&response) {
            Ok(bytes) => conn.outbox.extend(bytes),
            Err(e) => log::error!("cannot encode reply: {e}"),
        }
        self.flush(token);
    }

    fn flush(&mut self, token: Token) {
        let mut failed = false;
        if let Some(conn) = self.conns.get_mut(&token) {
            while !conn.outbox.is_empty() {
                let (front, _) = conn.outbox.as_slices();
                match conn.socket.write(front) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        conn.outbox.drain(..n);
                    }
                    Err(e) if e.kind() == IoKind::WouldBlock => break,
                    Err(e) if e.kind() == IoKind::Interrupted => continue,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let want_write = !conn.outbox.is_empty();
            if want_write != conn.writable_interest && !failed {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(&mut conn.socket, token, interest)
                    .is_ok()
                {
                    conn.writable_interest = want_write;
                }
            }
        }
        if failed {
            self.drop_connection(token);
        }
    }

    /// Close connections that misbehaved once their error reply is out.
    fn reap(&mut self) {
        let done: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing && c.outbox.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for token in done {
            self.drop_connection(token);
        }
    }

    /// A client went away (or was cut off): free its streams and their shared memory.
    fn drop_connection(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.socket);
        }
        if let Some(cancel) = self.transcriptions.remove(&token) {
            cancel.store(true, Ordering::Relaxed);
        }
        self.streams.retain(|_, e| e.conn != token);
    }
}

fn padding_share(stats: &StreamStats) -> f64 {
    let padded = stats.padded_frames.load(Ordering::Relaxed);
    let real = stats.frames.load(Ordering::Relaxed);
    if padded == 0 {
        0.0
    } else {
        1.0 - real as f64 / padded as f64
    }
}

fn bad(message: impl Into<String>) -> Response {
    Response::Error(ErrorInfo::bad_request(message))
}

fn internal(message: impl Into<String>) -> Response {
    Response::Error(ErrorInfo::internal(message))
}

fn load_reply(spec: &audiodecode_protocol::LoadSpec) -> Response {
    let req = load_request(spec);
    match load(Path::new(&spec.path), &req, 1) {
        Ok(audio) => {
            // Planar [channels, frames], little-endian: one bulk copy per channel.
            let mut samples = vec![0u8; audio.frames() * audio.channels() * 4];
            // `max(1)`: a zero-length range (duration 0) has no chunks but must not panic.
            for (plane, dst) in audio
                .planes
                .iter()
                .zip(samples.chunks_exact_mut((audio.frames() * 4).max(1)))
            {
                crate::feed::ring::copy_f32_le(plane, dst);
            }
            Response::Loaded(LoadedAudio {
                sample_rate: audio.sample_rate,
                channels: audio.channels() as u32,
                frames: audio.frames() as u64,
                samples,
            })
        }
        Err(e) => Response::Error(ErrorInfo::from(&e)),
    }
}

/// SO_PEERCRED: the peer must run as our user.
fn same_user(socket: &UnixStream) -> bool {
    crate::sys::peer_uid(socket) == Some(crate::sys::effective_uid())
}
