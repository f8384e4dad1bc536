//! A bench's results: the JSON shape (`--json`) and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::latency::{Percentiles, format_ms};
use crate::procfs::CpuVerdict;

/// Everything a bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `live room bench at 127.0.0.1:8083`.
    pub target: String,
    /// Viewers asked for.
    pub viewers: usize,
    /// Senders asked for.
    pub senders: usize,
    /// Comments per second asked for, all senders together.
    pub rate_per_sec: f64,
    /// Seconds of sending asked for.
    pub duration_secs: f64,
    /// Seconds over which viewers connected.
    pub ramp_secs: f64,
    /// Viewers that connected and were greeted.
    pub viewers_connected: u64,
    /// Senders that connected and were greeted.
    pub senders_connected: u64,
    /// `send` frames written.
    pub sent: u64,
    /// Of those, acknowledged by the server (stored).
    pub acked: u64,
    /// Acknowledged comments times the viewers connected when sending began.
    pub expected_deliveries: u64,
    /// First deliveries to those viewers.
    pub received: u64,
    /// Expected deliveries that had not come by the end of the drain.
    pub lost: u64,
    /// Deliveries of a comment a viewer already had.
    pub duplicated: u64,
    /// First deliveries per second over the measured window.
    pub deliveries_per_sec: f64,
    /// Seconds from the first scheduled send to the end of the drain.
    pub window_secs: f64,
    /// Delivery latency: receive time minus the time the comment was due to be sent.
    pub latency: Percentiles,
    /// How far behind the schedule the latest message left, ms.
    pub max_send_lag_ms: f64,
    /// Bytes at the bench's sockets, both ways, over the whole run.
    pub client_bytes_down: u64,
    /// Bytes sent by the bench's sockets.
    pub client_bytes_up: u64,
    /// This tool's own peak resident memory, KiB (all its connections).
    pub client_peak_rss_kib: Option<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Whether the run stopped early because every connection was gone.
    pub stopped_early: bool,
    /// The burst of late joiners, when `--burst` asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<BurstReport>,
    /// The server's CPU and memory, when its pid was known (with several pids, their sums).
    pub server: Option<ServerUsage>,
    /// Who used the CPU.
    pub cpu: CpuVerdict,
}

/// The server's use of the machine during a bench. With several processes (instances of one
/// service), every figure is the sum over them.
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// Its process id (the first of [`ServerUsage::pids`]).
    pub pid: u32,
    /// Every process measured, in the order given.
    pub pids: Vec<u32>,
    /// CPU seconds over the measured window (sending and drain); unknown when it exited.
    pub cpu_secs: Option<f64>,
    /// CPU microseconds per first delivery.
    pub cpu_micros_per_delivery: Option<f64>,
    /// CPU seconds spent while the viewers connected.
    pub connect_cpu_secs: Option<f64>,
    /// Resident memory before the bench connected anything, KiB.
    pub rss_before_kib: Option<u64>,
    /// Resident memory once every connection was open, KiB.
    pub rss_connected_kib: Option<u64>,
    /// The most resident memory the process ever had, KiB (`VmHWM`; with several processes, the
    /// sum of each one's peak).
    pub peak_rss_kib: Option<u64>,
    /// Memory added per open connection, KiB: (connected − before) / connections.
    pub rss_per_connection_kib: Option<f64>,
    /// Whether the process (any one of them) was gone by the end of the run.
    pub exited: bool,
}

/// What a burst of viewers joining a busy room measured (`--burst`).
#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    /// Viewers asked to join.
    pub viewers: usize,
    /// Seconds after message 0 was due when the first joined.
    pub at_secs: f64,
    /// Seconds over which they connected.
    pub over_secs: f64,
    /// Joiners that were welcomed.
    pub joined: u64,
    /// Joiners whose welcome held the room's history (at least one comment).
    pub with_history: u64,
    /// Welcomes per second: joined over the time from the first attempt to the last welcome.
    pub joins_per_sec: f64,
    /// From a joiner's attempt (TCP connect, upgrade, join) to its welcome.
    pub welcome_wait: Percentiles,
    /// Delivery latency of the viewers already there, for the comments due from the first
    /// join to a second after the last.
    pub latency_during: Percentiles,
}

impl BenchReport {
    /// Whether the run was clean: everyone connected, nothing lost or repeated, no errors (a
    /// burst's viewers all welcomed, with history).
    pub fn clean(&self) -> bool {
        self.burst
            .as_ref()
            .is_none_or(|b| b.joined == b.viewers as u64 && b.with_history == b.joined)
            && self.lost == 0
            && self.duplicated == 0
            && self.errors.is_empty()
            && self.viewers_connected == self.viewers as u64
            && self.senders_connected == self.senders as u64
            && self.acked == self.sent
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let l = &self.latency;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "bench: {} — viewers {}, senders {}, {} comments/s for {} s (ramp {} s)",
            self.target,
            self.viewers,
            self.senders,
            self.rate_per_sec,
            self.duration_secs,
            self.ramp_secs
        );
        let _ = writeln!(
            out,
            "  connected     {}/{} viewers, {}/{} senders",
            self.viewers_connected, self.viewers, self.senders_connected, self.senders
        );
        let _ = writeln!(
            out,
            "  sent          {} (acked {}), max send lag {} ms",
            self.sent,
            self.acked,
            format_ms(self.max_send_lag_ms)
        );
        let _ = writeln!(
            out,
            "  deliveries    expected {}, received {}, lost {}, duplicated {}",
            self.expected_deliveries, self.received, self.lost, self.duplicated
        );
        let _ = writeln!(
            out,
            "  throughput    {:.0} deliveries/s over {:.2} s{}",
            self.deliveries_per_sec,
            self.window_secs,
            if self.stopped_early {
                " (stopped early: every connection was gone)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  latency ms    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
            format_ms(l.p50_ms),
            format_ms(l.p90_ms),
            format_ms(l.p99_ms),
            format_ms(l.p999_ms),
            format_ms(l.max_ms),
            l.count
        );
        let _ = writeln!(
            out,
            "  client        {} down, {} up, peak RSS {}",
            human_bytes(self.client_bytes_down),
            human_bytes(self.client_bytes_up),
            self.client_peak_rss_kib
                .map_or_else(|| "unknown".to_owned(), |kib| human_bytes(kib * 1024))
        );
        if let Some(burst) = &self.burst {
            let (w, d) = (&burst.welcome_wait, &burst.latency_during);
            let _ = writeln!(
                out,
                "  burst         {}/{} joined over {} s from {} s in ({:.0} welcomes/s), {} with history",
                burst.joined,
                burst.viewers,
                burst.over_secs,
                burst.at_secs,
                burst.joins_per_sec,
                burst.with_history
            );
            let _ = writeln!(
                out,
                "    welcome ms  p50 {}  p90 {}  p99 {}  max {}",
                format_ms(w.p50_ms),
                format_ms(w.p90_ms),
                format_ms(w.p99_ms),
                format_ms(w.max_ms)
            );
            let _ = writeln!(
                out,
                "    latency ms  p50 {}  p90 {}  p99 {}  max {}  (viewers already there, comments sent meanwhile, n = {})",
                format_ms(d.p50_ms),
                format_ms(d.p90_ms),
                format_ms(d.p99_ms),
                format_ms(d.max_ms),
                d.count
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(out, "  server        {}", server.render());
        }
        let _ = writeln!(out, "  cpu           {}", self.cpu.sentence());
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors        none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(what, n)| format!("{what}: {n}"))
                .collect();
            let _ = writeln!(out, "  errors        {}", list.join(", "));
        }
        out
    }
}

impl ServerUsage {
    fn render(&self) -> String {
        let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
        let mut parts = vec![match pids.as_slice() {
            [_, _, ..] => format!("pids {} (summed)", pids.join(", ")),
            _ => format!("pid {}", self.pid),
        }];
        if let Some(cpu) = self.cpu_secs {
            parts.push(format!("CPU {cpu:.2} s in the window"));
        }
        if let Some(per) = self.cpu_micros_per_delivery {
            parts.push(format!("{per:.1} µs per delivery"));
        }
        if let Some(kib) = self.rss_connected_kib {
            parts.push(format!("RSS {} connected", human_bytes(kib * 1024)));
        }
        if let Some(per) = self.rss_per_connection_kib {
            parts.push(format!("{per:.1} KiB per connection"));
        }
        if let Some(kib) = self.peak_rss_kib {
            parts.push(format!("peak {}", human_bytes(kib * 1024)));
        }
        if self.exited {
            parts.push("EXITED during the run".into());
        }
        parts.join(", ")
    }
}

/// `532 B`, `12.4 KiB`, `3.10 MiB`, `1.25 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.2} MiB", b / KIB / KIB)
    } else {
        format!("{:.2} GiB", b / KIB / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(532), "532 B");
        assert_eq!(human_bytes(12_700), "12.4 KiB");
        assert_eq!(human_bytes(3_250_586), "3.10 MiB");
    }
}
