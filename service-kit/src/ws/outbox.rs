//! A connection's outgoing queue: what hubs push to a session, drained by the session a whole
//! batch at a time.
//!
//! This is the fan-out's last step, taken once per viewer for every frame, so it is kept lean.
//! A push is a short lock, a move into a queue and, only when the queue was empty, a wake-up of
//! the session's task: comments that pile up while a session is busy (its socket full, its
//! thread busy with other sessions) cost no further wake-up, and the session takes them all in
//! one poll ([`OutboxStream`]) and writes them as one frame (see `session.rs`). An actor
//! mailbox, which this replaces, allocates an envelope and a queue node per message and wakes
//! the task for each.
//!
//! Once the session has sent its first frames and holds nothing back (no comments of its
//! history to leave out), it hands the outbox its connection's wire (`upgrade.rs`), and pushes
//! go *direct*: a push writes the frame, encoded once for every viewer, to the socket right
//! there, on the connection's worker, where the lanes run (`lanes.rs`). No queue, no wake-up,
//! no session poll: a comment reaches a steady viewer the way it does in a server that writes
//! to its sockets in a loop. Anything other than a frame to send (a close) turns the outbox
//! back to its queue, which the session drains as before.
//!
//! The queue is bounded: a push onto a full queue empties it, leaves only a close with
//! [`close::POLICY_VIOLATION`], and tells the pusher the viewer is gone (too slow), so one slow
//! viewer never holds up the others or grows memory. Closes themselves are never refused. A
//! direct push has the same bound, on the frames waiting in the wire for the socket to drain.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::task::AtomicWaker;
use shared_model::protocol::close;

use super::Outgoing;
use super::lanes::Together;
use crate::upgrade::{Sent, Wire};

/// The reason sent with the close of a viewer whose queue overflowed.
pub const TOO_SLOW: &str = "too slow: the outgoing queue is full";

/// The queue shared by the pushers (through [`super::Viewer`]) and the session.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The session's task, woken when a push finds the queue empty.
    waker: AtomicWaker,
    /// Frames that may wait before the connection counts as too slow.
    max: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outgoing>,
    /// No more frames: the queue overflowed (a close waits in it) or the session is gone.
    shut: bool,
    /// Pushes go straight to the connection (see the module docs); the queue is empty then.
    direct: Option<Arc<Wire>>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued (or, direct, sent or waiting for the socket).
    Queued,
    /// Not queued: the connection is too slow (it has been told to close) or gone. Forget it.
    Gone,
}

impl Outbox {
    /// A queue of at most `max` frames (at least 1), and the stream its session drains.
    pub(crate) fn new(max: usize) -> (Arc<Self>, OutboxStream) {
        let outbox = Arc::new(Self {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            max: max.max(1),
        });
        let stream = OutboxStream {
            outbox: outbox.clone(),
        };
        (outbox, stream)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every hold is a few moves of owned values: a panic cannot leave the queue half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `outgoing`, or sends it when the outbox is direct; bounded (see the module
    /// docs). Borrowed: a direct push writes the shared frame without taking a reference to it
    /// (see [`Wire::send`]); only a queued one does.
    pub(crate) fn push(&self, outgoing: &Outgoing) -> Pushed {
        let mut state = self.lock();
        if state.shut {
            return Pushed::Gone;
        }
        if let Some(wire) = &state.direct {
            let sent = match outgoing {
                Outgoing::Comments { wire: frame, .. } | Outgoing::Frame { wire: frame, .. } => {
                    wire.send(frame)
                }
                Outgoing::Close { .. } => {
                    // Back to the queue: the session closes.
                    state.direct = None;
                    return self.queue(state, outgoing.clone());
                }
            };
            return self.sent(state, sent);
        }
        self.queue(state, outgoing.clone())
    }

    /// Pushes `together`'s frames: in one write when the outbox is direct, else queued one by
    /// one; bounded as [`Self::push`] is.
    pub(crate) fn push_together(&self, together: &Together) -> Pushed {
        let mut state = self.lock();
        if state.shut {
            return Pushed::Gone;
        }
        if let Some(wire) = &state.direct {
            let sent = wire.send(&together.wire);
            return self.sent(state, sent);
        }
        let was_empty = state.queue.is_empty();
        for frame in &together.frames {
            if state.queue.len() >= self.max {
                return self.overflow(state);
            }
            state.queue.push_back(frame.clone());
        }
        drop(state);
        if was_empty {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// What a direct push that the wire answered `sent` did.
    fn sent(&self, mut state: MutexGuard<'_, State>, sent: Sent) -> Pushed {
        match sent {
            Sent::Written => Pushed::Queued,
            Sent::Waiting(frames) if frames <= self.max => Pushed::Queued,
            Sent::Waiting(_) => {
                state.direct = None;
                self.overflow(state)
            }
            Sent::Closed => {
                state.direct = None;
                state.shut = true;
                Pushed::Gone
            }
        }
    }

    /// Makes pushes direct, through `wire`, if nothing is queued (else the session tries again
    /// once it has taken what is).
    pub(crate) fn go_direct(&self, wire: &Arc<Wire>) {
        let mut state = self.lock();
        if !state.shut && state.queue.is_empty() {
            state.direct = Some(wire.clone());
        }
    }

    /// Stops pushes going direct: they wait in the queue, for the session, until it calls
    /// [`Self::go_direct`] again (while it answers a request, so the answer goes first).
    pub(crate) fn hold(&self) {
        self.lock().direct = None;
    }

    /// The viewer is too slow: its queue is replaced by a close, and it takes nothing more.
    fn overflow(&self, mut state: MutexGuard<'_, State>) -> Pushed {
        state.queue.clear();
        state.queue.push_back(Outgoing::Close {
            code: close::POLICY_VIOLATION,
            reason: TOO_SLOW.into(),
        });
        state.shut = true;
        drop(state);
        self.waker.wake();
        Pushed::Gone
    }

    /// Queues `outgoing` for the session, bounded.
    fn queue(&self, mut state: MutexGuard<'_, State>, outgoing: Outgoing) -> Pushed {
        if state.queue.len() >= self.max {
            return self.overflow(state);
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(outgoing);
        drop(state);
        if was_empty {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Queues a close past the bound; nothing is queued after it.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut state = self.lock();
        if state.shut {
            return;
        }
        state.direct = None;
        state.queue.push_back(Outgoing::Close {
            code,
            reason: reason.to_owned(),
        });
        state.shut = true;
        drop(state);
        self.waker.wake();
    }
}

/// The session's end of an [`Outbox`]: yields everything queued since the last poll, oldest
/// first, as one batch. It never ends; dropping it (the session ended) turns later pushes away.
#[derive(Debug)]
pub(crate) struct OutboxStream {
    outbox: Arc<Outbox>,
}

impl Stream for OutboxStream {
    type Item = VecDeque<Outgoing>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let outbox = &self.outbox;
        // Registered before looking, so a push between the look and the return wakes us.
        outbox.waker.register(cx.waker());
        let mut state = outbox.lock();
        if state.queue.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Some(std::mem::take(&mut state.queue)))
    }
}

impl Drop for OutboxStream {
    fn drop(&mut self) {
        let mut state = self.outbox.lock();
        state.shut = true;
        state.direct = None;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytestring::ByteString;
    use futures_util::StreamExt;

    use super::*;
    use crate::ws::test_wire_pair;

    fn frame(n: u32) -> Outgoing {
        Outgoing::text(format!("f{n}").into())
    }

    fn texts(batch: &VecDeque<Outgoing>) -> Vec<String> {
        batch
            .iter()
            .map(|o| match o {
                Outgoing::Frame { text: f, .. } | Outgoing::Comments { frame: f, .. } => {
                    f.to_string()
                }
                Outgoing::Close { code, reason } => format!("close {code} {reason}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn what_piles_up_is_taken_as_one_batch_in_order() {
        let (outbox, mut stream) = Outbox::new(8);
        for n in 0..3 {
            assert_eq!(outbox.push(&frame(n)), Pushed::Queued);
        }
        let batch = stream.next().await.unwrap();
        assert_eq!(texts(&batch), ["f0", "f1", "f2"]);
        assert_eq!(outbox.push(&frame(3)), Pushed::Queued);
        assert_eq!(texts(&stream.next().await.unwrap()), ["f3"]);
    }

    #[tokio::test]
    async fn a_full_queue_is_replaced_by_a_close_and_the_viewer_counts_as_gone() {
        let (outbox, mut stream) = Outbox::new(2);
        assert_eq!(outbox.push(&frame(0)), Pushed::Queued);
        assert_eq!(outbox.push(&frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(&frame(2)), Pushed::Gone);
        assert_eq!(outbox.push(&frame(3)), Pushed::Gone);
        let batch = stream.next().await.unwrap();
        assert_eq!(
            texts(&batch),
            [format!("close {} {TOO_SLOW}", close::POLICY_VIOLATION)]
        );
    }

    #[tokio::test]
    async fn a_close_passes_the_bound_and_ends_the_queue() {
        let (outbox, mut stream) = Outbox::new(1);
        assert_eq!(outbox.push(&frame(0)), Pushed::Queued);
        outbox.close(1001, "bye");
        assert_eq!(outbox.push(&frame(1)), Pushed::Gone);
        assert_eq!(
            texts(&stream.next().await.unwrap()),
            ["f0", "close 1001 bye"]
        );
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_session() {
        let (outbox, mut stream) = Outbox::new(4);
        let waiting = tokio::spawn(async move { stream.next().await.map(|b| texts(&b)) });
        tokio::task::yield_now().await;
        assert_eq!(outbox.push(&frame(7)), Pushed::Queued);
        assert_eq!(waiting.await.unwrap().unwrap(), ["f7"]);
    }

    #[tokio::test]
    async fn a_direct_push_is_written_to_the_socket_as_a_whole_frame_without_the_session() {
        use tokio::io::AsyncReadExt;

        let (outbox, mut stream) = Outbox::new(4);
        let (wire, mut client) = test_wire_pair().await;
        outbox.go_direct(&wire);
        let text = r#"{"type":"viewers","count":3}"#;
        assert_eq!(outbox.push(&Outgoing::text(text.into())), Pushed::Queued);
        let mut got = vec![0u8; 2 + text.len()];
        client.read_exact(&mut got).await.unwrap();
        // FIN and text opcode, unmasked, the length, then the text.
        assert_eq!(got[0], 0x81);
        assert_eq!(usize::from(got[1]), text.len());
        assert_eq!(&got[2..], text.as_bytes());
        // Nothing went through the session's queue.
        let polled = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(polled.is_err(), "the session got {polled:?}");
    }

    #[tokio::test]
    async fn a_direct_push_is_refused_while_the_session_holds_pushes_back() {
        let (outbox, _stream) = Outbox::new(4);
        let (wire, _client) = test_wire_pair().await;
        assert_eq!(outbox.push(&frame(0)), Pushed::Queued);
        // Something is queued: the session has to take it first.
        outbox.go_direct(&wire);
        assert!(outbox.lock().direct.is_none());
    }

    #[tokio::test]
    async fn a_reader_that_does_not_read_overflows_the_wire_and_is_closed_through_its_session() {
        let (outbox, mut stream) = Outbox::new(4);
        let (wire, client) = test_wire_pair().await;
        outbox.go_direct(&wire);
        let big: ByteString = format!(r#"{{"type":"x","pad":"{}"}}"#, "p".repeat(64 * 1024)).into();
        // The client never reads: the kernel's buffers fill, then the wire's bound.
        let mut pushes = 0;
        while outbox.push(&Outgoing::text(big.clone())) == Pushed::Queued {
            pushes += 1;
            assert!(pushes < 100_000, "never found too slow");
        }
        assert_eq!(outbox.push(&frame(1)), Pushed::Gone);
        let batch = stream.next().await.expect("the close");
        assert_eq!(
            texts(&batch),
            [format!("close {} {TOO_SLOW}", close::POLICY_VIOLATION)]
        );
        drop(client);
    }

    #[test]
    fn pushes_to_a_gone_session_are_turned_away() {
        let (outbox, stream) = Outbox::new(4);
        drop(stream);
        assert_eq!(outbox.push(&frame(0)), Pushed::Gone);
    }
}
