//! A guard on the raw bytes of a WebSocket connection, between the HTTP layer and the frame
//! decoder: it reads each frame's header as the bytes pass and ends the stream as soon as a
//! header declares a payload larger than the cap, before any of that payload is read.
//!
//! actix-http checks a frame's size only once the whole frame is buffered, and actix-web-actors
//! copies every chunk into an unbounded buffer before decoding, so a header declaring 2^40 bytes
//! would otherwise have the server buffer whatever the client sends until the heartbeat ends it.
//! The guard holds a few bytes of state (a partial header, the payload left of the current
//! frame); the bytes themselves pass through untouched.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use actix_http::error::PayloadError;
use actix_web::web::Bytes;
use futures_core::Stream;

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask (RFC 6455 section 5.2).
const MAX_HEADER: usize = 14;

/// Passes a connection's bytes through, ending with [`PayloadError::Overflow`] (and setting the
/// shared flag, so the session knows to close with 1009) at the first frame header that declares
/// more than `max_payload` bytes.
pub(crate) struct FrameGuard<S> {
    inner: S,
    scanner: HeaderScanner,
    /// Set when a frame was refused; the session reads it.
    tripped: Arc<AtomicBool>,
    /// Nothing more is read once a frame was refused.
    done: bool,
}

impl<S> FrameGuard<S> {
    /// Guards `inner`; `tripped` is set when a frame is refused.
    pub(crate) fn new(inner: S, max_payload: usize, tripped: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            scanner: HeaderScanner::new(max_payload),
            tripped,
            done: false,
        }
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.as_mut().get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scanner.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(Oversize) => {
                    this.done = true;
                    this.tripped.store(true, Ordering::SeqCst);
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

/// A frame header declared a payload over the cap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Oversize;

/// Follows the frame boundaries of a byte stream: a header (possibly split across chunks), then
/// its payload, which is skipped without looking at it.
#[derive(Debug)]
pub(crate) struct HeaderScanner {
    max_payload: u64,
    /// The current header's bytes so far.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
}

impl HeaderScanner {
    pub(crate) fn new(max_payload: usize) -> Self {
        Self {
            max_payload: u64::try_from(max_payload).unwrap_or(u64::MAX),
            header: [0; MAX_HEADER],
            header_len: 0,
            remaining: 0,
        }
    }

    /// Takes the next bytes of the stream; `Err` at a header declaring too large a payload.
    pub(crate) fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Oversize> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip =
                    usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                bytes = &bytes[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len < 2 {
                continue;
            }
            let (length_bytes, masked) = match self.header[1] & 0x7F {
                126 => (2, self.header[1] & 0x80 != 0),
                127 => (8, self.header[1] & 0x80 != 0),
                _ => (0, self.header[1] & 0x80 != 0),
            };
            let length_end = 2 + length_bytes;
            if self.header_len < length_end {
                continue;
            }
            let length = match length_bytes {
                0 => u64::from(self.header[1] & 0x7F),
                2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                _ => {
                    let mut be = [0; 8];
                    be.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(be)
                }
            };
            // Refused as soon as the length is known, before the mask and the payload.
            if length > self.max_payload {
                return Err(Oversize);
            }
            let header_end = length_end + if masked { 4 } else { 0 };
            if self.header_len == header_end {
                self.header_len = 0;
                self.remaining = length;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame of `len` payload bytes (the payload is zeros).
    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(0, len));
        out
    }

    #[test]
    fn frames_up_to_the_cap_pass_in_any_split() {
        let mut stream = Vec::new();
        for len in [0, 1, 125, 126, 4096, 300] {
            stream.extend(frame(0x1, true, len));
        }
        // A fragmented message: each frame under the cap passes (the session caps the whole).
        stream.extend(frame(0x1, false, 4000));
        stream.extend(frame(0x0, true, 4000));
        for split in [1, 2, 3, 7, 13, 14, 100, stream.len()] {
            let mut scanner = HeaderScanner::new(4096);
            for chunk in stream.chunks(split) {
                assert_eq!(scanner.scan(chunk), Ok(()), "split {split}");
            }
            assert_eq!((scanner.header_len, scanner.remaining), (0, 0));
        }
    }

    #[test]
    fn a_header_over_the_cap_is_refused_before_its_payload() {
        for len in [4097, 70_000, 1 << 40] {
            let mut bytes = vec![0x81];
            if len <= usize::from(u16::MAX) {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
            // The length alone is enough, fed one byte at a time after a good frame.
            let mut scanner = HeaderScanner::new(4096);
            assert_eq!(scanner.scan(&frame(0x1, true, 10)), Ok(()));
            let (last, first) = bytes.split_last().unwrap();
            for b in first {
                assert_eq!(scanner.scan(&[*b]), Ok(()));
            }
            assert_eq!(scanner.scan(&[*last]), Err(Oversize), "{len}");
        }
    }
}
