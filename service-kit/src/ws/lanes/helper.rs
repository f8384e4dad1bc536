//! A second pair of hands for a lone frame to a large room.
//!
//! A lane writes a room's viewers one after the other, on its worker. When a comment comes alone
//! (nothing waits behind it: the room is not busy) and goes to many viewers, the last of them
//! waits for all the others' writes, while another core may sit idle. So the lane offers the
//! chunk it is about to write to the fan-out's helper thread, and both write it: the lane takes
//! blocks of viewers from the front, the helper from the back, until they meet.
//!
//! The lane never waits for a helper that is not running: whatever the helper has not taken, the
//! lane writes itself, and it waits only for the one block the helper is writing, if any, before
//! it goes on (so each viewer still gets its frames in order); a wait past [`LONG_WAIT`] (the
//! helper's thread kept off its core) is logged. Nor does it queue offers for a helper that is
//! behind: while the last offer has not been taken, it makes none. A busy room never asks for help
//! (its frames wait together, and the lane merges them, which costs less than writing them twice
//! as fast); neither does a small one, which the lane writes sooner than the helper wakes.

use std::cell::Cell;
use std::future::poll_fn;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::{Members, Prepared, Pushed, Run, Target};
use crate::ws::ConnectionId;

/// Viewers taken at once, by the lane or the helper.
const BLOCK: usize = 32;

/// The fewest viewers a chunk must have for the lane to ask for help.
const MIN_VIEWERS: usize = 2 * BLOCK;

/// A lane's wait for the helper's block past which it is logged: a block takes well under a
/// millisecond to write, so a wait this long means the helper's thread was kept off a core.
const LONG_WAIT: Duration = Duration::from_millis(50);

thread_local! {
    /// Whether the lane of this thread asks for help: set by the server on each worker
    /// ([`use_helper`]); off elsewhere.
    static WANTED: Cell<bool> = const { Cell::new(false) };
}

/// Makes the lane of the calling thread (a worker) ask the helper for help, or not.
pub(crate) fn use_helper(on: bool) {
    WANTED.with(|wanted| wanted.set(on));
}

/// Offers sent to the helper that it has not taken yet.
static UNTAKEN: AtomicUsize = AtomicUsize::new(0);

/// The helper thread's queue, started on first use; `None` if it could not be started.
fn helper() -> Option<&'static mpsc::Sender<Arc<Split>>> {
    static HELPER: OnceLock<Option<mpsc::Sender<Arc<Split>>>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Arc<Split>>();
            std::thread::Builder::new()
                .name("fan-out helper".into())
                .spawn(move || {
                    for split in rx {
                        UNTAKEN.fetch_sub(1, Ordering::Relaxed);
                        split.help();
                    }
                })
                .inspect_err(|e| log::warn!("no fan-out helper: cannot start its thread: {e}"))
                .ok()?;
            Some(tx)
        })
        .as_ref()
}

/// `targets` (a chunk of `run`'s viewers) as a [`Split`] offered to the helper, if it is worth
/// it (see the module docs) and the helper has taken every offer before (one it has not is
/// a sign that its thread is not getting a core: the lane goes on alone rather than queue more);
/// `None`: the lane writes them alone.
pub(super) fn offer(run: &mut Run, targets: &[Target]) -> Option<Arc<Split>> {
    if run.jobs.len() > 1
        || targets.len() < MIN_VIEWERS
        || !WANTED.with(Cell::get)
        || UNTAKEN.load(Ordering::Relaxed) > 0
    {
        return None;
    }
    let helper = helper()?;
    let split = Arc::new(Split::new(run, targets));
    // Counted before it is sent, so that the helper never takes one not yet counted.
    UNTAKEN.fetch_add(1, Ordering::Relaxed);
    if helper.send(split.clone()).is_err() {
        UNTAKEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(split)
}

/// A chunk of viewers that the lane and the helper write together.
pub(super) struct Split {
    targets: Vec<Target>,
    lists: Vec<Members>,
    prepared: Vec<(u64, Arc<Prepared>)>,
    state: Mutex<SplitState>,
}

struct SplitState {
    /// The blocks nobody has taken yet: the lane takes the first, the helper the last.
    blocks: Range<usize>,
    /// The helper is writing a block.
    helping: bool,
    /// The lane, waiting for the helper's block.
    lane: Option<Waker>,
    /// Viewers the helper found too slow.
    dropped: Vec<ConnectionId>,
}

impl Split {
    /// `targets`, viewers of `run`, in blocks that nobody has taken yet.
    fn new(run: &mut Run, targets: &[Target]) -> Self {
        let mut prepared: Vec<(u64, Arc<Prepared>)> = Vec::new();
        for target in targets {
            if !prepared.iter().any(|(mask, _)| *mask == target.mask) {
                prepared.push((target.mask, run.prepared(target.mask).clone()));
            }
        }
        Self {
            targets: targets.to_vec(),
            lists: run.lists.clone(),
            prepared,
            state: Mutex::new(SplitState {
                blocks: 0..targets.len().div_ceil(BLOCK),
                helping: false,
                lane: None,
                dropped: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SplitState> {
        // Every hold is a few moves: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes block `block`; the viewers found too slow go to `dropped`.
    fn write(&self, block: usize, dropped: &mut Vec<ConnectionId>) {
        let end = self.targets.len().min((block + 1) * BLOCK);
        for target in &self.targets[block * BLOCK..end] {
            let (id, outbox) = &self.lists[target.list][target.at];
            let Some((_, prepared)) = self.prepared.iter().find(|(m, _)| *m == target.mask) else {
                unreachable!("every mask of the split is prepared");
            };
            if prepared.push(outbox) == Pushed::Gone {
                dropped.push(*id);
            }
        }
    }

    /// The lane's part: writes blocks from the front until none is left, then waits for the
    /// helper's block, if it is writing one.
    pub(super) async fn write_with_helper(&self, dropped: &mut Vec<ConnectionId>) {
        while let Some(block) = self.take_front() {
            self.write(block, dropped);
        }
        let waiting = Instant::now();
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.helping {
                state.lane = Some(cx.waker().clone());
                return Poll::Pending;
            }
            dropped.append(&mut state.dropped);
            Poll::Ready(())
        })
        .await;
        let waited = waiting.elapsed();
        if waited >= LONG_WAIT {
            log::warn!(
                "a lane waited {} ms for the fan-out helper's block of viewers (its thread was \
                 kept off a core: --fanout-helper false turns the helper off)",
                waited.as_millis()
            );
        }
    }

    /// The first block nobody has taken, for the lane.
    fn take_front(&self) -> Option<usize> {
        self.lock().blocks.next()
    }

    /// The helper's part: writes blocks from the back until none is left. A panic in a write
    /// ends only that block (the lane, waiting for it, must hear that it is done).
    fn help(&self) {
        let mut dropped = Vec::new();
        while let Some(block) = self.take_back(&mut dropped) {
            let written = panic::catch_unwind(AssertUnwindSafe(|| self.write(block, &mut dropped)));
            if written.is_err() {
                log::error!("the fan-out helper panicked while writing a block of viewers");
            }
        }
    }

    /// For the helper: hands in the viewers its last block found too slow, and takes the last
    /// block nobody has taken, if any; if none, wakes the lane if it waits for the helper.
    fn take_back(&self, dropped: &mut Vec<ConnectionId>) -> Option<usize> {
        let mut state = self.lock();
        state.dropped.append(dropped);
        state.helping = false;
        if let Some(block) = state.blocks.next_back() {
            state.helping = true;
            return Some(block);
        }
        let lane = state.lane.take();
        drop(state);
        if let Some(lane) = lane {
            lane.wake();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};
    use tokio::sync::mpsc as queue;

    use super::super::tests::{comments, ids_of, large_room};
    use super::super::{Gone, Job, run_lane};
    use super::*;

    /// A run of one comment to `members`, and its targets.
    fn lone_frame(members: &Members) -> (Run, Vec<Target>) {
        let mut run = Run::default();
        run.jobs.push(Job {
            members: members.clone(),
            what: comments(&[1]),
            gone: Gone::default(),
        });
        let targets = run.targets(0);
        (run, targets)
    }

    #[tokio::test]
    async fn the_helper_writes_from_the_back_and_the_lane_waits_only_for_the_block_it_is_writing() {
        let viewers = 5 * BLOCK + 7;
        let (members, mut streams) = large_room(viewers);
        // One viewer of the last block has gone: the helper finds it too slow.
        let gone_viewer = viewers - 3;
        drop(std::mem::replace(
            &mut streams[gone_viewer],
            large_room(1).1.remove(0),
        ));
        let (mut run, targets) = lone_frame(&members);
        let split = Split::new(&mut run, &targets);

        // The helper takes the last block first, and is still writing it...
        let mut helper_dropped = Vec::new();
        let last = split.take_back(&mut helper_dropped).expect("a block");
        assert_eq!(last, 5);
        // ...when the lane has written all the others.
        let mut dropped = Vec::new();
        let mut lane = Box::pin(split.write_with_helper(&mut dropped));
        assert!(lane.as_mut().now_or_never().is_none(), "the lane waits");
        for (n, stream) in streams.iter_mut().enumerate() {
            let got = stream.next().now_or_never().flatten();
            if n < 5 * BLOCK {
                assert_eq!(ids_of(&got.expect("written by the lane")[0]), [1]);
            } else {
                assert!(got.is_none(), "viewer {n} is the helper's");
            }
        }
        split.write(last, &mut helper_dropped);
        assert_eq!(split.take_back(&mut helper_dropped), None, "nothing left");
        lane.await;
        assert_eq!(dropped, [gone_viewer as ConnectionId]);
        for (n, stream) in streams.iter_mut().enumerate().skip(5 * BLOCK) {
            let got = stream.next().now_or_never().flatten();
            if n != gone_viewer {
                assert_eq!(ids_of(&got.expect("written by the helper")[0]), [1]);
            }
        }
        // Each viewer got it once.
        for stream in &mut streams {
            assert!(stream.next().now_or_never().is_none());
        }
    }

    #[tokio::test]
    async fn a_helper_that_does_not_come_leaves_the_lane_to_write_everyone() {
        let (members, mut streams) = large_room(4 * BLOCK);
        let (mut run, targets) = lone_frame(&members);
        let split = Split::new(&mut run, &targets);
        let mut dropped = Vec::new();
        split
            .write_with_helper(&mut dropped)
            .now_or_never()
            .expect("no wait for a helper that took nothing");
        assert!(dropped.is_empty());
        for stream in &mut streams {
            let batch = stream.next().now_or_never().flatten().expect("written");
            assert_eq!(ids_of(&batch[0]), [1]);
        }
        // The helper, late, finds nothing to do.
        assert_eq!(split.take_back(&mut Vec::new()), None);
    }

    #[tokio::test]
    async fn only_a_lone_frame_to_a_large_room_on_a_worker_that_wants_help_is_offered() {
        let (large, _large_streams) = large_room(MIN_VIEWERS);
        let (small, _small_streams) = large_room(MIN_VIEWERS - 1);
        let (mut run, targets) = lone_frame(&large);
        use_helper(false);
        assert!(offer(&mut run, &targets).is_none(), "not wanted");
        use_helper(true);
        let (mut small_run, small_targets) = lone_frame(&small);
        assert!(offer(&mut small_run, &small_targets).is_none(), "too small");
        run.jobs.push(Job {
            members: large.clone(),
            what: comments(&[2]),
            gone: Gone::default(),
        });
        let busy = run.targets(0);
        assert!(offer(&mut run, &busy).is_none(), "frames wait together");
        let (mut run, targets) = lone_frame(&large);
        // Other tests' offers may be waiting for the helper a moment.
        let mut tries = 0;
        let split = loop {
            if let Some(split) = offer(&mut run, &targets) {
                break split;
            }
            tries += 1;
            assert!(tries < 1_000, "never offered");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        split.write_with_helper(&mut Vec::new()).await;
        use_helper(false);
    }

    #[tokio::test]
    async fn no_offer_is_made_while_the_helper_has_not_taken_the_last_one() {
        let (large, _streams) = large_room(MIN_VIEWERS);
        let (mut run, targets) = lone_frame(&large);
        use_helper(true);
        // As if an offer were still in the helper's queue: its thread has not had a core since.
        UNTAKEN.fetch_add(1, Ordering::Relaxed);
        let offered = offer(&mut run, &targets);
        UNTAKEN.fetch_sub(1, Ordering::Relaxed);
        use_helper(false);
        assert!(offered.is_none(), "the lane goes on alone");
    }

    #[tokio::test]
    async fn with_the_real_helper_every_viewer_of_a_large_room_gets_each_lone_frame_once_in_order()
    {
        use_helper(true);
        let viewers = 2 * super::super::CHUNK + 40;
        let (members, mut streams) = large_room(viewers);
        let gone = Gone::default();
        for id in 1..=3 {
            let (jobs, queue) = queue::unbounded_channel();
            jobs.send(Job {
                members: members.clone(),
                what: comments(&[id]),
                gone: gone.clone(),
            })
            .unwrap();
            drop(jobs);
            run_lane(queue).await;
        }
        use_helper(false);
        for (n, stream) in streams.iter_mut().enumerate() {
            let batch = stream.next().now_or_never().flatten().expect("written");
            let got: Vec<Vec<i64>> = batch.iter().map(ids_of).collect();
            assert_eq!(got, [[1], [2], [3]], "viewer {n}");
        }
        assert!(gone.lock().unwrap().is_empty());
    }
}
