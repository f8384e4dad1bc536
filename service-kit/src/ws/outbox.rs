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
//! The queue is bounded: a push onto a full queue empties it, leaves only a close with
//! [`close::POLICY_VIOLATION`], and tells the pusher the viewer is gone (too slow), so one slow
//! viewer never holds up the others or grows memory. Closes themselves are never refused.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::task::AtomicWaker;
use shared_model::protocol::close;

use super::Outgoing;

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
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
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

    /// Queues `outgoing`, bounded (see the module docs).
    pub(crate) fn push(&self, outgoing: Outgoing) -> Pushed {
        let mut state = self.lock();
        if state.shut {
            return Pushed::Gone;
        }
        if state.queue.len() >= self.max {
            state.queue.clear();
            state.queue.push_back(Outgoing::Close {
                code: close::POLICY_VIOLATION,
                reason: TOO_SLOW.into(),
            });
            state.shut = true;
            drop(state);
            self.waker.wake();
            return Pushed::Gone;
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
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn frame(n: u32) -> Outgoing {
        Outgoing::Frame(format!("f{n}").into())
    }

    fn texts(batch: &VecDeque<Outgoing>) -> Vec<String> {
        batch
            .iter()
            .map(|o| match o {
                Outgoing::Frame(f) | Outgoing::Comments { frame: f, .. } => f.to_string(),
                Outgoing::Close { code, reason } => format!("close {code} {reason}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn what_piles_up_is_taken_as_one_batch_in_order() {
        let (outbox, mut stream) = Outbox::new(8);
        for n in 0..3 {
            assert_eq!(outbox.push(frame(n)), Pushed::Queued);
        }
        let batch = stream.next().await.unwrap();
        assert_eq!(texts(&batch), ["f0", "f1", "f2"]);
        assert_eq!(outbox.push(frame(3)), Pushed::Queued);
        assert_eq!(texts(&stream.next().await.unwrap()), ["f3"]);
    }

    #[tokio::test]
    async fn a_full_queue_is_replaced_by_a_close_and_the_viewer_counts_as_gone() {
        let (outbox, mut stream) = Outbox::new(2);
        assert_eq!(outbox.push(frame(0)), Pushed::Queued);
        assert_eq!(outbox.push(frame(1)), Pushed::Queued);
        assert_eq!(outbox.push(frame(2)), Pushed::Gone);
        assert_eq!(outbox.push(frame(3)), Pushed::Gone);
        let batch = stream.next().await.unwrap();
        assert_eq!(
            texts(&batch),
            [format!("close {} {TOO_SLOW}", close::POLICY_VIOLATION)]
        );
    }

    #[tokio::test]
    async fn a_close_passes_the_bound_and_ends_the_queue() {
        let (outbox, mut stream) = Outbox::new(1);
        assert_eq!(outbox.push(frame(0)), Pushed::Queued);
        outbox.close(1001, "bye");
        assert_eq!(outbox.push(frame(1)), Pushed::Gone);
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
        assert_eq!(outbox.push(frame(7)), Pushed::Queued);
        assert_eq!(waiting.await.unwrap().unwrap(), ["f7"]);
    }

    #[test]
    fn pushes_to_a_gone_session_are_turned_away() {
        let (outbox, stream) = Outbox::new(4);
        drop(stream);
        assert_eq!(outbox.push(frame(0)), Pushed::Gone);
    }
}
