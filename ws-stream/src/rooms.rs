//! The rules of live rooms, whichever way a client comes in (HTTP routes or a WebSocket
//! session): who is a room's host, opening a check-in, checking in, reading the chat history,
//! and sending a comment. Routes and sessions parse, call these, and answer; nothing here knows
//! of HTTP or WebSocket.
//!
//! Rooms, check-ins, attendance and wrong codes are in the [`RoomStore`]; comments in the
//! [`Store`]; the codes of open check-ins in the hub ([`crate::hub`]), which this module asks
//! and tells.

use std::ops::RangeInclusive;
use std::sync::Arc;

use actix::Addr;
use chrono::Utc;
use rand::Rng;
use shared_model::comment::{TimeRule, validate_author};
use shared_model::store::{Attendance, CheckinOpening, CheckinRecord, RoomRecord, RoomStore};
use shared_model::time::rfc3339;
use shared_model::{ApiError, ChannelId, Danmaku, DraftDanmaku, ErrorCode, Store, StoreError};

use crate::codes::{new_host_token, token_digest, token_matches};
use crate::hub::{Attended, LiveHub, StartCheckin, VerifyCode};

/// Seconds between two codes, as the host may choose.
pub const INTERVAL_SECS: RangeInclusive<u32> = 2..=60;

/// How long a check-in stays open, in seconds, as the host may choose.
pub const DURATION_SECS: RangeInclusive<u32> = 10..=3600;

/// Wrong codes a name may give per check-in; after that it is refused, even with the right one.
pub const MAX_WRONG_CODES: u32 = 5;

/// Comments in a newcomer's chat box.
pub const HISTORY_ITEMS: usize = 50;

/// Most comments a reconnecting viewer is sent; past that it gets the chat box and
/// `recovered: false`.
pub const MAX_RECOVERED_ITEMS: usize = 1000;

/// Characters of generated room ids: lowercase letters and digits without look-alikes.
const ROOM_ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Characters in a generated room id (32^10 = 2^50 ids).
const ROOM_ID_CHARS: usize = 10;

/// Fresh ids tried before creating a room gives up (a collision is already unlikely once).
const ROOM_ID_TRIES: usize = 8;

/// A store failure, logged with what was being done; the client sees `unavailable` (the
/// database did not answer in time, try again) or `internal`.
fn store_failed(doing: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| {
        log::error!("{doing} failed: {e}");
        e.client_error()
    }
}

/// The chat box a connection starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The comments, oldest first.
    pub items: Vec<Danmaku>,
    /// With `since`: whether `items` is exactly what was missed (`false`: too much was missed,
    /// and `items` is the usual chat box).
    pub recovered: Option<bool>,
}

/// The live rooms and their rules. Cheap to clone.
#[derive(Clone)]
pub struct LiveRooms {
    /// Where comments live.
    pub comments: Arc<dyn Store>,
    /// Where rooms and check-ins live.
    pub rooms: Arc<dyn RoomStore>,
    /// The hub: codes of open check-ins, and the rooms' connections.
    pub hub: Addr<LiveHub>,
}

impl LiveRooms {
    /// Creates a room with a fresh random id and host token (the token is returned once; the
    /// store keeps only its digest).
    pub async fn create_room(
        &self,
        title: Option<String>,
    ) -> Result<(RoomRecord, String), ApiError> {
        let token = new_host_token();
        for _ in 0..ROOM_ID_TRIES {
            let room = ChannelId::parse(&random_room_id())?;
            let created = self
                .rooms
                .create_room(&room, title.clone(), token_digest(&token))
                .await
                .map_err(store_failed("creating a room"))?;
            if let Some(created) = created {
                log::info!("room {room} created");
                return Ok((created, token));
            }
        }
        log::error!("no free room id after {ROOM_ID_TRIES} tries");
        Err(ApiError::internal())
    }

    /// Checks that `token` is the host token of `room`: `unauthorized` without one (or for a
    /// room nobody created), `forbidden` with a wrong one.
    pub async fn host_of(
        &self,
        room: &ChannelId,
        token: Option<&str>,
    ) -> Result<RoomRecord, ApiError> {
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this needs the room's host token (Authorization: Bearer <host_token>)",
            ));
        };
        let record = self
            .rooms
            .room(room)
            .await
            .map_err(store_failed("reading a room"))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("room {room} has no host: create rooms with POST /api/rooms"),
                )
            })?;
        if token_matches(token, &record.token_digest) {
            Ok(record)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("that is not the host token of room {room}"),
            ))
        }
    }

    /// Opens a check-in in `room` for its host; its codes start at once. `conflict` while
    /// another is open in the room.
    pub async fn open_checkin(
        &self,
        room: &ChannelId,
        token: Option<&str>,
        interval_secs: u32,
        duration_secs: u32,
    ) -> Result<CheckinRecord, ApiError> {
        self.host_of(room, token).await?;
        for (name, value, range) in [
            ("interval_secs", interval_secs, INTERVAL_SECS),
            ("duration_secs", duration_secs, DURATION_SECS),
        ] {
            if !range.contains(&value) {
                return Err(ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("{name} must be from {} to {}", range.start(), range.end()),
                ));
            }
        }
        let now = Utc::now();
        let closes_at = now + chrono::Duration::seconds(duration_secs.into());
        let opening = self
            .rooms
            .open_checkin(room, interval_secs, now, closes_at)
            .await
            .map_err(store_failed("opening a check-in"))?;
        match opening {
            CheckinOpening::Opened(record) => {
                self.hub.do_send(StartCheckin {
                    record: record.clone(),
                });
                Ok(record)
            }
            CheckinOpening::AlreadyOpen(running) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "check-in {} is open in this room until {}",
                    running.id,
                    rfc3339(running.closes_at)
                ),
            )),
        }
    }

    /// Check-in `id` and who attended, in order, for its room's host.
    pub async fn report(
        &self,
        id: i64,
        token: Option<&str>,
    ) -> Result<(CheckinRecord, Vec<Attendance>), ApiError> {
        let checkin = self.checkin(id).await?;
        self.host_of(&checkin.room, token).await?;
        let attendance = self
            .rooms
            .attendance(id)
            .await
            .map_err(store_failed("reading attendance"))?;
        Ok((checkin, attendance))
    }

    /// `name` types `code` for check-in `id`. Checking in twice is harmless (the first time is
    /// kept). Each wrong code is `wrong_code`; once a name gave [`MAX_WRONG_CODES`] of them,
    /// every later attempt of that name for this check-in is `too_many_attempts`, right code or
    /// not. A connection checks in only to its own room's check-ins (`from_room`); another
    /// room's is `not_found`, as if it did not exist. Returns the name as checked.
    pub async fn attend(
        &self,
        id: i64,
        name: &str,
        code: &str,
        from_room: Option<&ChannelId>,
    ) -> Result<String, ApiError> {
        let name = validate_author(name)?;
        let checkin = self.checkin(id).await?;
        if from_room.is_some_and(|room| *room != checkin.room) {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no check-in {id} in this room"),
            ));
        }
        if checkin.closed || Utc::now() >= checkin.closes_at {
            return Err(ApiError::new(
                ErrorCode::CheckinClosed,
                format!("check-in {id} closed at {}", rfc3339(checkin.closes_at)),
            ));
        }
        let wrong = self
            .rooms
            .wrong_codes(id, &name)
            .await
            .map_err(store_failed("reading wrong codes"))?;
        if wrong >= MAX_WRONG_CODES {
            return Err(ApiError::new(
                ErrorCode::TooManyAttempts,
                format!(
                    "{name} gave {MAX_WRONG_CODES} wrong codes and cannot check in to this one"
                ),
            ));
        }
        let valid = self
            .hub
            .send(VerifyCode {
                room: checkin.room.clone(),
                checkin: id,
                code: code.to_owned(),
            })
            .await
            .unwrap_or(false);
        if !valid {
            let wrong = self
                .rooms
                .record_wrong_code(id, &name)
                .await
                .map_err(store_failed("counting a wrong code"))?;
            return Err(ApiError::new(
                ErrorCode::WrongCode,
                format!(
                    "that is not the code on the host's screen ({} tries left)",
                    MAX_WRONG_CODES.saturating_sub(wrong)
                ),
            ));
        }
        let at = Utc::now();
        let new = self
            .rooms
            .record_attendance(id, &name, at)
            .await
            .map_err(store_failed("recording attendance"))?;
        if new {
            self.hub.do_send(Attended {
                room: checkin.room,
                checkin: id,
                name: name.clone(),
                at,
            });
        }
        Ok(name)
    }

    /// The chat box (the last [`HISTORY_ITEMS`]), or with `since` exactly what was missed after
    /// it when that is at most [`MAX_RECOVERED_ITEMS`].
    pub async fn history(&self, room: &ChannelId, since: Option<i64>) -> Result<History, ApiError> {
        let failed = store_failed("reading the history");
        let Some(since) = since else {
            let items = self
                .comments
                .latest(room, HISTORY_ITEMS)
                .await
                .map_err(failed)?;
            return Ok(History {
                items,
                recovered: None,
            });
        };
        let missed = self
            .comments
            .after(room, since, MAX_RECOVERED_ITEMS + 1)
            .await
            .map_err(store_failed("reading missed comments"))?;
        if missed.len() <= MAX_RECOVERED_ITEMS {
            return Ok(History {
                items: missed,
                recovered: Some(true),
            });
        }
        let items = self
            .comments
            .latest(room, HISTORY_ITEMS)
            .await
            .map_err(failed)?;
        Ok(History {
            items,
            recovered: Some(false),
        })
    }

    /// Stores a comment of `author` in `room`; returns once it is committed. The room hears of
    /// it from the store (see `service_kit::fanout`), in commit order, not from here.
    pub async fn send(&self, room: &ChannelId, draft: DraftDanmaku) -> Result<Danmaku, ApiError> {
        let new = draft.validate(TimeRule::Absent)?;
        self.comments
            .append(room, new)
            .await
            .map_err(store_failed("storing a comment"))
    }

    /// Check-in `id`, or `not_found`.
    async fn checkin(&self, id: i64) -> Result<CheckinRecord, ApiError> {
        self.rooms
            .checkin(id)
            .await
            .map_err(store_failed("reading a check-in"))?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no check-in {id}")))
    }
}

/// A fresh random room id.
fn random_room_id() -> String {
    let mut rng = rand::rng();
    (0..ROOM_ID_CHARS)
        .map(|_| ROOM_ID_ALPHABET[rng.random_range(0..ROOM_ID_ALPHABET.len())] as char)
        .collect()
}

/// The attendance of a check-in as CSV: `name,checked_in_at`, one row per attendee in the order
/// they checked in.
pub fn attendance_csv(attendance: &[Attendance]) -> Result<Vec<u8>, ApiError> {
    let failed = |e: csv::Error| {
        log::error!("writing CSV failed: {e}");
        ApiError::internal()
    };
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["name", "checked_in_at"])
        .map_err(failed)?;
    for row in attendance {
        out.write_record([spreadsheet_safe(&row.name), rfc3339(row.at)])
            .map_err(failed)?;
    }
    out.into_inner().map_err(|e| failed(e.into_error().into()))
}

/// A name as a spreadsheet cell: one starting with `=`, `+`, `-` or `@` would be read as a
/// formula, so it gets a leading apostrophe.
fn spreadsheet_safe(name: &str) -> String {
    if name.starts_with(['=', '+', '-', '@']) {
        format!("'{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_names_are_defused_for_spreadsheets() {
        assert_eq!(spreadsheet_safe("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(spreadsheet_safe("@cmd"), "'@cmd");
        assert_eq!(spreadsheet_safe("ann"), "ann");
    }

    #[test]
    fn room_ids_are_valid_channels_from_the_alphabet() {
        for _ in 0..100 {
            let id = random_room_id();
            assert_eq!(id.len(), ROOM_ID_CHARS);
            assert!(id.bytes().all(|b| ROOM_ID_ALPHABET.contains(&b)), "{id}");
            assert!(ChannelId::parse(&id).is_ok());
        }
    }
}
