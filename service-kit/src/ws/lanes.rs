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
//! the order the hub sent them. Frames that wait on a lane together for the same viewers (its
//! worker was busy when they came, or the hub sent them together) go out together: consecutive
//! comment frames become one frame, and a viewer whose frames go straight to its socket gets
//! them all in one write. So a busy worker writes fewer, fuller frames instead of falling further
//! behind, and nothing waits that would not have waited anyway. A large room is written a
//! [`CHUNK`] of viewers at a time, with the thread's other tasks let run in between, so a
//! joining viewer or a sender's answer never waits for a whole room. A push that finds a viewer too
//! slow (`outbox.rs`) cannot tell the hub at once; the lane notes the viewer in its room's
//! `gone` list, which the hub reads on its next count report ([`super::hub::COUNT_INTERVAL`]),
//! and forgets it then. A viewer made outside an actix arbiter (a test's stand-in) has no lane
//! and is pushed to directly.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_rt::Arbiter;
use tokio::sync::mpsc;

use shared_model::Danmaku;

use super::outbox::{Outbox, Pushed};
use super::session::merge;
use super::{ByteString, ConnectionId, Outgoing};
use crate::upgrade::text_frame;

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
struct Job {
    members: Members,
    what: Delivery,
    gone: Gone,
}

/// Deliveries a lane takes from its queue at once, and so merges at most (each is a bit of a
/// `u64` in [`run_together`]).
const MAX_TAKEN: usize = 64;
const _: () = assert!(MAX_TAKEN <= u64::BITS as usize);

/// Viewers a lane writes to before it lets the other tasks of its thread run (see [`chunks`]).
const CHUNK: usize = 256;

/// `members` a [`CHUNK`] at a time, the thread's other tasks let run in between: a room of
/// thousands takes tens of milliseconds to write to on a busy machine, and a viewer joining
/// meanwhile (its upgrade, its welcome) would otherwise wait for the whole of it at each step.
/// The lane's own order holds: its next delivery starts only when this one is done.
async fn chunks<'a, T>(members: &'a [T], mut each: impl FnMut(&'a [T])) {
    for (n, chunk) in members.chunks(CHUNK).enumerate() {
        if n > 0 {
            tokio::task::yield_now().await;
        }
        each(chunk);
    }
}

impl Job {
    async fn run(self) {
        let mut dropped = Vec::new();
        chunks(&self.members, |chunk| {
            dropped.extend(deliver_here(chunk, &self.what));
        })
        .await;
        self.note_gone(dropped);
    }

    fn note_gone(&self, dropped: Vec<ConnectionId>) {
        if !dropped.is_empty() {
            self.gone
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(dropped);
        }
    }

    /// The frame this delivery sends, if it sends one (not a close).
    fn frame(&self) -> Option<&Outgoing> {
        match &self.what {
            Delivery::Push(out @ (Outgoing::Comments { .. } | Outgoing::Frame { .. })) => Some(out),
            _ => None,
        }
    }

    /// Whether `next` can go out with this one: both send a frame, to the same room's viewers
    /// (not always the same ones: viewers join and leave between two frames).
    fn joins(&self, next: &Self) -> bool {
        self.frame().is_some() && next.frame().is_some() && Arc::ptr_eq(&self.gone, &next.gone)
    }
}

/// Consecutive comment frames of `frames` as one frame each; other frames as they are.
fn merge_comments(frames: impl Iterator<Item = Outgoing>) -> Vec<Outgoing> {
    let mut out: Vec<Outgoing> = Vec::new();
    let mut comments: Vec<Outgoing> = Vec::new();
    for frame in frames {
        if matches!(frame, Outgoing::Comments { .. }) {
            comments.push(frame);
        } else {
            out.extend(merged(std::mem::take(&mut comments)));
            out.push(frame);
        }
    }
    out.extend(merged(comments));
    out
}

/// `comments` (comment frames, oldest first) as one frame, or as they are if they cannot be.
fn merged(comments: Vec<Outgoing>) -> Vec<Outgoing> {
    if comments.len() < 2 {
        return comments;
    }
    let texts: Vec<ByteString> = comments
        .iter()
        .filter_map(|frame| match frame {
            Outgoing::Comments { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect();
    let Some(text) = merge(&texts) else {
        return comments;
    };
    let frame = ByteString::from(text);
    let items: Arc<[Danmaku]> = comments
        .iter()
        .filter_map(|frame| match frame {
            Outgoing::Comments { items, .. } => Some(items.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    vec![Outgoing::Comments {
        wire: text_frame(frame.as_bytes()),
        frame,
        items,
    }]
}

/// Runs `run`, deliveries of which each [`Job::joins`] the one before. When there are several:
/// consecutive comment frames become one frame, and a viewer whose frames go straight to its
/// socket gets them all in one write (a viewer count that waited for these comments, say: see
/// `Room::announce_count`).
///
/// Each viewer gets exactly the frames of the jobs it is in, in order. Usually that is every job
/// of the run, to the same viewers. While viewers join (a stream starting), each frame goes to a
/// list one or more viewers longer than the one before, and then the viewers are sorted by the
/// jobs they are in ([`by_jobs`]): a viewer that joined between two frames gets only the second,
/// whose comments are not in its history. A lane that fell behind during a burst of joins thus
/// catches up as it does otherwise, a frame for everything waiting instead of one per comment.
async fn run_together(run: &mut Vec<Job>) {
    if run.len() < 2 {
        for job in run.drain(..) {
            job.run().await;
        }
        return;
    }
    let jobs = &run[..];
    let mut dropped = Vec::new();
    let lists = lists_of(jobs);
    if let [(members, mask)] = &lists[..] {
        let sent = Prepared::new(jobs, *mask);
        chunks(members, |chunk| {
            for (id, outbox) in chunk {
                if sent.push(outbox) == Pushed::Gone {
                    dropped.push(*id);
                }
            }
        })
        .await;
    } else {
        let viewers = by_jobs(&lists);
        let mut prepared: HashMap<u64, Prepared> = HashMap::new();
        for (_, _, mask) in &viewers {
            prepared
                .entry(*mask)
                .or_insert_with(|| Prepared::new(jobs, *mask));
        }
        chunks(&viewers, |chunk| {
            for (id, outbox, mask) in chunk {
                if prepared[mask].push(outbox) == Pushed::Gone {
                    dropped.push(*id);
                }
            }
        })
        .await;
    }
    jobs[0].note_gone(dropped);
    run.clear();
}

/// A run's viewer lists, each once, with the jobs that go to it as bits (job `n` is bit `n`).
fn lists_of(jobs: &[Job]) -> Vec<(&Members, u64)> {
    let mut lists: Vec<(&Members, u64)> = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        let bit = 1u64 << n;
        match lists
            .iter_mut()
            .find(|(members, _)| Arc::ptr_eq(members, &job.members))
        {
            Some((_, mask)) => *mask |= bit,
            None => lists.push((&job.members, bit)),
        }
    }
    lists
}

/// Each viewer of `lists` once, with the jobs it is in as bits, in the order first seen.
fn by_jobs<'a>(lists: &[(&'a Members, u64)]) -> Vec<(ConnectionId, &'a Arc<Outbox>, u64)> {
    let mut at: HashMap<ConnectionId, usize> = HashMap::with_capacity(lists[0].0.len());
    let mut viewers: Vec<(ConnectionId, &Arc<Outbox>, u64)> = Vec::with_capacity(lists[0].0.len());
    for (members, mask) in lists {
        for (id, outbox) in members.iter() {
            match at.entry(*id) {
                Entry::Occupied(seen) => viewers[*seen.get()].2 |= mask,
                Entry::Vacant(new) => {
                    new.insert(viewers.len());
                    viewers.push((*id, outbox, *mask));
                }
            }
        }
    }
    viewers
}

/// What the viewers in some of a run's jobs get: the frames of those jobs, consecutive comment
/// frames merged; one frame, or several that go out together.
enum Prepared {
    One(Outgoing),
    Together(Together),
}

impl Prepared {
    /// The frames of `jobs` whose bits `mask` sets.
    fn new(jobs: &[Job], mask: u64) -> Self {
        let frames = jobs
            .iter()
            .enumerate()
            .filter(|(n, _)| mask & (1u64 << n) != 0)
            .filter_map(|(_, job)| job.frame().cloned());
        match <[Outgoing; 1]>::try_from(merge_comments(frames)) {
            Ok([frame]) => Self::One(frame),
            Err(frames) => Self::Together(Together::new(frames)),
        }
    }

    fn push(&self, outbox: &Outbox) -> Pushed {
        match self {
            Self::One(frame) => outbox.push(frame),
            Self::Together(together) => outbox.push_together(together),
        }
    }
}

/// Frames for the same viewers that go out together: each on its own for a viewer whose
/// session takes them from its queue, and all in one write for a viewer whose frames go
/// straight to its socket (`outbox.rs`), encoded once for every viewer.
#[derive(Debug)]
pub(crate) struct Together {
    /// The frames, in order.
    pub(crate) frames: Vec<Outgoing>,
    /// The same as consecutive WebSocket frames, one after the other.
    pub(crate) wire: bytes::Bytes,
}

impl Together {
    pub(crate) fn new(frames: Vec<Outgoing>) -> Self {
        let mut wire = bytes::BytesMut::new();
        for frame in &frames {
            match frame {
                Outgoing::Comments { wire: encoded, .. }
                | Outgoing::Frame { wire: encoded, .. } => wire.extend_from_slice(encoded),
                Outgoing::Close { .. } => unreachable!("only frames go out together"),
            }
        }
        Self {
            frames,
            wire: wire.freeze(),
        }
    }
}

/// Runs what reaches a lane, in order, sending together what waits together.
async fn run_lane(mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut taken = Vec::with_capacity(MAX_TAKEN);
    let mut run = Vec::new();
    while queue.recv_many(&mut taken, MAX_TAKEN).await > 0 {
        for job in taken.drain(..) {
            if run.last().is_some_and(|last: &Job| !last.joins(&job)) {
                run_together(&mut run).await;
            }
            run.push(job);
        }
        run_together(&mut run).await;
    }
}

thread_local! {
    static LANE: OnceCell<Option<Arc<Lane>>> = const { OnceCell::new() };
}

/// The lane of the calling thread, if it is an actix arbiter (its task is started then).
pub(crate) fn current() -> Option<Arc<Lane>> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    LANE.with(|lane| {
        lane.get_or_init(|| {
            Arbiter::try_current()?;
            let (jobs, queue) = mpsc::unbounded_channel::<Job>();
            actix_rt::spawn(run_lane(queue));
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
            let job = Job {
                members,
                what,
                gone: gone.clone(),
            };
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
                if outbox.push(outgoing) == Pushed::Gone {
                    dropped.push(*id);
                }
            }
            Delivery::Close(code, reason) => outbox.close(*code, reason),
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use shared_model::ServerMessage;

    use super::*;
    use crate::ws::test_comment;

    fn comments(ids: &[i64]) -> Delivery {
        let items: Vec<Danmaku> = ids.iter().map(|&id| test_comment("room", id)).collect();
        let frame: ByteString = ServerMessage::Danmaku {
            items: items.clone(),
        }
        .to_json()
        .into();
        Delivery::Push(Outgoing::Comments {
            wire: text_frame(frame.as_bytes()),
            frame,
            items: items.into(),
        })
    }

    fn ids_of(outgoing: &Outgoing) -> Vec<i64> {
        let Outgoing::Comments { frame, items, wire } = outgoing else {
            panic!("not comments: {outgoing:?}")
        };
        let Ok(ServerMessage::Danmaku { items: sent }) = serde_json::from_str(frame) else {
            panic!("not a danmaku frame: {frame}")
        };
        let ids: Vec<i64> = sent.iter().map(|item| item.id).collect();
        assert_eq!(ids, items.iter().map(|item| item.id).collect::<Vec<_>>());
        assert!(
            wire.ends_with(frame.as_bytes()),
            "the wire frame carries the text"
        );
        ids
    }

    #[tokio::test]
    async fn comments_waiting_together_on_a_lane_go_out_as_one_frame_in_order() {
        let (outbox, mut stream) = Outbox::new(16);
        let (other, mut other_stream) = Outbox::new(16);
        let members: Members = Arc::from([(1, outbox)]);
        let elsewhere: Members = Arc::from([(2, other)]);
        let gone = Gone::default();
        let (jobs, queue) = mpsc::unbounded_channel();
        let job = |members: &Members, what| Job {
            members: members.clone(),
            what,
            gone: gone.clone(),
        };
        // Three comments for the same viewers, then something else, then two more: what waits
        // together is merged, and nothing is merged across the frame between.
        for what in [
            comments(&[1]),
            comments(&[2, 3]),
            comments(&[4]),
            Delivery::Push(Outgoing::text(r#"{"type":"viewers","count":1}"#.into())),
            comments(&[5]),
            comments(&[6]),
        ] {
            jobs.send(job(&members, what)).unwrap();
        }
        // Other viewers' comments are not theirs to share.
        jobs.send(job(&elsewhere, comments(&[7]))).unwrap();
        drop(jobs);
        run_lane(queue).await;

        let batch = stream.next().await.expect("pushed");
        assert_eq!(batch.len(), 3, "{batch:?}");
        assert_eq!(ids_of(&batch[0]), [1, 2, 3, 4]);
        assert!(matches!(&batch[1], Outgoing::Frame { text, .. } if text.contains("viewers")));
        assert_eq!(ids_of(&batch[2]), [5, 6]);
        let other = other_stream.next().await.expect("pushed");
        assert_eq!(other.len(), 1);
        assert_eq!(ids_of(&other[0]), [7]);
    }

    #[tokio::test]
    async fn frames_waiting_while_viewers_join_and_leave_merge_and_each_viewer_gets_only_its_own() {
        let (stayed, mut stayed_stream) = Outbox::new(16);
        let (left, mut left_stream) = Outbox::new(16);
        let (joined, mut joined_stream) = Outbox::new(16);
        let (late, mut late_stream) = Outbox::new(16);
        // A room's lists as the hub makes them while viewers come and go: 3 leaves after the
        // first frame, 4 joins after it and 5 after the second (its list shares the first's
        // `Arc`, as a list the hub did not have to make again does).
        let first: Members = Arc::from([(1, stayed.clone()), (3, left)]);
        let second: Members = Arc::from([(4, joined.clone()), (1, stayed.clone())]);
        let third: Members = Arc::from([(1, stayed), (4, joined), (5, late)]);
        let gone = Gone::default();
        let (jobs, queue) = mpsc::unbounded_channel();
        for (members, what) in [
            (&first, comments(&[1])),
            (&second, comments(&[2])),
            (&second, comments(&[3])),
            (&third, comments(&[4])),
        ] {
            jobs.send(Job {
                members: members.clone(),
                what,
                gone: gone.clone(),
            })
            .unwrap();
        }
        drop(jobs);
        run_lane(queue).await;

        for (stream, expected) in [
            (&mut stayed_stream, &[1, 2, 3, 4][..]),
            (&mut left_stream, &[1]),
            (&mut joined_stream, &[2, 3, 4]),
            (&mut late_stream, &[4]),
        ] {
            let batch = stream.next().await.expect("pushed");
            assert_eq!(batch.len(), 1, "one merged frame: {batch:?}");
            assert_eq!(ids_of(&batch[0]), expected);
        }
        assert!(gone.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_large_room_is_written_a_chunk_at_a_time_with_the_threads_other_tasks_in_between() {
        use futures_util::FutureExt;

        let viewers = 2 * CHUNK + 88;
        let (members, mut streams): (Vec<_>, Vec<_>) = (0..viewers)
            .map(|id| {
                let (outbox, stream) = Outbox::new(4);
                ((id as ConnectionId, outbox), stream)
            })
            .unzip();
        let members: Members = members.into();
        let (jobs, queue) = mpsc::unbounded_channel();
        jobs.send(Job {
            members,
            what: comments(&[1]),
            gone: Gone::default(),
        })
        .unwrap();
        drop(jobs);
        // One thread: the lane runs first, and the probe only when the lane lets it.
        let lane = tokio::spawn(run_lane(queue));
        let probe = tokio::spawn(async move {
            let reached = streams
                .iter_mut()
                .filter_map(|stream| stream.next().now_or_never())
                .count();
            (reached, streams)
        });
        let (reached, mut streams) = probe.await.unwrap();
        assert_eq!(reached, CHUNK, "the probe ran after the first chunk only");
        lane.await.unwrap();
        // The rest got it after the probe ran, and the first chunk nothing more.
        let rest = streams
            .iter_mut()
            .filter_map(|stream| stream.next().now_or_never())
            .count();
        assert_eq!(rest, viewers - CHUNK);
    }

    /// The texts of the whole, unmasked, short text frames in `bytes`.
    fn text_frames(mut bytes: &[u8]) -> Vec<String> {
        let mut texts = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x81, "a whole text frame");
            let (len, at) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                len if len < 126 => (usize::from(len), 2),
                _ => panic!("too long for this test"),
            };
            texts.push(String::from_utf8(bytes[at..at + len].to_vec()).unwrap());
            bytes = &bytes[at + len..];
        }
        texts
    }

    #[tokio::test]
    async fn frames_waiting_together_reach_a_direct_viewer_in_one_write_and_a_queued_one_in_order()
    {
        use tokio::io::AsyncReadExt;

        let (direct, _direct_stream) = Outbox::new(16);
        let (wire, mut client) = crate::ws::test_wire_pair().await;
        direct.go_direct(&wire);
        let (queued, mut queued_stream) = Outbox::new(16);
        let members: Members = Arc::from([(1, direct), (2, queued)]);
        let gone = Gone::default();
        let count = r#"{"type":"viewers","count":2}"#;
        let (jobs, queue) = mpsc::unbounded_channel();
        for what in [
            comments(&[1]),
            Delivery::Push(Outgoing::text(count.into())),
            comments(&[2]),
            comments(&[3]),
        ] {
            jobs.send(Job {
                members: members.clone(),
                what,
                gone: gone.clone(),
            })
            .unwrap();
        }
        drop(jobs);
        run_lane(queue).await;

        // The direct viewer: one write of three frames, the two last comments merged.
        assert_eq!(wire.sends.load(Ordering::Relaxed), 1);
        let mut got = vec![0u8; 4096];
        let mut read = 0;
        let texts = loop {
            read += client.read(&mut got[read..]).await.unwrap();
            let texts = text_frames(&got[..read]);
            if texts.len() >= 3 {
                break texts;
            }
        };
        let ids = |text: &str| match serde_json::from_str(text).unwrap() {
            ServerMessage::Danmaku { items } => items.iter().map(|item| item.id).collect(),
            _ => Vec::new(),
        };
        assert_eq!(texts.len(), 3, "{texts:?}");
        assert_eq!(ids(&texts[0]), [1]);
        assert_eq!(texts[1], count);
        assert_eq!(ids(&texts[2]), [2, 3]);

        // The queued viewer: the same three frames, in its queue, in order.
        let batch = queued_stream.next().await.expect("pushed");
        assert_eq!(batch.len(), 3, "{batch:?}");
        assert_eq!(ids_of(&batch[0]), [1]);
        assert!(matches!(&batch[1], Outgoing::Frame { text, .. } if text == count));
        assert_eq!(ids_of(&batch[2]), [2, 3]);
        assert!(gone.lock().unwrap().is_empty());
    }
}
