//! The simulated clients of a bench: viewers that count and time every comment they receive,
//! and senders that post on the fixed schedule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use shared_model::{ChannelId, ServerMessage};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::endpoint::{Base, Kind};
use crate::latency::LatencyRecorder;
use crate::stamp::{IndexSet, Schedule, Stamp};
use crate::transport::counting::Traffic;
use crate::transport::ws::{self, NumberedReply, WsStream};

/// The video time every bench comment is pinned to.
const VIDEO_TIME_SECS: f64 = 1.0;

/// What every task of a run shares.
pub struct Shared {
    /// The service's instances: viewer and sender `n` connect to `bases[n % len]`, so both
    /// spread round-robin. Never empty.
    pub bases: Vec<Base>,
    /// Live room or video.
    pub kind: Kind,
    /// The channel under load.
    pub channel: ChannelId,
    /// This run's random id, stamped into its comments.
    pub run: u32,
    /// Stamps count from here.
    pub epoch: Instant,
    /// How many messages the run sends in all (an upper bound for index sets).
    pub planned: u64,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// Characters per comment.
    pub text_len: usize,
    /// Bytes at every bench socket.
    pub traffic: Arc<Traffic>,
    /// Latency of every first delivery.
    pub latency: LatencyRecorder,
    /// Running counts, for the progress bar and the report.
    pub counts: Counts,
    /// Failures by kind (`disconnected`, `connect_failed`, an error frame's code...).
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Indices of the messages the server acknowledged.
    pub acked: Mutex<IndexSet>,
    /// What the burst of late joiners measures (`--burst`).
    pub burst: Burst,
}

/// The burst of viewers joining while the room is busy (`--burst`): how long each waited for
/// its welcome, whether the welcome carried the chat history, and how the viewers already there
/// fared meanwhile.
#[derive(Default)]
pub struct Burst {
    /// The stretch of due times, µs since the epoch, whose comments count as sent during the
    /// burst (from its first join to a second after its last); set when the schedule is fixed.
    pub window: OnceLock<(u64, u64)>,
    /// Latency of the deliveries to the counted viewers of comments due within `window`.
    pub latency_during: LatencyRecorder,
    /// From each joiner's attempt to its welcome.
    pub welcome_wait: LatencyRecorder,
    /// Joiners that were welcomed.
    pub joined: AtomicU64,
    /// Joiners whose welcome held at least one comment of history.
    pub with_history: AtomicU64,
    /// When the last joiner was welcomed, µs since the epoch.
    pub last_welcome_micros: AtomicU64,
}

impl Burst {
    /// Whether a comment due at `due_micros` was sent during the burst.
    fn covers(&self, due_micros: u64) -> bool {
        self.window
            .get()
            .is_some_and(|&(from, to)| (from..to).contains(&due_micros))
    }
}

impl Shared {
    /// The instance connection `number` (a viewer's or a sender's) uses: round-robin over
    /// [`Shared::bases`].
    pub fn base_for(&self, number: usize) -> &Base {
        &self.bases[number % self.bases.len()]
    }

    /// Counts one failure of kind `what`.
    pub fn error(&self, what: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(what.into()).or_default() += 1;
    }

    /// The failures so far.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many errors so far.
    pub fn error_count(&self) -> u64 {
        self.errors().values().sum()
    }
}

/// Counters shared by the tasks. Relaxed: each is a tally read for display and at the end,
/// after the tasks have been joined.
#[derive(Default)]
pub struct Counts {
    /// Connection attempts that finished, either way.
    pub attempts_done: AtomicU64,
    /// Viewers that connected and were greeted.
    pub viewers_connected: AtomicU64,
    /// Senders that connected and were greeted.
    pub senders_connected: AtomicU64,
    /// Connections open now.
    pub alive: AtomicI64,
    /// `send` frames written.
    pub sent: AtomicU64,
    /// `ack` frames received.
    pub acked: AtomicU64,
    /// First deliveries of a comment to a viewer.
    pub delivered: AtomicU64,
    /// Repeated deliveries.
    pub duplicated: AtomicU64,
    /// How late the latest-sent message left, µs (how far senders fell behind the schedule).
    pub max_send_lag_micros: AtomicU64,
}

impl Counts {
    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// `sent`, `acked`, `delivered`, `duplicated` now.
    pub fn flow(&self) -> (u64, u64, u64, u64) {
        (
            Self::load(&self.sent),
            Self::load(&self.acked),
            Self::load(&self.delivered),
            Self::load(&self.duplicated),
        )
    }
}

/// What a viewer saw.
pub struct ViewerOutcome {
    /// When it joined, if it did.
    pub joined_at: Option<Instant>,
    /// The indices it received.
    pub seen: IndexSet,
}

/// A viewer: connects at `connect_at`, then reads until `stop` says so or the connection ends,
/// recording each comment of this run once and its latency.
pub async fn viewer(
    shared: Arc<Shared>,
    number: usize,
    connect_at: Instant,
    mut stop: watch::Receiver<bool>,
) -> ViewerOutcome {
    let mut outcome = ViewerOutcome {
        joined_at: None,
        seen: IndexSet::with_capacity(shared.planned),
    };
    tokio::time::sleep_until(connect_at.into()).await;
    let name = format!("viewer-{number}");
    let Some((mut socket, _)) = join(&shared, shared.base_for(number), &name).await else {
        return outcome;
    };
    shared
        .counts
        .viewers_connected
        .fetch_add(1, Ordering::Relaxed);
    outcome.joined_at = Some(Instant::now());
    let mut latencies = Vec::new();
    let mut during_burst = Vec::new();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = stop.changed() => break,
            incoming = socket.next() => incoming,
        };
        match incoming {
            Some(Ok(Message::Text(text))) => {
                let Some(ServerMessage::Danmaku { items }) = ws::decode(&text) else {
                    continue;
                };
                let now = Instant::now()
                    .saturating_duration_since(shared.epoch)
                    .as_micros() as u64;
                for item in &items {
                    let Some(stamp) = Stamp::parse(&item.text) else {
                        continue;
                    };
                    if stamp.run != shared.run {
                        continue;
                    }
                    if outcome.seen.insert(stamp.index) {
                        let latency = now.saturating_sub(stamp.due_micros);
                        latencies.push(latency);
                        if shared.burst.covers(stamp.due_micros) {
                            during_burst.push(latency);
                        }
                    } else {
                        shared.counts.duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !latencies.is_empty() {
                    shared
                        .counts
                        .delivered
                        .fetch_add(latencies.len() as u64, Ordering::Relaxed);
                    shared.latency.record_all(&latencies);
                    latencies.clear();
                    shared.burst.latency_during.record_all(&during_burst);
                    during_burst.clear();
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(0, |f| u16::from(f.code));
                shared.error(format!("viewer closed by server ({code})"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                shared.error("viewer disconnected");
                break;
            }
        }
    }
    shared.counts.alive.fetch_sub(1, Ordering::Relaxed);
    outcome
}

/// A viewer of the burst: connects at `connect_at`, times the wait for its welcome and checks
/// it carries history, then reads (and drops) what comes until `stop`, as a real viewer would.
/// It counts towards nothing else: not the viewers, not the deliveries, not the losses.
pub async fn burst_viewer(
    shared: Arc<Shared>,
    number: usize,
    connect_at: Instant,
    mut stop: watch::Receiver<bool>,
) {
    tokio::time::sleep_until(connect_at.into()).await;
    let asked = Instant::now();
    let name = format!("joiner-{number}");
    let Some((mut socket, greeting)) = join(&shared, shared.base_for(number), &name).await else {
        return;
    };
    let welcomed = Instant::now();
    let burst = &shared.burst;
    let waited = welcomed.saturating_duration_since(asked).as_micros() as u64;
    burst.welcome_wait.record_all(&[waited]);
    burst.joined.fetch_add(1, Ordering::Relaxed);
    if let ServerMessage::Welcome { history, .. } = &greeting
        && !history.is_empty()
    {
        burst.with_history.fetch_add(1, Ordering::Relaxed);
    }
    let at = welcomed.saturating_duration_since(shared.epoch).as_micros() as u64;
    burst.last_welcome_micros.fetch_max(at, Ordering::Relaxed);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    shared.error("burst viewer disconnected");
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    shared.counts.alive.fetch_sub(1, Ordering::Relaxed);
}

/// Connects `name` to the channel at `base` and waits for its greeting, which it returns with
/// the socket; counts the attempt either way.
async fn join(shared: &Shared, base: &Base, name: &str) -> Option<(WsStream, ServerMessage)> {
    let query = match shared.kind {
        Kind::Live => format!("name={name}"),
        _ => String::new(),
    };
    let path = match shared.kind {
        Kind::Video => format!("/ws/videos/{}", shared.channel),
        _ => format!("/ws/live/{}?{query}", shared.channel),
    };
    let attempt = async {
        let mut socket = ws::connect(base, &path, &shared.traffic, ws::lean_config()).await?;
        let greeting = ws::first_frame(&mut socket, shared.connect_timeout).await?;
        Ok::<_, crate::CliError>((socket, greeting))
    };
    let result = tokio::time::timeout(shared.connect_timeout, attempt).await;
    shared.counts.attempts_done.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(Ok(joined)) => {
            shared.counts.alive.fetch_add(1, Ordering::Relaxed);
            Some(joined)
        }
        Ok(Err(e)) => {
            shared.error(format!("connect failed: {}", short_reason(&e)));
            None
        }
        Err(_) => {
            shared.error("connect timed out");
            None
        }
    }
}

/// A failure reason without addresses or numbers, so equal failures group in the report.
fn short_reason(error: &crate::CliError) -> String {
    match error {
        crate::CliError::Connect { reason, .. } => reason
            .split(" (os error")
            .next()
            .unwrap_or(reason)
            .to_owned(),
        crate::CliError::Refused(e) => e.code.to_string(),
        crate::CliError::Timeout { what, .. } => format!("timeout waiting for {what}"),
        other => other.to_string(),
    }
}

/// Sender `number` of `senders`: connects at `connect_at`, waits for the schedule, then sends
/// its share of the messages, each when due (at once when late, still stamped with its due
/// time), reading acks and error frames until `stop`.
pub async fn sender(
    shared: Arc<Shared>,
    number: usize,
    senders: usize,
    connect_at: Instant,
    mut schedule: watch::Receiver<Option<Schedule>>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::time::sleep_until(connect_at.into()).await;
    let name = format!("sender-{number}");
    let Some((socket, _)) = join(&shared, shared.base_for(number), &name).await else {
        return;
    };
    shared
        .counts
        .senders_connected
        .fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let mut stop_reader = stop.clone();
    let reader_shared = shared.clone();
    let reader = async move {
        let shared = reader_shared;
        loop {
            let incoming = tokio::select! {
                biased;
                _ = stop_reader.changed() => break,
                incoming = stream.next() => incoming,
            };
            match incoming {
                Some(Ok(Message::Text(text))) => match ws::numbered_reply(&text) {
                    Some(NumberedReply::Acked(index)) => {
                        let fresh = shared
                            .acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(index);
                        if fresh {
                            shared.counts.acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(NumberedReply::Refused(code)) => shared.error(code.to_string()),
                    None => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(0, |f| u16::from(f.code));
                    shared.error(format!("sender closed by server ({code})"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.error("sender disconnected");
                    break;
                }
            }
        }
        shared.counts.alive.fetch_sub(1, Ordering::Relaxed);
    };
    let writer = async move {
        let plan = loop {
            if let Some(plan) = *schedule.borrow_and_update() {
                break plan;
            }
            tokio::select! {
                _ = stop.changed() => return,
                changed = schedule.changed() => if changed.is_err() { return },
            }
        };
        for index in plan.indices_of(number as u64, senders as u64) {
            let due = plan.due(index);
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = tokio::time::sleep_until(due.into()) => {}
            }
            let stamp = plan.stamp(shared.run, index);
            let (time, author) = match shared.kind {
                Kind::Video => (Some(VIDEO_TIME_SECS), Some(name.clone())),
                _ => (None, None),
            };
            let frame = ws::numbered_send(index, stamp.text(shared.text_len), time, author);
            let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
            shared
                .counts
                .max_send_lag_micros
                .fetch_max(lag, Ordering::Relaxed);
            if sink.send(ws::encode(&frame)).await.is_err() {
                shared.error("send failed");
                return;
            }
            shared.counts.sent.fetch_add(1, Ordering::Relaxed);
        }
    };
    tokio::join!(reader, writer);
}
