//! The clients of a comparison: one receiving loop per transport (short polling the cursor API,
//! long polling it, the seed's `GET /polling`, the live room's WebSocket) and the two senders
//! that post the same stream to the HTTP room and the live room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use shared_model::api::Page;
use shared_model::{ChannelId, Danmaku, DraftDanmaku, ServerMessage};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::endpoint::Base;
use crate::error::CliError;
use crate::latency::LatencyRecorder;
use crate::stamp::{IndexSet, Schedule, Stamp};
use crate::transport::counting::{Traffic, TrafficSnapshot};
use crate::transport::http::HttpClient;
use crate::transport::ws::{self, NumberedReply};

/// How long one ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most comments one cursor poll asks for; a full page is followed by another poll at once.
const PAGE_LIMIT: usize = 500;

/// How a row's viewers receive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transport {
    /// `GET /api/rooms/{room}/danmaku?after=next` every interval.
    ShortPoll(Duration),
    /// The same with `&wait=`, asked again as soon as it answers.
    LongPoll(u32),
    /// The seed's `GET /polling` (the last 5 comments of room `default`) every interval.
    Seed(Duration),
    /// The live room's WebSocket.
    WebSocket,
}

impl Transport {
    /// The row's label.
    pub fn label(&self) -> String {
        match self {
            Self::ShortPoll(every) => format!("short poll {}", secs(*every)),
            Self::LongPoll(wait) => format!("long poll (wait {wait} s)"),
            Self::Seed(every) => format!("seed GET /polling {}", secs(*every)),
            Self::WebSocket => "WebSocket".into(),
        }
    }

    /// Whether the row reads the HTTP room (else the live room).
    pub fn over_http(&self) -> bool {
        !matches!(self, Self::WebSocket)
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What one row's viewers share: their bytes, latencies and repeats, and the byte series for
/// the chart.
pub struct Row {
    /// The transport.
    pub transport: Transport,
    /// Bytes at every viewer socket of the row.
    pub traffic: Arc<Traffic>,
    /// Latency of each first delivery.
    pub latency: LatencyRecorder,
    /// Deliveries of a comment a viewer already had.
    pub repeated: AtomicU64,
    /// `(seconds since the stream started, traffic since then)`, sampled for the chart.
    pub series: Mutex<Vec<(f64, TrafficSnapshot)>>,
    /// Failures by kind.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Row {
    /// A row for `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            traffic: Traffic::shared(),
            latency: LatencyRecorder::new(),
            repeated: AtomicU64::new(0),
            series: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    fn error(&self, what: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(what.into()).or_default() += 1;
    }
}

/// What every client of a comparison knows.
pub struct Context {
    /// The HTTP service.
    pub http: Base,
    /// The live service.
    pub live: Base,
    /// The room (on both services).
    pub room: ChannelId,
    /// This run's id, stamped into its comments.
    pub run: u32,
    /// Stamps count from here.
    pub epoch: Instant,
    /// The stream's schedule, published when every viewer is ready.
    pub schedule: watch::Receiver<Option<Schedule>>,
    /// When receiving stops (the stream's end plus the linger).
    pub end: watch::Receiver<Option<Instant>>,
    /// Viewers ready to receive (cursor known, socket open).
    pub ready: AtomicU64,
    /// Characters per comment.
    pub text_len: usize,
}

impl Context {
    /// Waits for the schedule and the end time; `None` if the run was abandoned.
    async fn start(&self) -> Option<(Schedule, Instant)> {
        let mut schedule = self.schedule.clone();
        let plan = *schedule.wait_for(Option::is_some).await.ok()?;
        let mut end = self.end.clone();
        let end = *end.wait_for(Option::is_some).await.ok()?;
        Some((plan?, end?))
    }

    fn cursor_path(&self) -> String {
        format!("/api/rooms/{}/danmaku", self.room)
    }

    /// Records a batch of comments a viewer of `row` received now.
    fn accept(&self, row: &Row, seen: &mut IndexSet, items: &[Danmaku]) {
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_micros() as u64;
        let mut latencies = Vec::new();
        for item in items {
            let Some(stamp) = Stamp::parse(&item.text).filter(|s| s.run == self.run) else {
                continue;
            };
            if seen.insert(stamp.index) {
                latencies.push(now.saturating_sub(stamp.due_micros));
            } else {
                row.repeated.fetch_add(1, Ordering::Relaxed);
            }
        }
        row.latency.record_all(&latencies);
    }
}

/// One viewer of `row`, the `number`-th of `viewers`: gets ready, waits for the stream, receives
/// until the end, and returns the indices it saw.
pub async fn viewer(ctx: Arc<Context>, row: Arc<Row>, number: usize, viewers: usize) -> IndexSet {
    let mut seen = IndexSet::default();
    let result = match row.transport {
        Transport::ShortPoll(every) | Transport::Seed(every) => {
            let seed = matches!(row.transport, Transport::Seed(_));
            short_poll(
                &ctx,
                &row,
                &mut seen,
                every,
                phase(every, number, viewers),
                seed,
            )
            .await
        }
        Transport::LongPoll(wait) => long_poll(&ctx, &row, &mut seen, wait).await,
        Transport::WebSocket => websocket(&ctx, &row, &mut seen, number).await,
    };
    if let Err(e) = result {
        row.error(e.to_string());
    }
    seen
}

/// Pages open at random moments, so polls of different viewers spread over the interval.
fn phase(every: Duration, number: usize, viewers: usize) -> Duration {
    every.mul_f64(number as f64 / viewers.max(1) as f64)
}

async fn short_poll(
    ctx: &Context,
    row: &Row,
    seen: &mut IndexSet,
    every: Duration,
    phase: Duration,
    seed: bool,
) -> Result<(), CliError> {
    let mut client = HttpClient::new(&ctx.http, row.traffic.clone())?;
    let path = ctx.cursor_path();
    // Setup, before the measured window: the page's first load (which also opens the
    // connection, as it would for every row).
    let mut cursor = if seed {
        client
            .get("/polling", REQUEST_TIMEOUT)
            .await?
            .json::<Vec<Danmaku>>()?;
        0
    } else {
        client
            .get(&format!("{path}?limit=1"), REQUEST_TIMEOUT)
            .await?
            .json::<Page>()?
            .next
    };
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    let Some((plan, end)) = ctx.start().await else {
        return Ok(());
    };
    let mut next_poll = plan.start + phase;
    while next_poll < end {
        tokio::time::sleep_until(next_poll.into()).await;
        next_poll += every;
        if seed {
            match client.get("/polling", REQUEST_TIMEOUT).await {
                Ok(response) => match response.json::<Vec<Danmaku>>() {
                    Ok(items) => ctx.accept(row, seen, &items),
                    Err(e) => row.error(e.to_string()),
                },
                Err(e) => row.error(e.to_string()),
            }
            continue;
        }
        // A full page means more are waiting: ask again at once, as the page does.
        loop {
            let url = format!("{path}?after={cursor}&limit={PAGE_LIMIT}");
            match client
                .get(&url, REQUEST_TIMEOUT)
                .await
                .and_then(|r| r.json::<Page>())
            {
                Ok(page) => {
                    ctx.accept(row, seen, &page.items);
                    cursor = page.next;
                    if page.items.len() < PAGE_LIMIT {
                        break;
                    }
                }
                Err(e) => {
                    row.error(e.to_string());
                    break;
                }
            }
        }
    }
    Ok(())
}

async fn long_poll(
    ctx: &Context,
    row: &Row,
    seen: &mut IndexSet,
    wait: u32,
) -> Result<(), CliError> {
    let mut client = HttpClient::new(&ctx.http, row.traffic.clone())?;
    let path = ctx.cursor_path();
    let mut cursor = client
        .get(&format!("{path}?limit=1"), REQUEST_TIMEOUT)
        .await?
        .json::<Page>()?
        .next;
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    let Some((_, end)) = ctx.start().await else {
        return Ok(());
    };
    let limit = Duration::from_secs(u64::from(wait)) + REQUEST_TIMEOUT;
    let stop = tokio::time::sleep_until(end.into());
    tokio::pin!(stop);
    loop {
        let url = format!("{path}?after={cursor}&limit={PAGE_LIMIT}&wait={wait}");
        let answer = tokio::select! {
            () = &mut stop => return Ok(()),
            answer = client.get(&url, limit) => answer,
        };
        match answer.and_then(|r| r.json::<Page>()) {
            Ok(page) => {
                ctx.accept(row, seen, &page.items);
                cursor = page.next;
            }
            Err(e) => {
                row.error(e.to_string());
                // Do not spin on a failing server.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn websocket(
    ctx: &Context,
    row: &Row,
    seen: &mut IndexSet,
    number: usize,
) -> Result<(), CliError> {
    let path = format!("/ws/live/{}?name=viewer-{number}", ctx.room);
    let mut socket = tokio::time::timeout(
        REQUEST_TIMEOUT,
        ws::connect(&ctx.live, &path, &row.traffic, ws::lean_config()),
    )
    .await
    .map_err(|_| CliError::timeout("the WebSocket upgrade", REQUEST_TIMEOUT))??;
    ws::first_frame(&mut socket, REQUEST_TIMEOUT).await?;
    ctx.ready.fetch_add(1, Ordering::Relaxed);
    // Frames that arrive before the stream starts are read (and counted) while waiting.
    let start = ctx.start();
    tokio::pin!(start);
    let end = loop {
        tokio::select! {
            started = &mut start => match started {
                Some((_, end)) => break end,
                None => return Ok(()),
            },
            incoming = ws::next_frame(&mut socket) => {
                if !matches!(incoming, ws::Incoming::Frame(_)) {
                    return Err(CliError::Protocol("the WebSocket closed before the stream".into()));
                }
            }
        }
    };
    let stop = tokio::time::sleep_until(end.into());
    tokio::pin!(stop);
    loop {
        let incoming = tokio::select! {
            () = &mut stop => return Ok(()),
            incoming = ws::next_frame(&mut socket) => incoming,
        };
        match incoming {
            ws::Incoming::Frame(ServerMessage::Danmaku { items }) => ctx.accept(row, seen, &items),
            ws::Incoming::Frame(_) => {}
            ws::Incoming::Closed(close) => {
                return Err(CliError::Protocol(format!(
                    "the WebSocket closed{}",
                    ws::describe_close(&close)
                )));
            }
            ws::Incoming::Broken(reason) => return Err(CliError::Protocol(reason)),
        }
    }
}

/// What the senders stored, by message index.
#[derive(Default)]
pub struct Stored {
    /// Indices the HTTP room stored (201).
    pub http: Mutex<IndexSet>,
    /// Indices the live room acknowledged.
    pub live: Mutex<IndexSet>,
    /// Failures by kind.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// How far behind the schedule the latest post left, µs.
    pub max_lag_micros: AtomicU64,
}

impl Stored {
    fn error(&self, what: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(what.into()).or_default() += 1;
    }

    fn lag(&self, due: Instant) {
        let lag = Instant::now().saturating_duration_since(due).as_micros() as u64;
        self.max_lag_micros.fetch_max(lag, Ordering::Relaxed);
    }
}

/// Poster `number` of `posters` to the HTTP room: its share of the schedule, one `POST` each
/// when due (a poster waits for each `201`, so several share a high rate).
pub async fn http_poster(ctx: Arc<Context>, stored: Arc<Stored>, number: u64, posters: u64) {
    let Ok(mut client) = HttpClient::new(&ctx.http, Traffic::shared()) else {
        return;
    };
    let Some((plan, _)) = ctx.start().await else {
        return;
    };
    let path = ctx.cursor_path();
    for index in plan.indices_of(number, posters) {
        let due = plan.due(index);
        tokio::time::sleep_until(due.into()).await;
        stored.lag(due);
        let draft = DraftDanmaku {
            author: "compare".into(),
            text: plan.stamp(ctx.run, index).text(ctx.text_len),
            ..DraftDanmaku::default()
        };
        match client.post_json(&path, &draft, REQUEST_TIMEOUT).await {
            Ok(response) if response.status.is_success() => {
                stored
                    .http
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(index);
            }
            Ok(response) => stored.error(format!("HTTP post: {}", response.error())),
            Err(e) => stored.error(format!("HTTP post: {e}")),
        }
    }
}

/// The live room's sender: one connection, each comment when due, acks read alongside.
pub async fn live_sender(ctx: Arc<Context>, stored: Arc<Stored>) {
    let path = format!("/ws/live/{}?name=compare", ctx.room);
    let socket = match ws::connect(&ctx.live, &path, &Traffic::shared(), ws::lean_config()).await {
        Ok(socket) => socket,
        Err(e) => {
            stored.error(format!("live sender: {e}"));
            return;
        }
    };
    let Some((plan, end)) = ctx.start().await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let reader_stored = stored.clone();
    let reader = async move {
        let stop = tokio::time::sleep_until(end.into());
        tokio::pin!(stop);
        loop {
            let incoming = tokio::select! {
                () = &mut stop => return,
                incoming = stream.next() => incoming,
            };
            match incoming {
                Some(Ok(Message::Text(text))) => match ws::numbered_reply(&text) {
                    Some(NumberedReply::Acked(index)) => {
                        reader_stored
                            .live
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(index);
                    }
                    Some(NumberedReply::Refused(code)) => {
                        reader_stored.error(format!("live send: {code}"));
                    }
                    None => {}
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    reader_stored.error("live sender disconnected");
                    return;
                }
            }
        }
    };
    let writer = async move {
        for index in plan.indices_of(0, 1) {
            let due = plan.due(index);
            tokio::time::sleep_until(due.into()).await;
            stored.lag(due);
            let frame = ws::numbered_send(
                index,
                plan.stamp(ctx.run, index).text(ctx.text_len),
                None,
                None,
            );
            if sink.send(ws::encode(&frame)).await.is_err() {
                stored.error("live send failed");
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_of_different_viewers_spread_over_the_interval() {
        let every = Duration::from_secs(10);
        assert_eq!(phase(every, 0, 4), Duration::ZERO);
        assert_eq!(phase(every, 2, 4), Duration::from_secs(5));
    }

    #[test]
    fn labels_name_the_interval() {
        assert_eq!(
            Transport::ShortPoll(Duration::from_secs(10)).label(),
            "short poll 10 s"
        );
        assert_eq!(
            Transport::Seed(Duration::from_millis(500)).label(),
            "seed GET /polling 0.5 s"
        );
        assert!(!Transport::WebSocket.over_http());
    }
}
