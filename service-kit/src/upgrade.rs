//! A connection after `101 Switching Protocols`: out of actix-http's HTTP/1 dispatcher, served
//! by a small pump of our own.
//!
//! actix-web runs a WebSocket as a streaming response of the connection's HTTP/1 dispatcher.
//! That dispatcher keeps a read buffer and a write buffer of 8 KiB each (`HW_BUFFER_SIZE`, not
//! configurable) for as long as the connection lives, and copies every outgoing frame into its
//! write buffer before the frame reaches the socket. For a server holding thousands of mostly idle
//! viewers, those two buffers were two thirds of each connection's memory (see BENCHMARKS.md,
//! "Memory per connection").
//!
//! actix-http has a hook for upgrades that actix-web's `HttpServer` does not expose: a service
//! given to `HttpServiceBuilder::upgrade` receives every request that asks for an upgrade,
//! together with the connection (the socket, the codec and those buffers). [`crate::server`]
//! builds the server itself with that hook and [`Upgrade`] behind it. The request still goes
//! through the whole application, the same one every other request goes through: the same
//! middleware, routes and handlers, and for a WebSocket route the session actor of
//! `ws::session`, one per connection, started through actix-web-actors as before. Only what
//! happens to the bytes afterwards is ours:
//!
//! - incoming: the request's payload is an `Incoming` stream, which reads the socket when the
//!   session asks for more and keeps no buffer between reads;
//! - outgoing: the connection's [`Wire`], handed to the application in the request's
//!   extensions, takes whole encoded frames and writes each to the socket at once, on the
//!   caller's thread, when nothing is waiting ahead of it: the session writes its own frames
//!   there, and the deliveries on the connection's worker (`ws/lanes.rs`) write comments there
//!   without waking the session at all. What the socket cannot take yet waits in the wire, in
//!   order, for `Pump`, which writes it (several frames in one `writev`, without copying them)
//!   once the socket drains. `Pump` also writes the response's own chunks: the head, and the
//!   body of an answer that is not an upgrade. It stops taking body chunks past
//!   [`WRITE_BACKLOG`] waiting bytes, as actix-http does; frames written to the wire are bounded
//!   by their writer (a session's outbox: see `ws/outbox.rs`; a reader that stopped reading is
//!   dropped by the kernel: see [`crate::server::serve_ws`]).
//!
//! A request that asked for an upgrade but is answered otherwise (403 for a foreign origin, 429,
//! 404, ...) gets its response, with `Connection: close`, and the connection is closed.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_codec::{Encoder, Framed};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::ws::{CloseReason, OpCode, Parser};
use actix_http::{
    BoxedPayloadStream, ConnectionType, HttpMessage, Payload, Request, Response, StatusCode,
};
use actix_rt::net::TcpStream;
use actix_service::{Service, ServiceFactory};
use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_core::future::LocalBoxFuture;
use futures_util::task::AtomicWaker;

/// Bytes of outgoing chunks held while the socket cannot take them, before the response (the
/// session) stops being polled: actix-http's own default (`h1_write_buffer_size`, 32 KiB).
pub const WRITE_BACKLOG: usize = 32 * 1024;

/// Bytes read from the socket at most at once, into a buffer on the stack; each read becomes a
/// chunk of exactly the bytes read.
const READ_CHUNK: usize = 8 * 1024;

/// How long a finished connection waits for the client to close its side, reading and
/// discarding what it still sends (actix-http's `client_disconnect_timeout` as `HttpServer`
/// sets it).
const LINGER: Duration = Duration::from_secs(1);

/// Chunks given to one `writev` at most.
const MAX_SLICES: usize = 64;

/// The application's service of one worker, once created: the HTTP/1 path creates it, and the
/// upgrade path borrows it (a worker runs one of each, on its own thread).
type Slot<S> = Rc<OnceCell<Rc<S>>>;

/// The application's service factory, made to share what it creates with [`Upgrade`]. Build the
/// pair with [`share`].
pub struct Sharing<F: ServiceFactory<Request>> {
    factory: F,
    slot: Slot<F::Service>,
}

/// The service for requests that ask for an upgrade: they go through the application shared
/// with [`Sharing`], and a `101` answer is then served by this module (see the module's
/// documentation).
pub struct Upgrade<S, B> {
    slot: Slot<S>,
    body: PhantomData<fn() -> B>,
}

/// The application's factory (`factory`) for actix-http's HTTP/1 service, and the upgrade
/// service that uses the same application. `B` is the application's response body.
pub fn share<F, B>(factory: F) -> (Sharing<F>, Upgrade<F::Service, B>)
where
    F: ServiceFactory<Request>,
{
    let slot = Rc::new(OnceCell::new());
    (
        Sharing {
            factory,
            slot: slot.clone(),
        },
        Upgrade {
            slot,
            body: PhantomData,
        },
    )
}

impl<F> ServiceFactory<Request> for Sharing<F>
where
    F: ServiceFactory<Request>,
    F::Future: 'static,
    F::Service: 'static,
{
    type Response = F::Response;
    type Error = F::Error;
    type Config = F::Config;
    type Service = Rc<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, config: F::Config) -> Self::Future {
        let created = self.factory.new_service(config);
        let slot = self.slot.clone();
        Box::pin(async move {
            let service = Rc::new(created.await?);
            // One application per worker: the factory is asked once.
            let _ = slot.set(service.clone());
            Ok(service)
        })
    }
}

impl<S, B> ServiceFactory<(Request, Framed<TcpStream, Codec>)> for Upgrade<S, B>
where
    S: Service<Request> + 'static,
    S::Response: Into<Response<B>>,
    S::Error: Into<Response<BoxBody>>,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Config = ();
    type Service = Self;
    type InitError = ();
    type Future = std::future::Ready<Result<Self, ()>>;

    fn new_service(&self, (): ()) -> Self::Future {
        std::future::ready(Ok(Self {
            slot: self.slot.clone(),
            body: PhantomData,
        }))
    }
}

impl<S, B> Service<(Request, Framed<TcpStream, Codec>)> for Upgrade<S, B>
where
    S: Service<Request> + 'static,
    S::Response: Into<Response<B>>,
    S::Error: Into<Response<BoxBody>>,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = LocalBoxFuture<'static, Result<(), Infallible>>;

    actix_service::always_ready!();

    fn call(&self, (request, framed): (Request, Framed<TcpStream, Codec>)) -> Self::Future {
        let app = self.slot.get().cloned();
        Box::pin(async move {
            match app {
                Some(app) => {
                    if let Err(e) = serve(&app, request, framed).await {
                        // The client went away or reset the connection: nothing to do.
                        log::debug!("an upgraded connection ended: {e}");
                    }
                }
                // The HTTP/1 path creates the application before any request is read.
                None => log::error!("an upgrade request came before the application existed"),
            }
            Ok(())
        })
    }
}

/// Answers `request` through `app`, then serves the connection: a `101` as an upgraded
/// connection until its response (the session) ends, anything else as one response.
async fn serve<S, B>(app: &S, request: Request, framed: Framed<TcpStream, Codec>) -> io::Result<()>
where
    S: Service<Request>,
    S::Response: Into<Response<B>>,
    S::Error: Into<Response<BoxBody>>,
    B: MessageBody + 'static,
{
    let parts = framed.into_parts();
    let wire = Wire::new(parts.io);
    let mut codec = parts.codec;
    // What the client sent after its request (its first frames, when it did not wait for the
    // answer), copied out so the dispatcher's 8 KiB buffers are freed here.
    let early = (!parts.read_buf.is_empty()).then(|| Bytes::copy_from_slice(&parts.read_buf));
    drop(parts.read_buf);
    drop(parts.write_buf);

    let incoming: BoxedPayloadStream = Box::pin(Incoming {
        wire: wire.clone(),
        early,
        ended: false,
    });
    let (request, _) = request.replace_payload(Payload::from(incoming));
    request.extensions_mut().insert(wire.clone());
    let response: Response<BoxBody> = match app.call(request).await {
        Ok(response) => response.into().map_body(|_, body| body.boxed()),
        Err(error) => error.into(),
    };

    let (mut head, body) = response.into_parts();
    let switching = head.status() == StatusCode::SWITCHING_PROTOCOLS;
    let size = if switching {
        BodySize::Stream
    } else {
        head.head_mut().set_connection_type(ConnectionType::Close);
        body.size()
    };
    let mut out = BytesMut::new();
    codec.encode(Message::Item((head, size)), &mut out)?;
    // The head goes out before any frame: the session has only been created so far, and runs
    // once the pump polls the body.
    wire.lock().queue(out.freeze());
    Pump {
        wire,
        body,
        body_done: false,
        // An upgraded connection's bytes go out as they are; any other response's body through
        // the codec (its length or chunked framing).
        codec: (!switching).then_some(codec),
    }
    .start()
    .await
}

/// The outgoing side of an upgraded connection, shared by its pump, its session and the
/// deliveries on its worker (see the module's documentation). The application finds it in the
/// request's extensions (`Arc<Wire>`).
pub struct Wire {
    io: TcpStream,
    state: Mutex<WireState>,
    /// The pump's task, woken when a frame has to wait for the socket or a write failed.
    pump: AtomicWaker,
    /// Calls of [`Wire::send`], for the tests.
    #[cfg(test)]
    pub(crate) sends: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct WireState {
    /// Chunks not yet (entirely) written, the first possibly partly.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    queued: usize,
    /// No more frames: a close frame was written, or the connection ended.
    closed: bool,
    /// A write failed: the pump ends the connection with this.
    failed: Option<io::Error>,
}

impl WireState {
    fn queue(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.queued += chunk.len();
            self.queue.push_back(chunk);
        }
    }

    /// Drops the first `written` bytes of the queue.
    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.queue.pop_front();
        }
    }
}

/// What became of a frame given to a [`Wire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The socket took all of it.
    Written,
    /// It waits for the socket, with this many chunks in all (itself included).
    Waiting(usize),
    /// The connection takes no more frames (it closed, or a write failed).
    Closed,
}

impl Wire {
    /// The wire of a connection on `io`. Nothing writes what has to wait unless a pump of
    /// this module runs it.
    pub(crate) fn new(io: TcpStream) -> Arc<Self> {
        Arc::new(Self {
            io,
            state: Mutex::default(),
            pump: AtomicWaker::new(),
            #[cfg(test)]
            sends: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        // Every hold is a few moves of owned values and a write: a panic cannot leave the
        // queue half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a whole encoded `frame`: at once if nothing waits ahead of it, else after what
    /// does (see [`Sent`]). Borrowed, because a frame shared by thousands of viewers is written
    /// to most of their sockets at once: only what has to wait takes a reference to it (its
    /// count is a line of memory that every worker writing the frame would fight over).
    pub fn send(&self, frame: &Bytes) -> Sent {
        #[cfg(test)]
        self.sends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.lock();
        if state.closed {
            return Sent::Closed;
        }
        if !state.queue.is_empty() {
            // The pump is on it: it was woken when the first of these had to wait.
            state.queue(frame.clone());
            return Sent::Waiting(state.queue.len());
        }
        let rest = match self.io.try_write(frame) {
            Ok(written) if written == frame.len() => return Sent::Written,
            Ok(written) => frame.slice(written..),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => frame.clone(),
            Err(e) => {
                state.closed = true;
                state.failed = Some(e);
                drop(state);
                self.pump.wake();
                return Sent::Closed;
            }
        };
        state.queue(rest);
        drop(state);
        self.pump.wake();
        Sent::Waiting(1)
    }

    /// Sends a text frame.
    pub fn text(&self, text: &str) -> Sent {
        self.send(&text_frame(text.as_bytes()))
    }

    /// Sends a ping or a pong with `payload`.
    pub fn control(&self, op: OpCode, payload: &[u8]) -> Sent {
        let mut frame = BytesMut::new();
        Parser::write_message(&mut frame, payload, op, true, false);
        self.send(&frame.freeze())
    }

    /// Sends a close frame; the wire takes nothing after it.
    pub fn close(&self, reason: Option<CloseReason>) -> Sent {
        let mut frame = BytesMut::new();
        Parser::write_close(&mut frame, reason, false);
        let sent = self.send(&frame.freeze());
        self.lock().closed = true;
        sent
    }
}

/// A whole, unmasked text frame of `payload`, as a server sends it: encoded once, it can go to
/// any number of connections.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut frame, payload, OpCode::Text, true, false);
    frame.freeze()
}

/// The request's payload on an upgraded connection: what the client sends, read when the
/// session asks for it.
struct Incoming {
    wire: Arc<Wire>,
    /// Bytes that arrived with the request, handed over first.
    early: Option<Bytes>,
    /// End of stream, or an error, was handed over.
    ended: bool,
}

impl Stream for Incoming {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(early) = this.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            // Readiness first: the session polls its payload each time it runs, and most of
            // those times there is nothing to read.
            if let Err(e) = ready!(this.wire.io.poll_read_ready(cx)) {
                this.ended = true;
                return Poll::Ready(Some(Err(PayloadError::Io(e))));
            }
            let mut buf = [0u8; READ_CHUNK];
            match this.wire.io.try_read(&mut buf) {
                Ok(0) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Ok(n) => return Poll::Ready(Some(Ok(Bytes::copy_from_slice(&buf[..n])))),
                // Readiness was stale: poll it again, which registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(e))));
                }
            }
        }
    }
}

/// Writes what waits in the wire, and the response's chunks, until the response ends and all of
/// it is sent.
struct Pump {
    wire: Arc<Wire>,
    body: BoxBody,
    body_done: bool,
    /// For a response that is not an upgrade: the codec that frames its body.
    codec: Option<Codec>,
}

impl Pump {
    async fn start(mut self) -> io::Result<()> {
        let pumped = std::future::poll_fn(|cx| self.poll_pump(cx)).await;
        self.wire.lock().closed = true;
        pumped?;
        // Everything is written: say so (FIN), then read until the client closes its side too
        // (or `LINGER` passes). Closing a socket with unread data in it sends a reset, and a
        // reset makes the client's kernel throw away what it has not read yet: the last frames,
        // the close frame among them. A client that answered our last ping late would lose them.
        socket2::SockRef::from(&self.wire.io).shutdown(std::net::Shutdown::Write)?;
        let _ = actix_rt::time::timeout(LINGER, drain(&self.wire.io)).await;
        Ok(())
    }

    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Registered before looking, so a frame that has to wait from now on wakes us.
        self.wire.pump.register(cx.waker());
        loop {
            // Take what the response has ready, up to the backlog.
            while !self.body_done && self.wire.lock().queued < WRITE_BACKLOG {
                match Pin::new(&mut self.body).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => self.push(Some(chunk))?,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(io::Error::other(e.to_string())));
                    }
                    Poll::Ready(None) => {
                        self.body_done = true;
                        self.push(None)?;
                    }
                    Poll::Pending => break,
                }
            }
            let mut state = self.wire.lock();
            if let Some(e) = state.failed.take() {
                return Poll::Ready(Err(e));
            }
            if state.queue.is_empty() {
                return if self.body_done {
                    state.closed = true;
                    Poll::Ready(Ok(()))
                } else {
                    // The response registered the waker, and so did the wire.
                    Poll::Pending
                };
            }
            drop(state);
            // Write it; once the socket took all of it, see whether more is ready.
            ready!(self.flush(cx))?;
        }
    }

    /// Queues a chunk of the body, or its end (`None`), framed by the codec when there is one.
    fn push(&mut self, chunk: Option<Bytes>) -> io::Result<()> {
        let chunk = match &mut self.codec {
            None => match chunk {
                Some(chunk) => chunk,
                None => return Ok(()),
            },
            Some(codec) => {
                let mut framed = BytesMut::new();
                codec.encode(Message::Chunk(chunk), &mut framed)?;
                framed.freeze()
            }
        };
        self.wire.lock().queue(chunk);
        Ok(())
    }

    /// Writes the wire's queue to the socket, as much of it as fits in each `writev`.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = &self.wire.io;
        loop {
            if self.wire.lock().queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(io.poll_write_ready(cx))?;
            let mut state = self.wire.lock();
            let written = if state.queue.len() == 1 {
                // The usual case, one frame: `send`, a little cheaper than `writev`.
                io.try_write(&state.queue[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slice, chunk) in slices.iter_mut().zip(&state.queue) {
                    *slice = IoSlice::new(chunk);
                    count += 1;
                }
                io.try_write_vectored(&slices[..count])
            };
            match written {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => state.consume(written),
                // Readiness was stale: poll it again, which registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Reads and discards until the client closes its side or the connection fails.
async fn drain(io: &TcpStream) {
    // On the heap: a buffer on the stack would be part of every connection's future, for the
    // connection's whole life.
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        if io.readable().await.is_err() {
            return;
        }
        match io.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
