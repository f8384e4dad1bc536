//! Bytes on the wire, counted at the client's sockets: a TCP stream wrapper that adds every byte
//! it reads or writes to a shared [`Traffic`] tally. HTTP headers, WebSocket handshakes, frame
//! headers, pings and pongs are all in the count; TCP/IP headers (below the socket) are not.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Running totals for a group of connections (one viewer, or every viewer of a transport).
/// Relaxed atomics: each counter is a plain tally read for reporting, never used to order
/// other memory.
#[derive(Debug, Default)]
pub struct Traffic {
    up: AtomicU64,
    down: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Traffic {
    /// A fresh tally behind an `Arc`, to share between connections.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts one request (an HTTP request or a WebSocket upgrade).
    pub fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// The totals of a [`Traffic`] at one moment; subtract two for a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrafficSnapshot {
    /// Bytes written by the client (requests, frames, pongs).
    pub bytes_up: u64,
    /// Bytes read by the client (responses, frames, pings).
    pub bytes_down: u64,
    /// HTTP requests and WebSocket upgrades.
    pub requests: u64,
    /// TCP connections opened.
    pub connections: u64,
}

impl TrafficSnapshot {
    /// Both directions.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }
}

impl std::ops::Sub for TrafficSnapshot {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            bytes_up: self.bytes_up.saturating_sub(earlier.bytes_up),
            bytes_down: self.bytes_down.saturating_sub(earlier.bytes_down),
            requests: self.requests.saturating_sub(earlier.requests),
            connections: self.connections.saturating_sub(earlier.connections),
        }
    }
}

/// A stream that adds what passes through it to a [`Traffic`].
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`, counting into `traffic`.
    pub fn new(inner: S, traffic: Arc<Traffic>) -> Self {
        Self { inner, traffic }
    }
}

/// Opens a TCP connection to `authority` (`host:port`) with Nagle off, counted in `traffic`.
pub async fn connect_tcp(
    authority: &str,
    traffic: &Arc<Traffic>,
) -> io::Result<CountingStream<TcpStream>> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    traffic.connections.fetch_add(1, Ordering::Relaxed);
    Ok(CountingStream::new(stream, traffic.clone()))
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let read = (buf.filled().len() - before) as u64;
            this.traffic.down.fetch_add(read, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = poll {
            this.traffic.up.fetch_add(written as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = poll {
            this.traffic.up.fetch_add(written as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_every_byte_each_way() {
        let traffic = Traffic::shared();
        let (client, mut server) = tokio::io::duplex(64);
        let mut counted = CountingStream::new(client, traffic.clone());
        counted.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut seen = [0u8; 18];
        server.read_exact(&mut seen).await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut answer = [0u8; 17];
        counted.read_exact(&mut answer).await.unwrap();
        let totals = traffic.snapshot();
        assert_eq!((totals.bytes_up, totals.bytes_down), (18, 17));
        assert_eq!(totals.bytes_total(), 35);
    }

    #[test]
    fn snapshots_subtract_into_a_window() {
        let later = TrafficSnapshot {
            bytes_up: 10,
            bytes_down: 100,
            requests: 3,
            connections: 1,
        };
        let earlier = TrafficSnapshot {
            bytes_up: 4,
            bytes_down: 40,
            requests: 1,
            connections: 1,
        };
        assert_eq!(
            later - earlier,
            TrafficSnapshot {
                bytes_up: 6,
                bytes_down: 60,
                requests: 2,
                connections: 0
            }
        );
    }
}
