//! The bus that makes several instances of a service one: what one instance commits, the others
//! hear of, through Redis pub/sub (as Socket.IO's Redis adapter and Centrifugo's Redis engine do).
//!
//! Each instance of a service publishes on one Redis channel (`danmaku.<service>` unless
//! `DANMAKU_BUS_CHANNEL` names another), and listens
//! to it. A message is an [`Envelope`]: the sending instance's id and a batch of [`BusEvent`]s.
//! The publisher sends whatever queued up while the previous message was being written as one
//! message, so a busy instance sends few large messages and a quiet one sends each event at once.
//!
//! Pub/sub is fire and forget: a message sent while an instance is cut off from Redis never
//! reaches it. That is fine because the database is the record and every comment has a dense id
//! in its channel: [`crate::fanout`] notices a gap and reads what is missing from the store, and
//! after a reconnect it reads what every watched channel missed. An instance whose own messages
//! could not be sent says, once it is back, how far each channel got ([`BusEvent::Committed`]),
//! so the others fetch the rest.
//!
//! An instance knows the bus is alive by hearing itself: it publishes a heartbeat every
//! [`HEARTBEAT`], and the listener, which receives its own messages too, reconnects when it has
//! heard nothing for [`SILENCE`]. [`Bus::status`] says whether both directions work; `/healthz`
//! reports `degraded` while they do not (the instance goes on serving its own viewers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shared_model::{ChannelId, Danmaku};
use tokio::sync::mpsc;

/// How often an instance publishes something at least: a heartbeat when it had nothing else to
/// say (so it hears from itself at least that often).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the listener waits without a message before it takes the connection for dead.
pub const SILENCE: Duration = Duration::from_secs(3);

/// How long connecting and each command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Events queued for publishing at most; past it events are dropped (and made good later by a
/// [`BusEvent::Committed`]), so a stalled Redis cannot grow the instance's memory.
const QUEUE: usize = 65_536;

/// Events in one message at most.
const MAX_BATCH: usize = 1_024;

/// Which instance sent a message: random per process start.
pub type InstanceId = u64;

/// A validated `redis://` URL (shown with its password redacted).
#[derive(Clone)]
pub struct BusUrl(String);

impl std::str::FromStr for BusUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if !(value.starts_with("redis://") || value.starts_with("unix://")) {
            return Err(format!(
                "{value:?} is not a bus this build knows (redis://host:port/)"
            ));
        }
        redis::Client::open(value).map_err(|e| format!("not a Redis URL: {e}"))?;
        Ok(Self(value.to_owned()))
    }
}

impl BusUrl {
    /// The URL itself (with its password: for connecting, never for showing).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&danmaku_store::redact_url(&self.0))
    }
}

impl std::fmt::Debug for BusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BusUrl({self})")
    }
}

/// What instances tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A comment was committed.
    Comment {
        /// The comment, as stored.
        item: Danmaku,
    },
    /// An import took the ids `first..=last` of `channel` (pushed to nobody; see
    /// [`danmaku_store::Committed::Imported`]).
    Imported {
        /// The channel.
        channel: ChannelId,
        /// Its first id.
        first: i64,
        /// Its last id.
        last: i64,
    },
    /// A moderator deleted comment `id` of `channel` (see [`danmaku_store::Committed::Deleted`]).
    Deleted {
        /// The channel.
        channel: ChannelId,
        /// The comment's id.
        id: i64,
    },
    /// The sender committed comments up to `last` in `channel` that it may not have told of
    /// (its messages were lost while Redis was away): read the rest from the store.
    Committed {
        /// The channel.
        channel: ChannelId,
        /// The newest id the sender committed there.
        last: i64,
    },
    /// The sender's viewers per channel, all of them (channels it has none of are left out).
    Viewers {
        /// `(channel, viewers)`.
        counts: Vec<(ChannelId, u32)>,
    },
    /// Something only one service understands (a live room's check-in opening, say).
    Service {
        /// Its own JSON.
        event: serde_json::Value,
    },
    /// The sender is alive.
    Heartbeat,
}

/// One message on the bus.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: InstanceId,
    /// What it says, in order.
    pub events: Vec<BusEvent>,
}

/// What an instance does with the events of the others, and with reconnects.
pub trait BusListener: Send + Sync + 'static {
    /// Another instance sent `event`.
    fn heard(&self, from: InstanceId, event: BusEvent);
    /// The listener (re)connected: whatever was sent while it was away is lost, so read it from
    /// the store.
    fn reconnected(&self);
}

/// Whether the bus works, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusStatus {
    /// Both directions work.
    pub connected: bool,
    /// Why not, when not (for the operator; it names no password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shared state of the two tasks.
struct Shared {
    listening: AtomicBool,
    publishing: AtomicBool,
    /// The newest id per channel whose event could not be sent; told as
    /// [`BusEvent::Committed`] once publishing works again. A std mutex: held for a map call.
    unsent: Mutex<HashMap<ChannelId, i64>>,
    last_error: Mutex<Option<String>>,
    /// When a message last went out: a heartbeat is sent only after a quiet [`HEARTBEAT`].
    last_sent: Mutex<Instant>,
}

impl Shared {
    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        let text = format!("{what}: {e}");
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(text.as_str()) {
            log::warn!("bus: {text}");
        }
        *last = Some(text);
    }

    fn remember_unsent(&self, events: &[BusEvent]) {
        let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
        for event in events {
            let (channel, last) = match event {
                BusEvent::Comment { item } => (&item.channel, item.id),
                BusEvent::Imported { channel, last, .. }
                | BusEvent::Committed { channel, last } => (channel, *last),
                _ => continue,
            };
            let newest = unsent.entry(channel.clone()).or_insert(last);
            *newest = (*newest).max(last);
        }
    }

    fn take_unsent(&self) -> Vec<BusEvent> {
        let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
        unsent
            .drain()
            .map(|(channel, last)| BusEvent::Committed { channel, last })
            .collect()
    }
}

/// An instance's end of the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    id: InstanceId,
    queue: mpsc::Sender<BusEvent>,
    shared: Arc<Shared>,
}

impl Bus {
    /// Connects this instance to the bus at `url` on the pub/sub `channel` in the background
    /// (an instance starts and serves while Redis is away) and hands what the others send to
    /// `listener`. Needs a running tokio runtime.
    pub fn start(url: &BusUrl, channel: &str, listener: Arc<dyn BusListener>) -> Self {
        let client = redis::Client::open(url.0.as_str()).expect("checked when parsed");
        let channel = channel.to_owned();
        let id: InstanceId = rand::random();
        let shared = Arc::new(Shared {
            listening: AtomicBool::new(false),
            publishing: AtomicBool::new(false),
            unsent: Mutex::default(),
            last_error: Mutex::default(),
            last_sent: Mutex::new(Instant::now()),
        });
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(publish(
            client.clone(),
            channel.clone(),
            id,
            events,
            shared.clone(),
        ));
        log::info!("bus: instance {id:016x} on {url}, channel {channel}");
        tokio::spawn(listen(
            client,
            channel,
            id,
            listener,
            shared.clone(),
            queue.downgrade(),
        ));
        // Both tasks end once the last handle of this bus is dropped. A heartbeat goes out only
        // when nothing else did for a while: any message tells the others (and this instance's
        // own listener) that it is alive.
        let beat = queue.downgrade();
        let quiet = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT / 2);
            loop {
                every.tick().await;
                let Some(queue) = beat.upgrade() else { return };
                let last = *quiet
                    .last_sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if last.elapsed() >= HEARTBEAT {
                    let _ = queue.try_send(BusEvent::Heartbeat);
                }
            }
        });
        Self { id, queue, shared }
    }

    /// This instance's id.
    pub fn id(&self) -> InstanceId {
        self.id
    }

    /// Sends `event` to the other instances, never waiting: when the queue is full (Redis is
    /// stalled) the event is dropped and made good later (see the module docs).
    pub fn publish(&self, event: BusEvent) {
        if let Err(e) = self.queue.try_send(event) {
            let event = match e {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            self.shared.remember_unsent(std::slice::from_ref(&event));
        }
    }

    /// Whether the bus works both ways now.
    pub fn status(&self) -> BusStatus {
        let connected = self.shared.listening.load(Ordering::Relaxed)
            && self.shared.publishing.load(Ordering::Relaxed);
        let error = (!connected).then(|| {
            self.shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "connecting".to_owned())
        });
        BusStatus { connected, error }
    }
}

/// Waits before the `attempt`th reconnection: 100 ms doubling up to [`MAX_BACKOFF`].
async fn back_off(attempt: u32) {
    let wait = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(5))
        .min(MAX_BACKOFF);
    tokio::time::sleep(wait).await;
}

/// The publishing task: sends queued events, batched, on one connection, reconnecting as needed.
async fn publish(
    client: redis::Client,
    channel: String,
    from: InstanceId,
    mut events: mpsc::Receiver<BusEvent>,
    shared: Arc<Shared>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut attempt = 0;
    let mut batch = Vec::new();
    loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(e) => {
                shared.publishing.store(false, Ordering::Relaxed);
                shared.failed("cannot connect to publish", e);
                // Keep the queue from filling with what cannot be sent anyway.
                while let Ok(event) = events.try_recv() {
                    shared.remember_unsent(std::slice::from_ref(&event));
                }
                back_off(attempt).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        shared.publishing.store(true, Ordering::Relaxed);
        log::info!("bus: publishing on {channel}");
        // What was not sent while away: the others read it from the store.
        batch.extend(shared.take_unsent());
        loop {
            if batch.is_empty() {
                match events.recv().await {
                    Some(event) => batch.push(event),
                    None => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            let envelope = Envelope {
                from,
                events: std::mem::take(&mut batch),
            };
            let payload = serde_json::to_vec(&envelope).expect("bus events serialize");
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
            *shared
                .last_sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
            if let Err(e) = sent {
                shared.publishing.store(false, Ordering::Relaxed);
                shared.failed("publishing failed", e);
                shared.remember_unsent(&envelope.events);
                break;
            }
        }
    }
}

/// The listening task: subscribes, hands every other instance's events to `listener`, and
/// reconnects when the connection ends or falls silent.
async fn listen(
    client: redis::Client,
    channel: String,
    me: InstanceId,
    listener: Arc<dyn BusListener>,
    shared: Arc<Shared>,
    alive: mpsc::WeakSender<BusEvent>,
) {
    let mut attempt = 0;
    let mut was_connected = false;
    while alive.strong_count() > 0 {
        let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                shared.listening.store(false, Ordering::Relaxed);
                shared.failed("cannot subscribe", e);
                back_off(attempt).await;
                attempt += 1;
                continue;
            }
            Err(_) => {
                shared.listening.store(false, Ordering::Relaxed);
                shared.failed("cannot subscribe", "no answer in time");
                back_off(attempt).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        shared.listening.store(true, Ordering::Relaxed);
        log::info!("bus: listening on {channel}");
        if was_connected {
            log::info!("bus: reconnected; catching up from the store");
        }
        was_connected = true;
        // Whatever was published before the subscription took effect is lost to this instance:
        // catch up (on the first connect too: an instance that started while Redis was away
        // has viewers already).
        listener.reconnected();
        let mut messages = pubsub.into_on_message();
        loop {
            let message = match tokio::time::timeout(SILENCE, messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    shared.failed("the subscription ended", "connection closed");
                    break;
                }
                Err(_) => {
                    shared.failed("the subscription fell silent", "no heartbeat");
                    break;
                }
            };
            if alive.strong_count() == 0 {
                return;
            }
            let envelope: Envelope = match serde_json::from_slice(message.get_payload_bytes()) {
                Ok(envelope) => envelope,
                Err(e) => {
                    log::warn!("bus: a message on {channel} is not ours: {e}");
                    continue;
                }
            };
            if envelope.from == me {
                continue;
            }
            for event in envelope.events {
                if !matches!(event, BusEvent::Heartbeat) {
                    listener.heard(envelope.from, event);
                }
            }
        }
        shared.listening.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_password() {
        let url: BusUrl = "redis://:hunter2@127.0.0.1:6379/".parse().unwrap();
        assert!(!url.to_string().contains("hunter2"), "{url}");
        assert!("http://127.0.0.1/".parse::<BusUrl>().is_err());
        assert!("127.0.0.1:6379".parse::<BusUrl>().is_err());
    }

    #[test]
    fn events_have_a_stable_wire_form() {
        let event = BusEvent::Committed {
            channel: ChannelId::parse("lobby").unwrap(),
            last: 7,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"kind": "committed", "channel": "lobby", "last": 7})
        );
    }

    #[test]
    fn unsent_events_become_one_watermark_per_channel() {
        let shared = Shared {
            listening: AtomicBool::new(false),
            publishing: AtomicBool::new(false),
            unsent: Mutex::default(),
            last_error: Mutex::default(),
            last_sent: Mutex::new(Instant::now()),
        };
        let lobby = ChannelId::parse("lobby").unwrap();
        shared.remember_unsent(&[
            BusEvent::Imported {
                channel: lobby.clone(),
                first: 3,
                last: 9,
            },
            BusEvent::Heartbeat,
            BusEvent::Committed {
                channel: lobby.clone(),
                last: 5,
            },
        ]);
        let told = shared.take_unsent();
        assert_eq!(told.len(), 1);
        assert!(matches!(&told[0], BusEvent::Committed { channel, last: 9 } if *channel == lobby));
        assert!(shared.take_unsent().is_empty());
    }
}
