//! Framing on each connection: reading whole frames into requests, queueing replies and
//! writing them out as the socket accepts them; and who may connect.

use std::io::{ErrorKind as IoKind, Read, Write};

use audiodecode_protocol::{decode, frame, ErrorInfo, Request, Response, MAX_FRAME_BYTES};
use mio::net::UnixStream;
use mio::{Interest, Token};

use super::Daemon;

impl Daemon {
    pub(super) fn read(&mut self, token: Token) {
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

    /// Send the reply to the outstanding request, then serve requests that waited for it.
    pub(super) fn finish_busy(&mut self, token: Token, response: Response) {
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

    pub(super) fn reply(&mut self, token: Token, response: Response) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match frame(&response) {
            Ok(bytes) => conn.outbox.extend(bytes),
            Err(e) => log::error!("cannot encode reply: {e}"),
        }
        self.flush(token);
    }

    pub(super) fn flush(&mut self, token: Token) {
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
}

/// SO_PEERCRED: the peer must run as our user.
pub(super) fn same_user(socket: &UnixStream) -> bool {
    crate::sys::peer_uid(socket) == Some(crate::sys::effective_uid())
}
