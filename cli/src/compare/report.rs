//! A comparison's results: one row per transport, as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::bench::report::human_bytes;
use crate::latency::{Percentiles, format_ms};
use crate::procfs::CpuVerdict;

/// Everything a comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// Comments per second in the stream.
    pub rate_per_sec: f64,
    /// Seconds of the stream.
    pub duration_secs: f64,
    /// Seconds of receiving after the stream (so slow pollers catch up).
    pub linger_secs: f64,
    /// Viewers per transport.
    pub viewers: usize,
    /// The room, on the HTTP service and the live service.
    pub room: String,
    /// The HTTP service's address.
    pub http: String,
    /// The live service's address.
    pub live: String,
    /// Comments the HTTP room stored.
    pub http_stored: u64,
    /// Comments the live room acknowledged.
    pub live_stored: u64,
    /// How far behind the schedule the latest post left, ms.
    pub max_send_lag_ms: f64,
    /// One row per transport.
    pub rows: Vec<RowReport>,
    /// Where the chart went.
    pub chart: String,
    /// The senders' failures.
    pub sender_errors: BTreeMap<String, u64>,
    /// Who used the CPU.
    pub cpu: CpuVerdict,
}

/// One transport's figures. Bytes are counted at the viewers' sockets from the moment the stream
/// started (setup — the first cursor request, the WebSocket upgrade — is not included).
#[derive(Debug, Clone, Serialize)]
pub struct RowReport {
    /// `short poll 10 s`, `long poll (wait 25 s)`, `WebSocket`...
    pub transport: String,
    /// Viewers.
    pub viewers: usize,
    /// HTTP requests (or WebSocket upgrades) in the window.
    pub requests: u64,
    /// TCP connections opened in the window.
    pub connections: u64,
    /// Bytes the viewers sent.
    pub bytes_up: u64,
    /// Bytes the viewers received.
    pub bytes_down: u64,
    /// Stored comments times viewers.
    pub expected: u64,
    /// First deliveries of a stored comment.
    pub delivered: u64,
    /// Expected deliveries that never came.
    pub lost: u64,
    /// Deliveries of a comment the viewer already had.
    pub repeated: u64,
    /// (up + down) / delivered; `None` when nothing was delivered.
    pub bytes_per_comment: Option<f64>,
    /// Delivery latency (receive time minus the time the comment was due).
    pub latency: Percentiles,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

impl CompareReport {
    /// The row for a transport whose label starts with `prefix`.
    pub fn row(&self, prefix: &str) -> Option<&RowReport> {
        self.rows.iter().find(|r| r.transport.starts_with(prefix))
    }

    /// The table and notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "compare: {} comments/s for {} s to {} viewers per transport (room {}, +{} s to catch up)",
            self.rate_per_sec, self.duration_secs, self.viewers, self.room, self.linger_secs
        );
        let _ = writeln!(
            out,
            "stored: {} by the HTTP service ({}), {} by the live service ({}); max send lag {} ms",
            self.http_stored,
            self.http,
            self.live_stored,
            self.live,
            format_ms(self.max_send_lag_ms)
        );
        let _ = writeln!(
            out,
            "\n{:<26} {:>8} {:>6} {:>11} {:>11} {:>15} {:>6} {:>8} {:>10} {:>9} {:>9}",
            "transport",
            "requests",
            "conns",
            "bytes up",
            "bytes down",
            "delivered",
            "lost",
            "repeated",
            "B/comment",
            "p50 ms",
            "p99 ms"
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "{:<26} {:>8} {:>6} {:>11} {:>11} {:>15} {:>6} {:>8} {:>10} {:>9} {:>9}",
                row.transport,
                row.requests,
                row.connections,
                human_bytes(row.bytes_up),
                human_bytes(row.bytes_down),
                format!("{}/{}", row.delivered, row.expected),
                row.lost,
                row.repeated,
                row.bytes_per_comment
                    .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
                format_ms(row.latency.p50_ms),
                format_ms(row.latency.p99_ms),
            );
        }
        let _ = writeln!(
            out,
            "\nBytes are counted at the viewers' sockets (HTTP headers and WebSocket frames \
             included, TCP/IP headers not), from the start of the stream."
        );
        let _ = writeln!(out, "chart: {}", self.chart);
        let _ = writeln!(out, "cpu: {}", self.cpu.sentence());
        for row in self.rows.iter().filter(|r| !r.errors.is_empty()) {
            let _ = writeln!(out, "errors ({}): {:?}", row.transport, row.errors);
        }
        if !self.sender_errors.is_empty() {
            let _ = writeln!(out, "sender errors: {:?}", self.sender_errors);
        }
        out
    }
}
