//! What the instances of a live service tell each other besides comments, through the fan-out's
//! bus: a check-in opened (the others start showing it and taking its codes at once, not only
//! when a guess or a first join makes them look), and someone checked in (the host's screen
//! shows it whichever instance took it).

use std::sync::Arc;

use actix::Addr;
use chrono::{DateTime, Utc};
use danmaku_store::RoomStore;
use serde::{Deserialize, Serialize};
use service_kit::bus::InstanceId;
use service_kit::fanout::{Fanout, PeerSink};
use shared_model::ChannelId;

use crate::hub::{Attended, LiveHub, StartCheckin};

/// A live service's own news for the other instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "live", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Check-in `checkin` was opened: read it from the store and start it.
    CheckinOpened {
        /// Its id.
        checkin: i64,
    },
    /// `name` checked in to `checkin` of `room` at `at`.
    Attended {
        /// The room.
        room: ChannelId,
        /// The check-in.
        checkin: i64,
        /// Who.
        name: String,
        /// When.
        #[serde(with = "shared_model::time::wire")]
        at: DateTime<Utc>,
    },
}

impl LiveEvent {
    /// Tells the other instances (nothing without a bus).
    pub fn tell(self, fanout: &Fanout) {
        match serde_json::to_value(&self) {
            Ok(event) => fanout.tell_peers(event),
            Err(e) => log::error!("cannot encode {self:?}: {e}"),
        }
    }
}

/// Hears the other instances' [`LiveEvent`]s (and their viewer counts, for the hub).
pub struct LivePeers {
    /// Where an opened check-in is read.
    pub rooms: Arc<dyn RoomStore>,
    /// The hub that runs check-ins and counts viewers.
    pub hub: Addr<LiveHub>,
}

impl PeerSink for LivePeers {
    fn viewers(&self, from: InstanceId, counts: &[(ChannelId, u32)]) {
        self.hub.viewers(from, counts);
    }

    fn service(&self, from: InstanceId, event: &serde_json::Value) {
        let event: LiveEvent = match serde_json::from_value(event.clone()) {
            Ok(event) => event,
            Err(e) => {
                log::warn!("instance {from:016x} sent an event this one does not know: {e}");
                return;
            }
        };
        match event {
            LiveEvent::CheckinOpened { checkin } => {
                let (rooms, hub) = (self.rooms.clone(), self.hub.clone());
                tokio::spawn(async move {
                    match rooms.checkin(checkin).await {
                        Ok(Some(record)) if !record.closed => hub.do_send(StartCheckin { record }),
                        Ok(_) => {}
                        Err(e) => log::warn!("reading check-in {checkin} opened elsewhere: {e}"),
                    }
                });
            }
            LiveEvent::Attended {
                room,
                checkin,
                name,
                at,
            } => self.hub.do_send(Attended {
                room,
                checkin,
                name,
                at,
            }),
        }
    }
}
