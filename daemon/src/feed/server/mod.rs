//! The daemon's control plane: a mio event loop on a Unix socket.
//!
//! The loop only parses frames, updates bookkeeping and queues replies; decoding, stream
//! setup and `load` run on other threads and report back through a channel plus a waker, so
//! a slow file never stalls another client.

mod connection;
mod handlers;
mod status;

use connection::same_user;

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiodecode_protocol::{ErrorInfo, Request, Response};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::feed::cache::{AudioCache, FileFacts};
use crate::feed::pool::Pool;
use crate::feed::ring::RingMemory;
use crate::feed::slots::SlotLedger;
use crate::feed::stats::StreamStats;
use crate::feed::stream;
use crate::feed::tune::{Plan, Tuner};

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
    facts: Arc<FileFacts>,
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
        facts: Arc::new(FileFacts::default()),
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
