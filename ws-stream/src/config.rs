//! The settings of `ws-stream`: those of every WebSocket service ([`ServerArgs`], [`WsArgs`]),
//! plus the check-in's guessing limits ([`CheckinArgs`]), with this binary's name, help and
//! defaults.
//!
//! Read them with `service_kit::config::from_env(&INFO)` (in `main`) or
//! `service_kit::config::parse_from(&INFO, args)` (in tests), like every service.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use service_kit::config::{ServiceArgs, ServiceDefaults, ServiceInfo, WsServiceConfig};

/// The settings of `ws-stream`. Each flag can also be set through its `DANMAKU_*` variable.
pub type Config = WsServiceConfig<LiveArgs>;

/// Settings of the live service alone.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// How much guessing a check-in takes.
    #[command(flatten)]
    pub checkin: CheckinArgs,
    /// Rooms whose newest 50 comments are kept in memory (kept current from the fan-out), so
    /// joins and short reconnects read no database; past that, the room read least recently is
    /// dropped and read again from the database when next asked for.
    #[arg(long, env = "DANMAKU_HISTORY_CACHE_ROOMS", default_value = "1000")]
    pub history_cache_rooms: NonZeroUsize,
    /// The video service a live room's comments are attached to as a recording's timeline
    /// (`POST /api/rooms/{room}/recording`): its base URL, `http://` only. With the same
    /// `DANMAKU_ADMIN_TOKEN` on both services, the import spends no client budget there.
    #[arg(
        long,
        env = "DANMAKU_VIDEO_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub video_url: url::Url,
}

impl ServiceArgs for LiveArgs {}

/// Limits on wrong check-in codes. Every guess also spends one token of the client's
/// `--rate-per-sec` budget.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckinArgs {
    /// Wrong codes one client (IP address, IPv6 by /64) may give per check-in; after that its
    /// guesses are refused (`too_many_attempts`), whatever name they carry.
    #[arg(long, env = "DANMAKU_CHECKIN_WRONG_PER_CLIENT", default_value = "10")]
    pub checkin_wrong_per_client: NonZeroU32,

    /// Wrong codes all clients together may give per check-in in a burst; once spent, guessing
    /// slows to `--checkin-wrong-per-min` for everyone (half the burst is kept for clients that
    /// have not guessed wrong yet).
    #[arg(long, env = "DANMAKU_CHECKIN_WRONG_BURST", default_value = "200")]
    pub checkin_wrong_burst: NonZeroU32,

    /// Wrong codes per minute all clients together may give per check-in once the burst is
    /// spent.
    #[arg(long, env = "DANMAKU_CHECKIN_WRONG_PER_MIN", default_value = "60")]
    pub checkin_wrong_per_min: NonZeroU32,
}

impl CheckinArgs {
    /// The limits as the hub keeps them.
    pub fn limits(&self) -> GuessLimits {
        GuessLimits {
            per_client: self.checkin_wrong_per_client.get(),
            burst: self.checkin_wrong_burst.get(),
            refill: Duration::from_secs(60) / self.checkin_wrong_per_min.get(),
        }
    }
}

/// How many wrong codes a check-in takes (see [`CheckinArgs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessLimits {
    /// Wrong codes per client per check-in.
    pub per_client: u32,
    /// Wrong codes per check-in in a burst, all clients together.
    pub burst: u32,
    /// Time to earn back one wrong code of the burst.
    pub refill: Duration,
}

/// What `ws-stream --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "ws-stream",
    about: "Live danmaku rooms over WebSocket: broadcast, chat history, viewer counts, and the rotating classroom check-in.",
    after_help: "Routes: GET /ws/live/{room}?name=&since= (WebSocket; a host proves its token with Authorization: Bearer or the subprotocol danmaku.bearer.<token>), POST /api/rooms, GET /api/rooms/{room}/history, POST /api/rooms/{room}/checkins, GET /api/checkins/{id} and {id}.csv, POST /api/checkins/{id}/attend, GET /healthz, and the pages at / and /host.html.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8083,
        store: "data/ws-stream.db",
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::config::parse_from;

    #[test]
    fn checkin_limits_default_and_parse() {
        let c: Config = parse_from(&INFO, ["ws-stream"]).unwrap();
        assert_eq!(
            c.service.checkin.limits(),
            GuessLimits {
                per_client: 10,
                burst: 200,
                refill: Duration::from_secs(1),
            }
        );
        let c: Config = parse_from(
            &INFO,
            [
                "ws-stream",
                "--checkin-wrong-per-client",
                "3",
                "--checkin-wrong-burst",
                "20",
                "--checkin-wrong-per-min",
                "120",
            ],
        )
        .unwrap();
        assert_eq!(
            c.service.checkin.limits(),
            GuessLimits {
                per_client: 3,
                burst: 20,
                refill: Duration::from_millis(500),
            }
        );
        let err = parse_from::<Config, _, _>(&INFO, ["ws-stream", "--checkin-wrong-burst", "0"])
            .unwrap_err();
        assert!(
            err.to_string().contains("DANMAKU_CHECKIN_WRONG_BURST"),
            "{err}"
        );
    }
}
