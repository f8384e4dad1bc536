//! A process's CPU time and memory from Linux's `/proc`: the server's (given its pid) and this
//! tool's own, to tell which side limited a run.

use std::time::Duration;

use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident memory now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// The most resident memory so far, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// Reads process `pid`, or this process when `None`. An error when it is gone or `/proc` is not
/// there (not Linux).
pub fn sample(pid: Option<u32>) -> std::io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| bad_data("stat"))?;
    let (rss_kib, peak_rss_kib) = parse_status_memory(&status).ok_or_else(|| bad_data("status"))?;
    Ok(ProcSample {
        cpu: ticks_to_duration(ticks),
        rss_kib,
        peak_rss_kib,
    })
}

/// CPU time so far of each thread of process `pid`: `(thread id, thread name, CPU)`. Threads
/// that end while being read are skipped.
pub fn threads(pid: u32) -> std::io::Result<Vec<(u32, String, Duration)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(entry.path().join("stat")),
            std::fs::read_to_string(entry.path().join("comm")),
        ) else {
            continue;
        };
        if let Some(ticks) = parse_stat_ticks(&stat) {
            out.push((tid, comm.trim().to_owned(), ticks_to_duration(ticks)));
        }
    }
    Ok(out)
}

/// The thread that used the most CPU between two [`threads`] readings: its name and CPU time.
pub fn busiest_thread(
    before: &[(u32, String, Duration)],
    after: &[(u32, String, Duration)],
) -> Option<(String, Duration)> {
    after
        .iter()
        .map(|(tid, name, cpu)| {
            let earlier = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(Duration::ZERO, |(_, _, c)| *c);
            (name.clone(), cpu.saturating_sub(earlier))
        })
        .max_by_key(|(_, cpu)| *cpu)
}

/// The whole machine's CPU counters (the `cpu` line of `/proc/stat`), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSample {
    /// Ticks spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All ticks, summed over every core.
    pub total: u64,
}

/// Reads the machine's CPU counters.
pub fn machine() -> std::io::Result<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine(&stat).ok_or_else(|| bad_data("stat"))
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`.
/// Guest time is already inside user time, so only the first eight fields are summed.
fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields[4];
    Some(MachineSample {
        busy: total - idle,
        total,
    })
}

/// The number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn bad_data(file: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unexpected /proc {file} format"),
    )
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// `utime + stime` (fields 14 and 15 of `/proc/PID/stat`), in clock ticks. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses, so fields are counted from
/// the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` and `VmHWM` of `/proc/PID/status`, in KiB.
fn parse_status_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// How the server, this tool and everything else used the machine over a window, for a report.
#[derive(Debug, Clone, Serialize)]
pub struct CpuVerdict {
    /// CPU seconds this tool used.
    pub client_cpu_secs: f64,
    /// Cores this tool kept busy on average.
    pub client_cores_busy: f64,
    /// Cores the machine has (this tool's runtime uses all of them).
    pub cores: usize,
    /// Cores the server kept busy on average, when its pid was known.
    pub server_cores_busy: Option<f64>,
    /// The server's busiest thread and the share of one core it used, when its pid was known.
    pub server_busiest_thread: Option<(String, f64)>,
    /// Cores the whole machine kept busy on average (every process, the kernel, steal).
    pub machine_cores_busy: Option<f64>,
    /// Cores busy with anything but this tool and the server: other work on the machine, which
    /// makes the figures noisy.
    pub other_cores_busy: Option<f64>,
    /// `client` when this tool's own CPU was near its core count (the figures then measure the
    /// client, not the server); `server-thread` when one server thread was near a full core
    /// (the server sets the pace); `machine` when the machine's cores were nearly all busy
    /// (client, server and anything else together); `none` otherwise.
    pub bottleneck: &'static str,
}

/// CPU use over a window, as measured; the input of [`CpuVerdict::judge`].
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// This tool's CPU time.
    pub client: Duration,
    /// The server's CPU time, when known.
    pub server: Option<Duration>,
    /// The server's busiest thread and its CPU time, when known.
    pub busiest: Option<(String, Duration)>,
    /// The machine's counters at the start and the end of the window, when readable.
    pub machine: Option<(MachineSample, MachineSample)>,
}

impl CpuVerdict {
    /// This tool busy above this share of its cores counts as client-bound; a server thread
    /// above this share of one core counts as saturated.
    pub const BOUND_SHARE: f64 = 0.85;
    /// The machine busy above this share of its cores counts as saturated.
    pub const MACHINE_BOUND_SHARE: f64 = 0.90;
    /// Other work above this many cores is worth a warning.
    pub const NOISE_CORES: f64 = 0.10;

    /// The verdict for a window of `wall` with CPU use `used`, on `cores` cores.
    pub fn judge(wall: Duration, used: CpuUse, cores: usize) -> Self {
        let wall = wall.as_secs_f64().max(1e-9);
        let cores_f = cores as f64;
        let client = used.client.as_secs_f64() / wall;
        let server = used.server.map(|cpu| cpu.as_secs_f64() / wall);
        let busiest = used
            .busiest
            .map(|(name, cpu)| (name, cpu.as_secs_f64() / wall));
        let machine = used.machine.and_then(|(a, b)| {
            let total = b.total.checked_sub(a.total).filter(|t| *t > 0)?;
            let busy = b.busy.saturating_sub(a.busy);
            Some(busy as f64 / total as f64 * cores_f)
        });
        let other = machine.map(|m| (m - client - server.unwrap_or(0.0)).max(0.0));
        let machine_or_sum = machine.unwrap_or(client + server.unwrap_or(0.0));
        let bottleneck = if client >= Self::BOUND_SHARE * cores_f {
            "client"
        } else if busiest
            .as_ref()
            .is_some_and(|(_, share)| *share >= Self::BOUND_SHARE)
        {
            "server-thread"
        } else if machine_or_sum >= Self::MACHINE_BOUND_SHARE * cores_f {
            "machine"
        } else {
            "none"
        };
        Self {
            client_cpu_secs: used.client.as_secs_f64(),
            client_cores_busy: client,
            cores,
            server_cores_busy: server,
            server_busiest_thread: busiest,
            machine_cores_busy: machine,
            other_cores_busy: other,
            bottleneck,
        }
    }

    /// A sentence for the human report.
    pub fn sentence(&self) -> String {
        let server = self
            .server_cores_busy
            .map(|s| format!(", server {s:.2}"))
            .unwrap_or_default();
        let thread = self
            .server_busiest_thread
            .as_ref()
            .map(|(name, share)| format!(" (busiest server thread {name:?}: {share:.2})"))
            .unwrap_or_default();
        let machine = self
            .machine_cores_busy
            .map(|m| format!(", whole machine {m:.2}"))
            .unwrap_or_default();
        let what = match self.bottleneck {
            "client" => {
                "CLIENT-BOUND: this tool used nearly all its cores, so the figures measure the \
                 client; run it on another machine or with fewer viewers"
            }
            "server-thread" => {
                "SERVER-BOUND: one server thread used nearly a whole core, so the server sets the \
                 pace (latency grows with load)"
            }
            "machine" => {
                "the machine's CPU was saturated (client, server and anything else together); \
                 the server's figures are a lower bound of what it can do alone"
            }
            _ => "neither side was CPU-bound",
        };
        let mut sentence = format!(
            "cores busy: client {:.2} of {}{server}{thread}{machine}; {what}",
            self.client_cores_busy, self.cores
        );
        if let Some(other) = self.other_cores_busy.filter(|o| *o >= Self::NOISE_CORES) {
            sentence.push_str(&format!(
                "; NOTE other work on the machine used {other:.2} cores, so the figures are noisy"
            ));
        }
        sentence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (ws stream (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_gives_rss_and_its_high_water_mark() {
        let status = "Name:\tws-stream\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t9\n";
        assert_eq!(parse_status_memory(status), Some((18432, 20480)));
        assert_eq!(parse_status_memory("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(None).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
        assert!(sample(Some(u32::MAX)).is_err());
    }

    fn used(client: u64, server: Option<u64>, busiest: Option<u64>) -> CpuUse {
        CpuUse {
            client: Duration::from_secs(client),
            server: server.map(Duration::from_secs),
            busiest: busiest.map(|s| ("hub".to_owned(), Duration::from_secs(s))),
            machine: None,
        }
    }

    #[test]
    fn verdict_names_the_client_when_it_used_its_cores() {
        let wall = Duration::from_secs(10);
        assert_eq!(
            CpuVerdict::judge(wall, used(19, Some(1), None), 2).bottleneck,
            "client"
        );
        let hub = CpuVerdict::judge(wall, used(5, Some(10), Some(9)), 2);
        assert_eq!(hub.bottleneck, "server-thread");
        assert!(
            hub.sentence().contains("\"hub\": 0.90"),
            "{}",
            hub.sentence()
        );
        assert_eq!(
            CpuVerdict::judge(wall, used(9, Some(10), None), 2).bottleneck,
            "machine"
        );
        let idle = CpuVerdict::judge(wall, used(1, None, None), 2);
        assert_eq!(idle.bottleneck, "none");
        assert!(idle.sentence().contains("client 0.10 of 2"));
    }

    #[test]
    fn other_work_on_the_machine_is_counted_and_flagged() {
        let wall = Duration::from_secs(10);
        // 2 cores over 10 s at 100 ticks/s: 2000 ticks, 1800 of them busy.
        let machine = (
            MachineSample { busy: 0, total: 0 },
            MachineSample {
                busy: 1800,
                total: 2000,
            },
        );
        let verdict = CpuVerdict::judge(
            wall,
            CpuUse {
                machine: Some(machine),
                ..used(5, Some(5), None)
            },
            2,
        );
        assert_eq!(verdict.bottleneck, "machine");
        assert!((verdict.other_cores_busy.unwrap() - 0.8).abs() < 1e-9);
        assert!(
            verdict.sentence().contains("other work"),
            "{}",
            verdict.sentence()
        );
    }

    #[test]
    fn proc_stat_cpu_line_gives_busy_and_total_ticks() {
        let stat = "cpu  100 5 50 800 20 0 10 15 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse_machine(stat),
            Some(MachineSample {
                busy: 180,
                total: 1000
            })
        );
        assert!(machine().unwrap().total > 0);
    }

    #[test]
    fn busiest_thread_is_found_by_its_cpu_in_the_window() {
        let secs = Duration::from_secs;
        let before = vec![(1, "main".into(), secs(50)), (2, "worker".into(), secs(1))];
        let after = vec![
            (1, "main".into(), secs(52)),
            (2, "worker".into(), secs(6)),
            (3, "new".into(), secs(1)),
        ];
        assert_eq!(
            busiest_thread(&before, &after),
            Some(("worker".into(), secs(5)))
        );
        let mine = threads(std::process::id()).unwrap();
        assert!(!mine.is_empty());
    }
}
