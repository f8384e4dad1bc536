//! Measured comments: a fixed send schedule, and comment text that carries each message's
//! intended send time, so a receiver can compute latency without coordinated omission.
//!
//! A sender that falls behind (a stalled server, a full socket) still stamps the time the message
//! was *due*, not the time it finally left, and sends the overdue messages at once; a stall
//! therefore shows up as latency in every message it delayed instead of hiding as a slower rate.

use std::time::{Duration, Instant};

/// The prefix of every measured comment's text.
const PREFIX: &str = "dm:";

/// What a measured comment's text says: which run, which message, and when it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// A random id of the run, so comments of other runs in the same channel are ignored.
    pub run: u32,
    /// The message's index in the schedule (0, 1, 2, ...): unique within the run.
    pub index: u64,
    /// When it was due, in microseconds after the run's epoch.
    pub due_micros: u64,
}

impl Stamp {
    /// The comment text: `dm:RUN:INDEX:DUE` padded with dots to at least `min_chars` characters
    /// (at most 100, the longest comment a service accepts).
    pub fn text(&self, min_chars: usize) -> String {
        let mut text = format!(
            "{PREFIX}{:08x}:{}:{} ",
            self.run, self.index, self.due_micros
        );
        let target = min_chars.min(shared_model::limits::MAX_TEXT_CHARS);
        while text.len() < target {
            text.push('.');
        }
        text
    }

    /// Reads a stamp from comment text; `None` when it is not a measured comment.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(PREFIX)?;
        let mut fields = rest.split([':', ' ']);
        let run = u32::from_str_radix(fields.next()?, 16).ok()?;
        let index = fields.next()?.parse().ok()?;
        let due_micros = fields.next()?.parse().ok()?;
        Some(Self {
            run,
            index,
            due_micros,
        })
    }
}

/// When each message of a run is due: `rate` messages per second from `start`, message `i` at
/// `start + i / rate`, whatever happened to the ones before it.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The run's epoch: stamps count from here.
    pub epoch: Instant,
    /// When message 0 is due.
    pub start: Instant,
    /// Messages per second, all senders together.
    pub rate: f64,
    /// How many messages the run sends in all.
    pub planned: u64,
}

impl Schedule {
    /// A schedule of `rate` messages per second for `duration`, starting at `start`.
    pub fn new(epoch: Instant, start: Instant, rate: f64, duration: Duration) -> Self {
        let planned = (rate * duration.as_secs_f64()).floor().max(1.0) as u64;
        Self {
            epoch,
            start,
            rate,
            planned,
        }
    }

    /// When message `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate)
    }

    /// The stamp of message `index` of run `run`.
    pub fn stamp(&self, run: u32, index: u64) -> Stamp {
        Stamp {
            run,
            index,
            due_micros: self.micros_since_epoch(self.due(index)),
        }
    }

    /// Microseconds from the epoch to `at` (0 before it).
    pub fn micros_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The indices sender `sender` of `senders` owns: every `senders`-th message from `sender`.
    pub fn indices_of(&self, sender: u64, senders: u64) -> impl Iterator<Item = u64> + use<> {
        (sender..self.planned).step_by(senders.max(1) as usize)
    }
}

/// A set of message indices, for telling first deliveries from repeats and finding losses.
#[derive(Debug, Clone, Default)]
pub struct IndexSet {
    words: Vec<u64>,
    len: u64,
}

impl IndexSet {
    /// An empty set for indices below `capacity` (larger ones grow it).
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            words: vec![0; capacity.div_ceil(64) as usize],
            len: 0,
        }
    }

    /// Adds `index`; `true` when it was not there yet.
    pub fn insert(&mut self, index: u64) -> bool {
        let word = (index / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (index % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        if fresh {
            self.len += 1;
        }
        fresh
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u64) -> bool {
        self.words
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1u64 << (index % 64)) != 0)
    }

    /// How many indices the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many indices of `self` are missing from `other`.
    pub fn missing_from(&self, other: &IndexSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let theirs = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !theirs).count_ones())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_comment_text() {
        let stamp = Stamp {
            run: 0xdead_beef,
            index: 42,
            due_micros: 1_234_567,
        };
        let text = stamp.text(40);
        assert!(text.chars().count() >= 40, "{text}");
        assert!(text.chars().count() <= 100);
        assert_eq!(Stamp::parse(&text), Some(stamp));
        assert_eq!(Stamp::parse(text.trim_end_matches('.').trim()), Some(stamp));
        assert_eq!(Stamp::parse(&stamp.text(500)).unwrap(), stamp);
    }

    #[test]
    fn ordinary_comments_are_not_stamps() {
        for text in ["hello", "dm:", "dm:zz:1:2", "dm:1:x:2", "dm:1:2"] {
            assert_eq!(Stamp::parse(text), None, "{text}");
        }
    }

    #[test]
    fn schedule_is_fixed_from_the_start_and_split_between_senders() {
        let epoch = Instant::now();
        let start = epoch + Duration::from_secs(1);
        let schedule = Schedule::new(epoch, start, 4.0, Duration::from_secs(3));
        assert_eq!(schedule.planned, 12);
        assert_eq!(schedule.due(6) - start, Duration::from_millis(1500));
        assert_eq!(schedule.stamp(7, 2).due_micros, 1_500_000);
        let first: Vec<u64> = schedule.indices_of(0, 3).collect();
        let second: Vec<u64> = schedule.indices_of(1, 3).collect();
        assert_eq!(first, vec![0, 3, 6, 9]);
        assert_eq!(second, vec![1, 4, 7, 10]);
    }

    #[test]
    fn index_set_tells_repeats_and_counts_what_is_missing() {
        let mut sent = IndexSet::with_capacity(10);
        let mut seen = IndexSet::with_capacity(10);
        for i in 0..10 {
            sent.insert(i);
        }
        assert!(seen.insert(3));
        assert!(!seen.insert(3));
        assert!(seen.insert(200));
        assert!(seen.contains(200) && !seen.contains(4));
        assert_eq!(seen.len(), 2);
        assert_eq!(sent.missing_from(&seen), 9);
    }
}
