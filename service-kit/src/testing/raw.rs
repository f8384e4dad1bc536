//! WebSocket by hand, for tests whose attack a real client will not send: a frame header that
//! lies about its length, a reader that never reads. [`RawWs`] does the upgrade over a plain TCP
//! socket and then reads and writes bytes and frames as the test says; [`vm_rss_kib`] and
//! [`tcp_state`] look at the server from outside (its memory, its end of a connection).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// The opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// The opcode of a ping frame.
pub const PING: u8 = 0x9;

/// A WebSocket connection driven byte by byte: frames are read through [`FrameReader`], bytes
/// written through the socket's write half. [`RawWs::into_split`] gives the two to separate
/// tasks (one floods, one reads).
pub struct RawWs {
    /// What the server sends.
    pub reader: FrameReader,
    /// The socket's write half.
    pub writer: OwnedWriteHalf,
}

/// The read half of a [`RawWs`], cut into the server's frames.
pub struct FrameReader {
    half: OwnedReadHalf,
    /// Bytes read past the last frame returned.
    buffer: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// Its opcode ([`TEXT`], [`CLOSE`], ...).
    pub opcode: u8,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The header of a masked client frame declaring `len` payload bytes (mask `0, 0, 0, 0`, so the
/// payload goes as it is).
pub fn client_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// A whole masked client frame.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = client_header(opcode, fin, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

impl RawWs {
    /// Connects to `addr` and upgrades `path`; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        Self::connect_with(addr, path, None).await
    }

    /// Like [`RawWs::connect`], with a small receive buffer when given (a reader that stalls
    /// quickly).
    pub async fn connect_with(addr: SocketAddr, path: &str, recv_buffer: Option<u32>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .expect("a receive buffer size");
        }
        let stream = socket.connect(addr).await.expect("the server accepts");
        let (status, head, raw) = upgrade(stream, addr, path, &[]).await;
        assert_eq!(status, 101, "the upgrade was refused: {head}");
        raw
    }

    /// Like [`RawWs::connect`], with `first` (frames, say) written in the same write as the
    /// upgrade request, before the answer is read: a client that does not wait for the `101`.
    pub async fn connect_sending(addr: SocketAddr, path: &str, first: &[u8]) -> Self {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (status, head, raw) = upgrade(stream, addr, path, first).await;
        assert_eq!(status, 101, "the upgrade was refused: {head}");
        raw
    }

    /// Tries the upgrade on a fresh connection; the status and the answer's text (its head,
    /// and its body when it was refused).
    pub async fn try_upgrade(addr: SocketAddr, path: &str) -> (u16, String) {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        let (status, mut text, mut raw) = upgrade(stream, addr, path, &[]).await;
        if status != 101 {
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                raw.reader.half.read_to_end(&mut rest),
            )
            .await;
            text.push_str(&String::from_utf8_lossy(&raw.reader.buffer));
            text.push_str(&String::from_utf8_lossy(&rest));
        }
        (status, text)
    }

    /// This end's address (the server sees it as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().expect("a connected socket")
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&client_frame(TEXT, true, text.as_bytes()))
            .await
            .expect("the frame is sent");
    }

    /// See [`FrameReader::next_frame`].
    pub async fn next_frame(&mut self, limit: Duration) -> Option<ServerFrame> {
        self.reader.next_frame(limit).await
    }

    /// See [`FrameReader::recv_close`].
    pub async fn recv_close(&mut self, limit: Duration) -> Option<ServerFrame> {
        self.reader.recv_close(limit).await
    }

    /// The reader and the write half, for separate tasks.
    pub fn into_split(self) -> (FrameReader, OwnedWriteHalf) {
        (self.reader, self.writer)
    }
}

/// Sends the upgrade request for `path`, and `first` right behind it, and reads the answer's
/// head: its status, its text, and the connection (what came after the head stays buffered for
/// the frames).
async fn upgrade(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    first: &[u8],
) -> (u16, String, RawWs) {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(first);
    stream
        .write_all(&request)
        .await
        .expect("the request is sent");
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer to the upgrade within 10 s")
            .expect("the answer is read");
        assert!(n > 0, "the server closed before answering the upgrade");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    buffer.drain(..head_end);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (half, writer) = stream.into_split();
    let raw = RawWs {
        reader: FrameReader { half, buffer },
        writer,
    };
    (status, head, raw)
}

impl FrameReader {
    /// The next frame from the server, or `None` when the connection ended (EOF or reset)
    /// first. Panics if nothing arrives within `limit`.
    pub async fn next_frame(&mut self, limit: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let read = tokio::time::timeout_at(deadline, self.half.read(&mut chunk))
                .await
                .expect("a frame from the server in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a close frame, skipping others; `None` if the connection ended
    /// without one. Panics if it does not come within `limit`.
    pub async fn recv_close(&mut self, limit: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_frame(left).await?;
            if frame.opcode == CLOSE {
                return Some(frame);
            }
        }
    }

    /// Reads and drops whatever comes until the connection ends; `Ok` at a clean end (EOF),
    /// the error at a reset. Panics if it has not ended within `limit`.
    pub async fn read_to_end(&mut self, limit: Duration) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::time::timeout_at(deadline, self.half.read(&mut chunk))
                .await
                .expect("the connection ends in time")?;
            if read == 0 {
                return Ok(());
            }
        }
    }

    /// Takes one whole server (unmasked) frame off the buffer, if there is one.
    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let b = &self.buffer;
        if b.len() < 2 {
            return None;
        }
        let (len, start) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut be = [0; 8];
                be.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let end = start + usize::try_from(len).expect("a frame that fits in memory");
        if b.len() < end {
            return None;
        }
        let frame = ServerFrame {
            opcode: b[0] & 0x0F,
            payload: b[start..end].to_vec(),
        };
        self.buffer.drain(..end);
        Some(frame)
    }
}

/// The resident memory of process `pid` (`VmRSS` in `/proc/PID/status`), in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// The kernel's state of the IPv4 TCP socket whose local end is `local` and remote end `remote`
/// (from `/proc/net/tcp`: 1 established, 4 FIN-WAIT-1, 6 TIME-WAIT, 8 CLOSE-WAIT...), or `None`
/// when there is no such socket.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 addresses only"),
    };
    let (local, remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields[3], 16).ok())
            .flatten()
    })
}
