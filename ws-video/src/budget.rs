//! What the video service's reads and imports cost a client, on top of the comment budget every
//! service shares (`service_kit::ClientBudget`):
//!
//! - Reads spend the client's `reads` budget by the rows they **return**: each needs one token
//!   before the database (or the brief cache) is asked, and is charged its rows after
//!   (`service_kit::ClientRateLimiter::admit`): a DPlayer list, a window (HTTP or a WebSocket
//!   `range`), each page of an export ([`crate::archive::EXPORT_PAGE_ITEMS`] rows at most) as
//!   it streams.
//! - Bilibili imports ([`Imports`]) take one of a few permits per instance, one comment token,
//!   and then, once the file is read, the comments it would store from a budget of their own.
//!
//! A refusal is `rate_limited` with the wait in whole seconds (`Retry-After` over HTTP).

use std::sync::Arc;
use std::time::Duration;

use service_kit::{ClientRateLimiter, HttpError};
use shared_model::{ApiError, ErrorCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::VideoArgs;

/// What `n` rows cost in a budget.
pub fn rows(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What Bilibili imports may take on this instance.
#[derive(Clone, Debug)]
pub struct Imports {
    /// Most `<d>` entries one file may hold (`--import-max-entries`).
    pub max_entries: usize,
    /// How long a body may take to arrive (`--import-body-timeout-secs`).
    pub body_timeout: Duration,
    /// Imports in progress (`--max-concurrent-imports`): an import holds a permit from before
    /// its body is read until its last row is stored, so the memory and the writer time of
    /// imports are bounded whatever the number of clients.
    permits: Arc<Semaphore>,
    /// How many permits there are, for the message of a refusal.
    concurrency: usize,
    /// Comments each client may import (`--import-rows-per-sec`, `--import-rows-burst`).
    pub rows: ClientRateLimiter,
}

impl Imports {
    /// The limits the settings give.
    pub fn from_args(args: &VideoArgs) -> Self {
        let concurrency = args.max_concurrent_imports.get();
        Self {
            max_entries: usize::try_from(args.import_max_entries.get()).unwrap_or(usize::MAX),
            body_timeout: args.import_body_timeout(),
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            rows: ClientRateLimiter::new(
                "imported comments",
                args.import_rows_per_sec,
                args.import_rows_burst,
            ),
        }
    }

    /// A permit to import now, or `503 unavailable` with `Retry-After: 1` when every permit is
    /// taken. Refused at once rather than queued: a waiting import would hold its connection
    /// and, soon, its body.
    pub fn permit(&self) -> Result<OwnedSemaphorePermit, HttpError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| HttpError {
                error: ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{} imports are running, the most this server takes at once; try again in 1 s",
                        self.concurrency
                    ),
                ),
                retry_after_secs: Some(1),
            })
    }
}
