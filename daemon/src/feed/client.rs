//! A minimal blocking client, for `audiodecode status`/`stop` and the Rust tests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use audiodecode_protocol::{decode, frame, Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION};

pub struct Client {
    socket: UnixStream,
    /// The daemon's process id, from the handshake.
    pub daemon_pid: u32,
}

fn protocol_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

impl Client {
    /// Connect and shake hands.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let socket = UnixStream::connect(path)?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = Self {
            socket,
            daemon_pid: 0,
        };
        match client.request(&Request::Hello {
            version: PROTOCOL_VERSION,
            client_pid: std::process::id(),
        })? {
            Response::Hello { daemon_pid, .. } => {
                client.daemon_pid = daemon_pid;
                Ok(client)
            }
            Response::Error(e) => Err(protocol_error(e.message)),
            other => Err(protocol_error(format!(
                "unexpected handshake reply {other:?}"
            ))),
        }
    }

    pub fn send(&mut self, request: &Request) -> std::io::Result<()> {
        let bytes = frame(request).map_err(|e| protocol_error(e.to_string()))?;
        self.socket.write_all(&bytes)
    }

    pub fn receive(&mut self) -> std::io::Result<Response> {
        let mut len = [0u8; 4];
        self.socket.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME_BYTES {
            return Err(protocol_error(format!("frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        self.socket.read_exact(&mut payload)?;
        decode(&payload).map_err(|e| protocol_error(e.to_string()))
    }

    /// Send a request and return its reply (pushes must not be pending on this connection).
    pub fn request(&mut self, request: &Request) -> std::io::Result<Response> {
        self.send(request)?;
        self.receive()
    }
}
