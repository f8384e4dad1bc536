//! Delivery on the connection's own thread.
//!
//! A hub runs on one thread and its viewers' sessions on the server's workers. Pushing a frame
//! into each viewer's outbox from the hub's thread costs, per viewer, a lock and a queue whose
//! memory the worker owns (a cache miss on both sides) and a wake-up of a task on another
//! thread (through the worker's shared queue). Instead, a room groups its viewers by the worker
//! their connection lives on (its *lane*), and sends each worker one task per frame, which does
//! the pushes there: for the worker, the outboxes and the wake-ups are local.
//!
//! A lane's tasks run in the order they were sent, so each connection still gets its frames in
//! the order the hub sent them. A push that finds a viewer too slow (`outbox.rs`) cannot tell
//! the hub at once; the lane notes the viewer in its room's `gone` list, which the hub reads
//! on its next count report ([`super::hub::COUNT_INTERVAL`]), and forgets it then. A viewer
//! made outside an actix arbiter (a test's stand-in) has no lane and is pushed to directly.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_rt::Arbiter;
use tokio::sync::mpsc;

use super::outbox::{Outbox, Pushed};
use super::{ConnectionId, Outgoing};

/// One worker thread, as a place to run deliveries: a task of its own there runs them, in the
/// order they were sent, as soon as that thread gets to it (one wake-up for however many are
/// waiting; not a task spawned per delivery, which would wait its turn behind every session the
/// thread has to run, a second time).
#[derive(Debug)]
pub(crate) struct Lane {
    /// Tells lanes apart.
    pub(crate) id: usize,
    jobs: mpsc::UnboundedSender<Job>,
}

/// A delivery, run on its lane's thread.
type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static LANE: OnceCell<Option<Arc<Lane>>> = const { OnceCell::new() };
}

/// The lane of the calling thread, if it is an actix arbiter (its task is started then).
pub(crate) fn current() -> Option<Arc<Lane>> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    LANE.with(|lane| {
        lane.get_or_init(|| {
            Arbiter::try_current()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            actix_rt::spawn(async move {
                while let Some(job) = queue.recv().await {
                    job();
                }
            });
            Some(Arc::new(Lane {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                jobs,
            }))
        })
        .clone()
    })
}

/// The viewers a delivery goes to: their ids and outboxes.
pub(crate) type Members = Arc<[(ConnectionId, Arc<Outbox>)]>;

/// Viewers found too slow by a lane, for the hub to forget.
pub(crate) type Gone = Arc<Mutex<Vec<ConnectionId>>>;

/// What to deliver.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// Queue this, bounded.
    Push(Outgoing),
    /// Close with this code and reason (past the bound; nothing is queued after it).
    Close(u16, Arc<str>),
}

/// Delivers `what` to `members`: on `lane` when there is one (the ids of viewers too slow to
/// take it go to `gone` there, and the call returns none), else here (and returns them).
pub(crate) fn deliver(
    lane: Option<&Lane>,
    members: Members,
    what: Delivery,
    gone: &Gone,
) -> Vec<ConnectionId> {
    match lane {
        Some(lane) => {
            let gone = gone.clone();
            let job: Job = Box::new(move || {
                let dropped = deliver_here(&members, &what);
                if !dropped.is_empty() {
                    gone.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(dropped);
                }
            });
            if lane.jobs.send(job).is_err() {
                // The worker has stopped: its connections are gone with it.
                log::debug!("a delivery to a stopped worker was dropped");
            }
            Vec::new()
        }
        None => deliver_here(&members, &what),
    }
}

/// Delivers `what` to `members` on this thread; returns the viewers too slow to take it.
fn deliver_here(members: &[(ConnectionId, Arc<Outbox>)], what: &Delivery) -> Vec<ConnectionId> {
    let mut dropped = Vec::new();
    for (id, outbox) in members {
        match what {
            Delivery::Push(outgoing) => {
                if outbox.push(outgoing.clone()) == Pushed::Gone {
                    dropped.push(*id);
                }
            }
            Delivery::Close(code, reason) => outbox.close(*code, reason),
        }
    }
    dropped
}
