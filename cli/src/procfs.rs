//! A process's CPU time and memory and the machine's CPU counters, read from Linux's `/proc`
//! through the `procfs` crate: the server's (given its pid) and this tool's own, to tell which
//! side limited a run ([`CpuVerdict`]).
//!
//! This module is a thin adapter: it turns the crate's records into the few figures the reports
//! use (CPU time as a [`Duration`], memory in KiB, busy and total ticks of the machine).

use std::time::Duration;

use ::procfs::process::{Process, Stat, Status};
use ::procfs::{CpuTime, CurrentSI, KernelStats, ProcError, ProcResult};
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

impl ProcSample {
    /// The reading in a process's `stat` and `status`; `None` when `status` has no memory
    /// figures (a zombie's has none).
    fn from_records(stat: &Stat, status: &Status) -> Option<Self> {
        Some(Self {
            cpu: cpu_time(stat),
            rss_kib: status.vmrss?,
            peak_rss_kib: status.vmhwm?,
        })
    }
}

/// Reads process `pid`, or this process when `None`. An error when it is gone, is a zombie, or
/// `/proc` is not there (not Linux).
pub fn sample(pid: Option<u32>) -> ProcResult<ProcSample> {
    let process = match pid {
        Some(pid) => Process::new(pid_number(pid)?)?,
        None => Process::myself()?,
    };
    let (stat, status) = (process.stat()?, process.status()?);
    ProcSample::from_records(&stat, &status)
        .ok_or_else(|| ProcError::Other(format!("process {} has no memory figures", process.pid)))
}

/// Reads every process of `pids` and sums the readings: CPU time, resident memory, and the
/// peaks (each process's own peak, added up: an upper bound on the group's peak). An error when
/// `pids` is empty or any one of them cannot be read, so a group with a process gone reads as
/// gone.
pub fn sample_sum(pids: &[u32]) -> ProcResult<ProcSample> {
    if pids.is_empty() {
        return Err(ProcError::Other("no process to read".into()));
    }
    pids.iter().try_fold(
        ProcSample {
            cpu: Duration::ZERO,
            rss_kib: 0,
            peak_rss_kib: 0,
        },
        |sum, &pid| {
            let one = sample(Some(pid))?;
            Ok(ProcSample {
                cpu: sum.cpu + one.cpu,
                rss_kib: sum.rss_kib + one.rss_kib,
                peak_rss_kib: sum.peak_rss_kib + one.peak_rss_kib,
            })
        },
    )
}

/// One thread's CPU time so far, from a [`threads`] reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSample {
    /// The thread id.
    pub tid: i32,
    /// The thread's name (`comm`), e.g. a tokio worker's or the hub's.
    pub name: String,
    /// User plus system CPU time so far.
    pub cpu: Duration,
}

/// CPU time so far of each thread of process `pid`. Threads that end while being read are
/// skipped.
pub fn threads(pid: u32) -> ProcResult<Vec<ThreadSample>> {
    let process = Process::new(pid_number(pid)?)?;
    Ok(process
        .tasks()?
        .filter_map(|task| {
            let task = task.ok()?;
            let stat = task.stat().ok()?;
            Some(ThreadSample {
                tid: task.tid,
                cpu: cpu_time(&stat),
                name: stat.comm,
            })
        })
        .collect())
}

/// The thread that used the most CPU between two [`threads`] readings: its name and CPU time.
/// A thread missing from `before` (started since) counts all its CPU.
pub fn busiest_thread(
    before: &[ThreadSample],
    after: &[ThreadSample],
) -> Option<(String, Duration)> {
    after
        .iter()
        .map(|thread| {
            let earlier = before
                .iter()
                .find(|t| t.tid == thread.tid)
                .map_or(Duration::ZERO, |t| t.cpu);
            (thread.name.clone(), thread.cpu.saturating_sub(earlier))
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

impl From<&CpuTime> for MachineSample {
    /// Sums user, nice, system, idle, iowait, irq, softirq and steal: guest time is already
    /// inside user time, so it is not added again. Idle is idle plus iowait.
    fn from(cpu: &CpuTime) -> Self {
        let idle = cpu.idle + cpu.iowait.unwrap_or(0);
        let total = cpu.user
            + cpu.nice
            + cpu.system
            + idle
            + cpu.irq.unwrap_or(0)
            + cpu.softirq.unwrap_or(0)
            + cpu.steal.unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }
}

/// Reads the machine's CPU counters.
pub fn machine() -> ProcResult<MachineSample> {
    Ok(MachineSample::from(&KernelStats::current()?.total))
}

/// The number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pid as `/proc` numbers it; one out of range names no process.
fn pid_number(pid: u32) -> ProcResult<i32> {
    i32::try_from(pid).map_err(|_| ProcError::NotFound(None))
}

/// `utime + stime` of a process's or a thread's `stat`, as a duration.
fn cpu_time(stat: &Stat) -> Duration {
    let ticks = stat.utime + stat.stime;
    let per_second = ::procfs::ticks_per_second().max(1);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
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
    use ::procfs::{ExplicitSystemInfo, FromRead, FromReadSI};

    use super::*;

    /// This process's `stat` with its command name and its user and system ticks replaced.
    fn stat_with(name: &str, utime: u64, stime: u64) -> Stat {
        let real = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (pid, rest) = real.split_once(" (").unwrap();
        let after_name = &rest[rest.rfind(')').unwrap() + 1..];
        let mut fields: Vec<String> = after_name.split_whitespace().map(String::from).collect();
        // fields[0] is field 3 (state), so field N is fields[N - 3].
        fields[11] = utime.to_string();
        fields[12] = stime.to_string();
        let text = format!("{pid} ({name}) {}", fields.join(" "));
        Stat::from_read(text.as_bytes()).unwrap()
    }

    #[test]
    fn cpu_is_user_plus_system_time_whatever_the_command_name() {
        let stat = stat_with("ws stream (x)", 250, 75);
        assert_eq!(stat.comm, "ws stream (x)");
        let per_second = ::procfs::ticks_per_second() as f64;
        assert_eq!(cpu_time(&stat), Duration::from_secs_f64(325.0 / per_second));
    }

    #[test]
    fn status_gives_rss_and_its_high_water_mark_and_a_zombie_none() {
        let stat = stat_with("ws-stream", 0, 0);
        let real = std::fs::read_to_string("/proc/self/status").unwrap();
        let with_memory = real
            .lines()
            .map(|line| match line.split_once(':') {
                Some(("VmHWM", _)) => "VmHWM:\t   20480 kB".to_owned(),
                Some(("VmRSS", _)) => "VmRSS:\t   18432 kB".to_owned(),
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let status = Status::from_read(with_memory.as_bytes()).unwrap();
        let sample = ProcSample::from_records(&stat, &status).unwrap();
        assert_eq!((sample.rss_kib, sample.peak_rss_kib), (18432, 20480));
        // A zombie's status has no Vm lines.
        let zombie: String = real
            .lines()
            .filter(|line| !line.starts_with("Vm") && !line.starts_with("Rss"))
            .map(|line| format!("{line}\n"))
            .collect();
        let status = Status::from_read(zombie.as_bytes()).unwrap();
        assert_eq!(ProcSample::from_records(&stat, &status), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(None).unwrap();
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib);
        assert!(sample(Some(u32::MAX)).is_err());
        assert!(sample(Some(std::process::id())).is_ok());
    }

    #[test]
    fn a_group_of_processes_reads_as_the_sum_or_not_at_all() {
        // An idle child: its memory and CPU time stay put between readings (this test process's
        // own do not: other tests run beside it).
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = idle.id();
        // Let it finish starting (exec, page-ins), so its figures are settled.
        let mut once = sample(Some(pid)).unwrap();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(20));
            let again = sample(Some(pid)).unwrap();
            if again == once {
                break;
            }
            once = again;
        }
        let twice = sample_sum(&[pid, pid]).unwrap();
        let _ = idle.kill();
        let _ = idle.wait();
        assert_eq!(
            twice.peak_rss_kib,
            2 * once.peak_rss_kib,
            "{once:?} {twice:?}"
        );
        assert_eq!(twice.rss_kib, 2 * once.rss_kib, "{once:?} {twice:?}");
        assert_eq!(twice.cpu, 2 * once.cpu, "{once:?} {twice:?}");
        assert!(sample_sum(&[]).is_err());
        let me = std::process::id();
        assert!(
            sample_sum(&[me, u32::MAX]).is_err(),
            "one gone: the group reads as gone"
        );
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
        let stat = "cpu  100 5 50 800 20 0 10 15 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n\
                    ctxt 1\nbtime 1\nprocesses 1\n";
        let info = ExplicitSystemInfo {
            boot_time_secs: 1,
            ticks_per_second: 100,
            page_size: 4096,
            is_little_endian: true,
        };
        let stats = KernelStats::from_read(stat.as_bytes(), &info).unwrap();
        assert_eq!(
            MachineSample::from(&stats.total),
            MachineSample {
                busy: 180,
                total: 1000
            }
        );
        assert!(machine().unwrap().total > 0);
    }

    #[test]
    fn busiest_thread_is_found_by_its_cpu_in_the_window() {
        let thread = |tid, name: &str, secs| ThreadSample {
            tid,
            name: name.to_owned(),
            cpu: Duration::from_secs(secs),
        };
        let before = vec![thread(1, "main", 50), thread(2, "worker", 1)];
        let after = vec![
            thread(1, "main", 52),
            thread(2, "worker", 6),
            thread(3, "new", 1),
        ];
        assert_eq!(
            busiest_thread(&before, &after),
            Some(("worker".into(), Duration::from_secs(5)))
        );
        let mine = threads(std::process::id()).unwrap();
        assert!(!mine.is_empty());
    }
}
