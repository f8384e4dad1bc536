//! How long a durable write takes on a disk: the floor under the latency of a server that
//! commits each comment before anyone sees it (ours), which a server that stores nothing (the
//! peers of `versus`) does not pay.
//!
//! A quiet room's comment is committed alone, and its commit ends in one flush of the disk's
//! cache (SQLite's WAL `fsync`, `synchronous=FULL`). On a virtual disk that flush takes from a
//! tenth of a millisecond to more than one, depending on the host, and it is the largest part of
//! the gap between ours and Bun in a quiet room. `versus` measures it here, beside ours'
//! database, so every table says what that floor was on the machine and day of the run.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::latency::LatencyRecorder;

/// Bytes written before each flush: three 4 KiB pages, what a lone comment's commit appends to
/// ws-stream's WAL (seen with `strace`: the page of the comments' table and one per index).
pub const WRITE_BYTES: usize = 3 * 4096;

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Flush {
    /// Bytes written before each flush ([`WRITE_BYTES`]).
    pub bytes: usize,
    /// Writes timed.
    pub samples: usize,
    /// The median time of a write and its flush, ms.
    pub p50_ms: f64,
    /// The 99th percentile (the slowest but one in a hundred), ms.
    pub p99_ms: f64,
}

/// Writes [`WRITE_BYTES`] to a new file in `dir` and flushes it (`fsync`), `samples` times
/// (at least one), `pause` apart so that each flush finds the disk idle, as a quiet room's
/// commit does; each write goes after the last, as a WAL's do. The file is removed afterwards.
pub fn measure(dir: &Path, samples: usize, pause: Duration) -> io::Result<Flush> {
    let samples = samples.max(1);
    let file = tempfile::tempfile_in(dir)?;
    let page = vec![0x5a_u8; WRITE_BYTES];
    let mut micros = Vec::with_capacity(samples);
    for n in 0..samples {
        if n > 0 {
            std::thread::sleep(pause);
        }
        let took = write_and_flush(&file, &page, (n * WRITE_BYTES) as u64)?;
        micros.push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }
    let recorder = LatencyRecorder::new();
    recorder.record_all(&micros);
    let percentiles = recorder.percentiles();
    Ok(Flush {
        bytes: WRITE_BYTES,
        samples,
        p50_ms: percentiles.p50_ms,
        p99_ms: percentiles.p99_ms,
    })
}

fn write_and_flush(file: &File, bytes: &[u8], offset: u64) -> io::Result<Duration> {
    let start = Instant::now();
    file.write_all_at(bytes, offset)?;
    file.sync_all()?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_file_is_written_flushed_timed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let flush = measure(dir.path(), 5, Duration::ZERO).unwrap();
        assert_eq!(flush.samples, 5);
        assert!(flush.p50_ms > 0.0, "{flush:?}");
        assert!(flush.p99_ms >= flush.p50_ms, "{flush:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_that_is_not_there_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(measure(&dir.path().join("missing"), 1, Duration::ZERO).is_err());
    }
}
