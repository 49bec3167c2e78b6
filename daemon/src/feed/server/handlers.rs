//! One function per request: `handle` checks the connection may send it (greeted, not
//! busy with an earlier request) and dispatches.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use audiodecode_protocol::{
    ErrorInfo, ErrorKind, LoadSpec, LoadedAudio, Request, Response, StreamSpec, TranscribeSpec,
    PROTOCOL_VERSION,
};
use mio::Token;

use super::{Daemon, Event};
use crate::decode::load;
use crate::feed::stream;
use crate::feed::wire::load_request;

impl Daemon {
    pub(super) fn handle(&mut self, token: Token, request: Request) {
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
            Request::Hello { version, .. } => self.hello(token, version),
            Request::Release { stream, released } => self.release(token, stream, released),
            Request::CloseStream { stream } => self.close_stream(token, stream),
            Request::OpenStream(spec) => self.open_stream(token, spec),
            Request::Load(spec) => self.load(token, spec),
            Request::Transcribe(spec) => self.transcribe(token, spec),
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

    /// The connection waits for this request's reply before its next request is handled.
    fn mark_busy(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.busy = true;
        }
    }

    fn hello(&mut self, token: Token, version: u32) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
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

    /// No reply: releases are fire-and-forget so the client never waits on them. See
    /// Note [Slot hand-off].
    fn release(&mut self, token: Token, stream: u32, released: u64) {
        if let Some(entry) = self.streams.get(&stream).filter(|e| e.conn == token) {
            entry.slots.released(released);
        }
    }

    fn close_stream(&mut self, token: Token, stream: u32) {
        if self.streams.get(&stream).is_some_and(|e| e.conn == token) {
            self.streams.remove(&stream);
        }
        self.reply(token, Response::Ok);
    }

    /// Plans the stream on a thread of its own (probing durations can take a while); the
    /// loop registers it when `Event::Opened` arrives. See Note [Stream open ordering].
    fn open_stream(&mut self, token: Token, spec: StreamSpec) {
        self.mark_busy(token);
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool.clone();
        let cache = Arc::clone(&self.cache);
        let facts = Arc::clone(&self.facts);
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
                let event =
                    match stream::open(id, spec, &pool, &cache, &facts, (&plan, streams), notify) {
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

    fn load(&mut self, token: Token, spec: LoadSpec) {
        self.mark_busy(token);
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

    fn transcribe(&mut self, token: Token, spec: TranscribeSpec) {
        self.mark_busy(token);
        let tx = self.events_tx.clone();
        let waker = Arc::clone(&self.waker);
        let models = Arc::clone(&self.models);
        let workers = (self.tuner.plan().workers, self.pool.deadline());
        let cancel = Arc::new(AtomicBool::new(false));
        self.transcriptions.insert(token, Arc::clone(&cancel));
        let spawned = std::thread::Builder::new()
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
                damage: audio.damage,
            })
        }
        Err(e) => Response::Error(ErrorInfo::from(&e)),
    }
}
