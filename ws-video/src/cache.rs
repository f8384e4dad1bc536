//! Brief caches of the video service's heaviest anonymous reads: a video's DPlayer list (up to
//! 10,000 rows, open to any origin), the first page of its Bilibili export, and its density
//! (a count over every comment of the video, asked by every viewer who opens it). A flood of the
//! same read is answered from memory: one database read per key and time to live, and
//! requests that miss together share that one read (moka's `try_get_with`), so they do not
//! each queue on the store's two reader threads.
//!
//! Answers are kept for `--read-cache-ms` (1 s by default) after they were read, not
//! invalidated by new comments: a list may be that much older than the newest comment. Each
//! cache is bounded by weight (about the bytes it holds), so a scan over many videos evicts old
//! answers instead of growing memory. Clients still pay for every read from their budget
//! (`service_kit::ClientBudget::reads`), by the rows of the answer whether it came from memory
//! or not: the cache spares the database, the budget keeps one client from taking all of the
//! service.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use danmaku_store::StoreError;
use moka::future::Cache;
use shared_model::api::VideoDensity;
use shared_model::{ApiError, ChannelId, Danmaku};

/// Most bytes of DPlayer answers kept (serialized JSON).
pub const DPLAYER_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Most bytes (estimated) of export first pages kept.
pub const EXPORT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Most bytes (estimated) of density answers kept.
pub const DENSITY_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// What a cached row is reckoned to cost besides its text and author, in bytes.
const ROW_OVERHEAD_BYTES: usize = 128;

/// One brief cache: off (every read goes to the database) or bounded by weight and time.
#[derive(Clone)]
pub struct Brief<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `None` when caching is off (`--read-cache-ms 0`).
    cache: Option<Cache<K, V>>,
}

impl<K, V> Brief<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache keeping answers for `ttl` (off when `None`), at most `max_bytes` of them by
    /// `weigh`.
    pub fn new(ttl: Option<Duration>, max_bytes: u64, weigh: fn(&V) -> usize) -> Self {
        Self {
            cache: ttl.map(|ttl| {
                Cache::builder()
                    .max_capacity(max_bytes)
                    .weigher(move |_key: &K, value: &V| {
                        u32::try_from(weigh(value)).unwrap_or(u32::MAX)
                    })
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    /// Forgets every answer (a comment was deleted: no answer may show it again).
    pub fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    /// The answer kept for `key`, or the one `read` gives (then kept). Reads that miss together
    /// wait for one `read`. A failed read is logged, kept by no one, and an `internal` error.
    pub async fn get_or_read(
        &self,
        key: K,
        what: &str,
        read: impl Future<Output = Result<V, StoreError>>,
    ) -> Result<V, ApiError> {
        let answer: Result<V, Arc<StoreError>> = match &self.cache {
            Some(cache) => cache.try_get_with(key, read).await,
            None => read.await.map_err(Arc::new),
        };
        answer.map_err(|e| {
            log::error!("reading {what} failed: {e}");
            ApiError::internal()
        })
    }
}

/// A DPlayer answer, serialized, with the rows it holds (what a client is charged for it).
#[derive(Clone, Debug)]
pub struct DPlayerAnswer {
    /// The JSON body.
    pub body: Bytes,
    /// The comments in it.
    pub rows: usize,
}

/// The caches of the video service.
#[derive(Clone)]
pub struct ReadCache {
    /// Serialized DPlayer answers by video and `max`.
    pub dplayer: Brief<(ChannelId, usize), DPlayerAnswer>,
    /// The first page of each video's export, in id order.
    pub export_heads: Brief<ChannelId, Arc<[Danmaku]>>,
    /// Density answers by video, buckets and duration (its bits; `None` when not given).
    pub density: Brief<(ChannelId, usize, Option<u64>), Arc<VideoDensity>>,
}

impl ReadCache {
    /// Forgets every answer: a moderator deleted a comment, and no list or export may show it
    /// again (deletes are rare; the next reads fill the caches again).
    pub fn clear(&self) {
        self.dplayer.clear();
        self.export_heads.clear();
        self.density.clear();
    }

    /// Caches keeping answers for `ttl`, or none when `None`.
    pub fn new(ttl: Option<Duration>) -> Self {
        Self {
            dplayer: Brief::new(ttl, DPLAYER_CACHE_BYTES, |answer: &DPlayerAnswer| {
                answer.body.len()
            }),
            export_heads: Brief::new(ttl, EXPORT_CACHE_BYTES, |rows: &Arc<[Danmaku]>| {
                rows.iter()
                    .map(|row| row.text.len() + row.author.len() + ROW_OVERHEAD_BYTES)
                    .sum()
            }),
            density: Brief::new(ttl, DENSITY_CACHE_BYTES, |answer: &Arc<VideoDensity>| {
                answer.counts.len() * std::mem::size_of::<u64>() + ROW_OVERHEAD_BYTES
            }),
        }
    }
}
