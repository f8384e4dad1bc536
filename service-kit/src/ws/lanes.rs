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
//! the order the hub sent them. Frames that wait on a lane together for one room (its worker was
//! busy when they came, or the hub sent them together) go out together ([`Run`]): each viewer
//! gets the frames sent to it, consecutive comment frames as one frame, and a viewer whose frames
//! go straight to its socket gets them all in one write. So a busy worker writes fewer, fuller
//! frames instead of falling further behind, and nothing waits that would not have waited
//! anyway. A large room is written a [`CHUNK`] of viewers at a time, with the thread's other
//! tasks let run in between, so a joining viewer or a sender's answer never waits for a whole
//! room; and a comment that comes while a room is being written goes out with the one being
//! written to the viewers not written to yet, in the same frame ([`run_frames`]). A push that
//! finds a viewer too slow (`outbox.rs`) cannot tell the hub at once; the lane notes the viewer
//! in its room's `gone` list, which the hub reads on its next count report
//! ([`super::hub::COUNT_INTERVAL`]), and forgets it then. A viewer made outside an actix arbiter
//! (a test's stand-in) has no lane and is pushed to directly.
//!
//! A lone frame (the room is not busy) to a large room is written by two threads: the lane and
//! the fan-out's helper, on the core the workers leave over ([`helper`]).

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

mod helper;

pub(crate) use helper::use_helper;

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

/// Deliveries a lane runs together at most (each is a bit of a `u64`: see [`Target`]).
const MAX_RUN: usize = 64;

/// Viewers a lane writes to before it lets the other tasks of its thread run, and looks for
/// frames that came meanwhile (see [`run_frames`]).
const CHUNK: usize = 256;

impl Job {
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

/// What a lane runs at once: frames that each [`Job::joins`] the one before (at most
/// [`MAX_RUN`]), the viewer lists they go to, and each viewer's frames as prepared for it.
///
/// Each viewer gets exactly the frames of the jobs it is in, in order, consecutive comment frames
/// merged into one and the rest in the same write. Usually every job of a run goes to the same
/// viewers. While viewers join (a stream starting), each frame goes to a list one or more viewers
/// longer than the one before, and the viewers are sorted by the jobs they are in
/// ([`Run::targets`]): a viewer that joined between two frames gets only the second, whose
/// comments are not in its history.
#[derive(Default)]
struct Run {
    jobs: Vec<Job>,
    /// The distinct viewer lists of `jobs`.
    lists: Vec<Members>,
    /// What the viewers in the jobs a mask sets get, by mask. Usually one (every viewer is in
    /// every job), a few while viewers join: looked up by a scan, not a hash per delivery.
    prepared: Vec<(u64, Arc<Prepared>)>,
}

/// A viewer of a [`Run`], `lists[list][at]`, and the jobs whose frames it is still to get, as
/// bits (job `n` is bit `n`).
#[derive(Debug, Clone, Copy)]
struct Target {
    list: usize,
    at: usize,
    mask: u64,
}

impl Run {
    /// The viewers of the jobs from `from` on, each once, with those of them it is in.
    fn targets(&mut self, from: usize) -> Vec<Target> {
        let mut masks: Vec<(usize, u64)> = Vec::new();
        for (n, job) in self.jobs.iter().enumerate().skip(from) {
            let list = match self.lists.iter().position(|l| Arc::ptr_eq(l, &job.members)) {
                Some(list) => list,
                None => {
                    self.lists.push(job.members.clone());
                    self.lists.len() - 1
                }
            };
            match masks.iter_mut().find(|(l, _)| *l == list) {
                Some((_, mask)) => *mask |= 1 << n,
                None => masks.push((list, 1 << n)),
            }
        }
        if let [(list, mask)] = masks[..] {
            let viewers = self.lists[list].len();
            return (0..viewers).map(|at| Target { list, at, mask }).collect();
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut index: HashMap<ConnectionId, usize> = HashMap::new();
        for (list, mask) in masks {
            for (at, (id, _)) in self.lists[list].iter().enumerate() {
                match index.entry(*id) {
                    Entry::Occupied(seen) => targets[*seen.get()].mask |= mask,
                    Entry::Vacant(new) => {
                        new.insert(targets.len());
                        targets.push(Target { list, at, mask });
                    }
                }
            }
        }
        targets
    }

    fn id(&self, target: &Target) -> ConnectionId {
        self.lists[target.list][target.at].0
    }

    /// Where in `prepared` what the viewers of mask `mask` get is, prepared on first use.
    fn prepared_at(&mut self, mask: u64) -> usize {
        match self.prepared.iter().position(|(m, _)| *m == mask) {
            Some(at) => at,
            None => {
                let prepared = Arc::new(Prepared::new(&self.jobs, mask));
                self.prepared.push((mask, prepared));
                self.prepared.len() - 1
            }
        }
    }

    /// What the viewers of mask `mask` get, prepared once per run.
    fn prepared(&mut self, mask: u64) -> &Arc<Prepared> {
        let at = self.prepared_at(mask);
        &self.prepared[at].1
    }

    /// Writes to `target` the frames it is to get.
    fn write(&mut self, target: &Target) -> Pushed {
        let at = self.prepared_at(target.mask);
        let (_, outbox) = &self.lists[target.list][target.at];
        self.prepared[at].1.push(outbox)
    }

    /// Adds `fresh` (the viewers of jobs that came while `pass` was being written, with those
    /// jobs) to what they are to get: to the frames of a viewer not written to yet (from `at`
    /// on), so that it gets the old and the new in one write, or else in `later`.
    fn spread(&self, fresh: Vec<Target>, pass: &mut [Target], at: usize, later: &mut Vec<Target>) {
        // Where each viewer still to be written to is: in `pass` from `at` on, then in `later`.
        let waiting = pass[at..].iter().enumerate().map(|(n, t)| (at + n, t));
        let after = later.iter().enumerate().map(|(n, t)| (pass.len() + n, t));
        let mut index: HashMap<ConnectionId, usize> = waiting
            .chain(after)
            .map(|(n, target)| (self.id(target), n))
            .collect();
        for target in fresh {
            match index.entry(self.id(&target)) {
                Entry::Occupied(found) => match found.get().checked_sub(pass.len()) {
                    None => pass[*found.get()].mask |= target.mask,
                    Some(n) => later[n].mask |= target.mask,
                },
                Entry::Vacant(new) => {
                    new.insert(pass.len() + later.len());
                    later.push(target);
                }
            }
        }
    }
}

/// A lane's queue, with a job taken from it to look at and kept for later.
struct LaneQueue {
    queue: mpsc::UnboundedReceiver<Job>,
    held: Option<Job>,
}

impl LaneQueue {
    /// The next job, waiting for one.
    async fn next(&mut self) -> Option<Job> {
        match self.held.take() {
            Some(job) => Some(job),
            None => self.queue.recv().await,
        }
    }

    /// Moves into `jobs` the jobs waiting now that each join the one before, up to [`MAX_RUN`].
    fn take_joining(&mut self, jobs: &mut Vec<Job>) {
        while jobs.len() < MAX_RUN {
            let Some(job) = self.held.take().or_else(|| self.queue.try_recv().ok()) else {
                return;
            };
            if !jobs.last().is_some_and(|last| last.joins(&job)) {
                self.held = Some(job);
                return;
            }
            jobs.push(job);
        }
    }
}

/// Runs what reaches a lane, in order, sending together what waits together.
async fn run_lane(queue: mpsc::UnboundedReceiver<Job>) {
    let mut queue = LaneQueue { queue, held: None };
    while let Some(job) = queue.next().await {
        if job.frame().is_some() {
            run_frames(&mut queue, job).await;
        } else {
            let dropped = deliver_here(&job.members, &job.what);
            note_gone(&job.gone, dropped);
        }
    }
}

/// Writes `first` and the frames that join it: what waits now, and what comes while they are
/// being written.
///
/// The viewers are written a [`CHUNK`] at a time, and the thread's other tasks run in between:
/// a room of thousands takes milliseconds to write to (tens on a busy machine), and a viewer
/// joining meanwhile (its upgrade, its welcome) or a sender's answer would otherwise wait for all
/// of it. Before each chunk, the lane looks for frames that came meanwhile: the viewers not
/// written to yet get them in the same write as the frame being written (a second comment in
/// the same frame as the first), and those already written get them in a pass of their own right
/// after. So a busy room sends, in one frame, whatever was committed while the previous frame
/// was being written, without any comment waiting for one that is not there yet.
async fn run_frames(queue: &mut LaneQueue, first: Job) {
    let gone = first.gone.clone();
    let mut run = Run::default();
    run.jobs.push(first);
    queue.take_joining(&mut run.jobs);
    let mut pass = run.targets(0);
    let mut dropped = Vec::new();
    while !pass.is_empty() {
        let mut later = Vec::new();
        let mut at = 0;
        while at < pass.len() {
            if at > 0 {
                tokio::task::yield_now().await;
                let known = run.jobs.len();
                queue.take_joining(&mut run.jobs);
                if run.jobs.len() > known {
                    let fresh = run.targets(known);
                    run.spread(fresh, &mut pass, at, &mut later);
                }
            }
            let end = pass.len().min(at + CHUNK);
            match helper::offer(&mut run, &pass[at..end]) {
                Some(split) => split.write_with_helper(&mut dropped).await,
                None => {
                    for target in &pass[at..end] {
                        if run.write(target) == Pushed::Gone {
                            dropped.push(run.id(target));
                        }
                    }
                }
            }
            at = end;
        }
        pass = later;
    }
    dropped.sort_unstable();
    dropped.dedup();
    note_gone(&gone, dropped);
}

/// Notes `dropped` (viewers too slow) in their room's `gone` list, for the hub.
fn note_gone(gone: &Gone, dropped: Vec<ConnectionId>) {
    if !dropped.is_empty() {
        gone.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(dropped);
    }
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

    pub(super) fn comments(ids: &[i64]) -> Delivery {
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

    pub(super) fn ids_of(outgoing: &Outgoing) -> Vec<i64> {
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

    /// Runs a lane with `deliveries` (to those viewers, in that room) waiting in its queue, until
    /// it has written them all.
    async fn run_all<'a>(
        gone: &Gone,
        deliveries: impl IntoIterator<Item = (&'a Members, Delivery)>,
    ) {
        let (jobs, queue) = mpsc::unbounded_channel();
        for (members, what) in deliveries {
            jobs.send(Job {
                members: members.clone(),
                what,
                gone: gone.clone(),
            })
            .unwrap();
        }
        drop(jobs);
        run_lane(queue).await;
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
        run_all(
            &gone,
            [
                (&first, comments(&[1])),
                (&second, comments(&[2])),
                (&second, comments(&[3])),
                (&third, comments(&[4])),
            ],
        )
        .await;

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

    /// A room of `viewers` (more than a [`CHUNK`]), and their queues.
    pub(super) fn large_room(viewers: usize) -> (Members, Vec<crate::ws::outbox::OutboxStream>) {
        let (members, streams): (Vec<_>, Vec<_>) = (0..viewers)
            .map(|id| {
                let (outbox, stream) = Outbox::new(4);
                ((id as ConnectionId, outbox), stream)
            })
            .unzip();
        (members.into(), streams)
    }

    #[tokio::test]
    async fn a_large_room_is_written_a_chunk_at_a_time_with_the_threads_other_tasks_in_between() {
        use futures_util::FutureExt;

        let viewers = 2 * CHUNK + 88;
        let (members, mut streams) = large_room(viewers);
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

    #[tokio::test]
    async fn a_comment_that_comes_while_a_room_is_written_goes_with_it_to_those_not_written_yet() {
        use futures_util::FutureExt;

        let viewers = 2 * CHUNK + 88;
        let (members, mut streams) = large_room(viewers);
        let gone = Gone::default();
        let job = |what| Job {
            members: members.clone(),
            what,
            gone: gone.clone(),
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        jobs.send(job(comments(&[1]))).unwrap();
        // One thread: the lane writes the first chunk, then the second comment is committed.
        let lane = tokio::spawn(run_lane(queue));
        let second = job(comments(&[2]));
        tokio::spawn(async move { jobs.send(second).unwrap() })
            .await
            .unwrap();
        lane.await.unwrap();

        for (n, stream) in streams.iter_mut().enumerate() {
            let batch = stream.next().now_or_never().flatten().expect("pushed");
            let got: Vec<Vec<i64>> = batch.iter().map(ids_of).collect();
            if n < CHUNK {
                assert_eq!(
                    got,
                    [vec![1], vec![2]],
                    "viewer {n}, written before it came"
                );
            } else {
                assert_eq!(got, [vec![1, 2]], "viewer {n}, both in one frame");
            }
        }
        assert!(gone.lock().unwrap().is_empty());
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
        run_all(
            &gone,
            [
                comments(&[1]),
                Delivery::Push(Outgoing::text(count.into())),
                comments(&[2]),
                comments(&[3]),
            ]
            .map(|what| (&members, what)),
        )
        .await;

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
