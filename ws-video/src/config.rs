//! The settings of `ws-video`: those of every WebSocket service (`ServerArgs`, `WsArgs`), with
//! this binary's name, help and defaults, plus its own limits on Bilibili imports and on the
//! reads it caches ([`VideoArgs`]).
//!
//! Read them with `service_kit::config::from_env(&INFO)` (in `main`) or
//! `service_kit::config::parse_from(&INFO, args)` (in tests), like every service.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use service_kit::config::{ServiceArgs, ServiceDefaults, ServiceInfo, WsServiceConfig};

/// The settings of `ws-video`. Each flag can also be set through its `DANMAKU_*` variable.
pub type Config = WsServiceConfig<VideoArgs>;

/// Settings of the video service: how much a Bilibili import may take, and how long answers to
/// hot reads are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct VideoArgs {
    /// Most <d> entries one Bilibili import may hold (valid or not). A file with more is refused
    /// with 413 while it is read, and nothing of it is stored.
    #[arg(long, env = "DANMAKU_IMPORT_MAX_ENTRIES", default_value = "20000")]
    pub import_max_entries: NonZeroU32,

    /// Bilibili imports one instance reads and stores at a time; one more is answered at once
    /// with 503 and Retry-After, before its body is read.
    #[arg(long, env = "DANMAKU_MAX_CONCURRENT_IMPORTS", default_value = "2")]
    pub max_concurrent_imports: NonZeroUsize,

    /// Seconds an import's body may take to arrive once the import started; a slower one is
    /// refused with 400, so that slow senders cannot hold the import permits.
    #[arg(long, env = "DANMAKU_IMPORT_BODY_TIMEOUT_SECS", default_value = "60")]
    pub import_body_timeout_secs: NonZeroU32,

    /// Comments each client (by IP address, IPv6 by /64) may import per second, sustained: an
    /// import costs the comments it would store.
    #[arg(long, env = "DANMAKU_IMPORT_ROWS_PER_SEC", default_value = "20")]
    pub import_rows_per_sec: NonZeroU32,

    /// Comments a client may import at once before the per-second rate applies; at least
    /// DANMAKU_IMPORT_MAX_ENTRIES, so that a full file can be imported.
    #[arg(long, env = "DANMAKU_IMPORT_ROWS_BURST", default_value = "20000")]
    pub import_rows_burst: NonZeroU32,

    /// How long the answers to a video's DPlayer list and the first page of its export are
    /// kept and served again without reading the database, in milliseconds; 0 turns it off.
    #[arg(long, env = "DANMAKU_READ_CACHE_MS", default_value = "1000")]
    pub read_cache_ms: u64,
}

impl ServiceArgs for VideoArgs {
    /// The error names the variables involved.
    fn check(&self) -> Result<(), String> {
        if self.import_rows_burst < self.import_max_entries {
            return Err(format!(
                "DANMAKU_IMPORT_ROWS_BURST ({}) must be at least DANMAKU_IMPORT_MAX_ENTRIES ({}), \
                 or a full archive could never be imported",
                self.import_rows_burst, self.import_max_entries
            ));
        }
        Ok(())
    }
}

impl VideoArgs {
    /// How long an import's body may take to arrive.
    pub fn import_body_timeout(&self) -> Duration {
        Duration::from_secs(self.import_body_timeout_secs.get().into())
    }

    /// How long a cached answer is served; `None` when caching is off.
    pub fn read_cache_ttl(&self) -> Option<Duration> {
        (self.read_cache_ms > 0).then(|| Duration::from_millis(self.read_cache_ms))
    }
}

/// What `ws-video --help` says, and its defaults.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "ws-video",
    about: "Danmaku on a video's timeline over WebSocket, the DPlayer v3 API, and Bilibili XML import and export.",
    after_help: "Routes: GET /ws/videos/{video} (WebSocket), GET and POST /api/videos/{video}/danmaku, GET and POST /api/videos/{video}/danmaku.xml (Bilibili), GET and POST /dplayer/v3/, GET /healthz, and the page at /.\nLogging: RUST_LOG=debug for per-request detail.",
    defaults: ServiceDefaults {
        port: 8082,
        store: "data/ws-video.db",
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let argv = std::iter::once("ws-video").chain(args.iter().copied());
        service_kit::config::parse_from::<Config, _, _>(&INFO, argv).map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_hold_and_each_limit_can_be_set() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.service.import_max_entries.get(), 20_000);
        assert_eq!(config.service.max_concurrent_imports.get(), 2);
        assert_eq!(config.service.import_rows_per_sec.get(), 20);
        assert_eq!(config.service.import_rows_burst.get(), 20_000);
        assert_eq!(
            config.service.import_body_timeout(),
            Duration::from_secs(60)
        );
        assert_eq!(
            config.service.read_cache_ttl(),
            Some(Duration::from_millis(1000))
        );
        let config = parse(&[
            "--import-max-entries",
            "10",
            "--max-concurrent-imports",
            "1",
            "--import-rows-per-sec",
            "1",
            "--import-rows-burst",
            "10",
            "--read-cache-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(config.service.import_max_entries.get(), 10);
        // Reads are charged the rows they return, so no burst is too small to admit one.
        assert!(parse(&["--read-rows-burst", "1"]).is_ok());
        assert_eq!(config.service.max_concurrent_imports.get(), 1);
        assert_eq!(config.service.read_cache_ttl(), None);
    }

    #[test]
    fn limits_that_could_never_be_met_are_refused_by_name() {
        let err = parse(&["--import-max-entries", "100", "--import-rows-burst", "99"]).unwrap_err();
        assert!(err.contains("DANMAKU_IMPORT_ROWS_BURST"), "{err}");
        assert!(err.contains("DANMAKU_IMPORT_MAX_ENTRIES"), "{err}");
        let err = parse(&["--max-concurrent-imports", "0"]).unwrap_err();
        assert!(err.contains("DANMAKU_MAX_CONCURRENT_IMPORTS"), "{err}");
        let err = parse(&["--heartbeat-secs", "10", "--client-timeout-secs", "10"]).unwrap_err();
        assert!(err.contains("DANMAKU_CLIENT_TIMEOUT_SECS"), "{err}");
    }
}
