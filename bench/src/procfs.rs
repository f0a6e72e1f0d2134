//! What the suite reads about a server from `/proc`: its CPU time, its
//! memory, its process tree, and whether a port is listening. Reading is all
//! it does: no signal, no ptrace, no connection.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use crate::line::{Line, Tags};

/// `clock_t` values in `/proc/PID/stat` count USER_HZ ticks, which Linux
/// fixes at 100 per second on every architecture (proc(5)).
const TICK_NS: u64 = 10_000_000;

/// A server's CPU time so far, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// The daemon process's own threads: the sum of the first field of each
    /// live thread's `schedstat` (exact), or its `utime + stime` (10 ms
    /// ticks) where schedstat is missing.
    pub own_ns: u64,
    /// The daemon and all its descendants: the served programs, and for a
    /// forking server its per-connection copies. From the server's own
    /// cgroup when it has one (exact, and it counts children not yet
    /// reaped); otherwise own plus `cutime + cstime`, which Linux keeps in
    /// 10 ms ticks and which loses much of short-lived children's time.
    pub tree_ns: u64,
}

impl Cpu {
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            own_ns: self.own_ns.saturating_sub(earlier.own_ns),
            tree_ns: self.tree_ns.saturating_sub(earlier.tree_ns),
        }
    }
}

/// What to read a server's CPU time from.
#[derive(Debug, Clone, clap::Args)]
pub struct CpuSource {
    /// The daemon process (for a server that is one process per port, the
    /// one serving this port).
    #[arg(long)]
    pub pid: Option<u32>,
    /// The cgroup the server was started in (a cgroup v2 directory with
    /// `cpu.stat`, or a v1 cpuacct one with `cpuacct.usage`), for the CPU
    /// time of its whole process tree.
    #[arg(long)]
    pub cgroup: Option<std::path::PathBuf>,
}

impl CpuSource {
    /// A sample, or `None` without a pid.
    pub fn sample(&self) -> io::Result<Option<Cpu>> {
        let Some(pid) = self.pid else {
            return Ok(None);
        };
        let fields = stat_fields(pid)?;
        let ticks = |a, b| -> io::Result<u64> {
            Ok((stat_u64(&fields, a)? + stat_u64(&fields, b)?) * TICK_NS)
        };
        let own_ns = match schedstat_ns(pid) {
            Some(ns) => ns,
            None => ticks(14, 15)?,
        };
        let tree_ns = match &self.cgroup {
            Some(dir) => cgroup_ns(dir)?,
            None => own_ns + ticks(16, 17)?,
        };
        Ok(Some(Cpu { own_ns, tree_ns }))
    }
}

/// The CPU time of every task that was ever in cgroup `dir`.
fn cgroup_ns(dir: &std::path::Path) -> io::Result<u64> {
    let v2 = dir.join("cpu.stat");
    if let Ok(text) = fs::read_to_string(&v2) {
        let usec = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::other(format!("{}: no usage_usec", v2.display())))?;
        return Ok(usec * 1000);
    }
    let v1 = dir.join("cpuacct.usage");
    fs::read_to_string(&v1)?
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{}: not a number", v1.display())))
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): index 0 is field 3, `state`.
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no command name")))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`, from field 3 on.
fn stat_u64(fields: &[String], n: usize) -> io::Result<u64> {
    fields
        .get(n - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/PID/stat: no field {n}")))
}

/// The sum of the on-CPU time of `pid`'s live threads, in nanoseconds.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The calling thread's own CPU time, in nanoseconds (the client's cost).
pub fn self_thread_ns() -> u64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(0)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`...).
pub fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    kib_field(&text, key).ok_or_else(|| io::Error::other(format!("/proc/{pid}/status: no {key}")))
}

/// The proportional set size of `pid` (`/proc/PID/smaps_rollup`), in KiB:
/// its private pages plus its share of the pages it shares, so that summing
/// it over many processes counts each page once.
pub fn pss_kib(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    kib_field(&text, "Pss")
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/smaps_rollup: no Pss")))
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The short command name (`comm`) of `pid`.
pub fn comm(pid: u32) -> io::Result<String> {
    Ok(fs::read_to_string(format!("/proc/{pid}/comm"))?
        .trim_end()
        .to_owned())
}

/// Every live descendant of `pid` (children, grandchildren...).
pub fn descendants(pid: u32) -> io::Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        if let Ok(fields) = stat_fields(child) {
            if let Ok(parent) = stat_u64(&fields, 4) {
                children.entry(parent as u32).or_default().push(child);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            found.extend(kids);
            queue.extend(kids);
        }
    }
    Ok(found)
}

/// The processes of a server's tree, sorted: those in its cgroup when it
/// has one (which counts what left the tree, as a program's forked child
/// whose parent exited), else `pid` and its live descendants.
pub fn tree_pids(pid: u32, cgroup: Option<&std::path::Path>) -> io::Result<Vec<u32>> {
    let mut pids = match cgroup {
        Some(dir) => {
            let procs = dir.join("cgroup.procs");
            fs::read_to_string(&procs)
                .map_err(|e| io::Error::other(format!("{}: {e}", procs.display())))?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        }
        None => {
            let mut pids = descendants(pid)?;
            pids.push(pid);
            pids
        }
    };
    pids.sort_unstable();
    Ok(pids)
}

/// Whether `pid` is still running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_ok_and(|f| f.first().is_some_and(|state| state != "Z" && state != "X"))
}

/// A server's memory: the daemon's own RSS, and the PSS of the daemon and
/// every process of its tree that is not a served program (for a forking
/// server that also counts its per-connection copies).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerMemory {
    pub daemon_rss_kib: u64,
    pub server_pss_kib: u64,
    /// Processes in the tree that are not served programs.
    pub server_processes: usize,
    /// Served programs in the tree.
    pub programs: usize,
}

/// Measures `pid`'s memory; a descendant whose `comm` is in `programs` is a
/// served program and not counted as the server's.
pub fn server_memory(pid: u32, programs: &[String]) -> io::Result<ServerMemory> {
    let mut memory = ServerMemory {
        daemon_rss_kib: status_kib(pid, "VmRSS")?,
        server_pss_kib: pss_kib(pid)?,
        server_processes: 1,
        programs: 0,
    };
    for p in descendants(pid)? {
        let Ok(name) = comm(p) else { continue };
        if programs.contains(&name) {
            memory.programs += 1;
        } else if let Ok(pss) = pss_kib(p) {
            memory.server_pss_kib += pss;
            memory.server_processes += 1;
        }
    }
    Ok(memory)
}

#[derive(Debug, clap::Args)]
pub struct MemArgs {
    /// A daemon process; repeat for a server that is several processes (one
    /// per port). Figures are summed.
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    #[command(flatten)]
    tags: Tags,
}

/// Prints the summed RSS and PSS of the given processes.
pub fn mem(args: &MemArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (mut rss, mut pss) = (0, 0);
    for &pid in &args.pids {
        rss += status_kib(pid, "VmRSS")?;
        pss += pss_kib(pid)?;
    }
    Line::new(&args.tags)
        .field("processes", args.pids.len())
        .field("rss_kib", rss)
        .field("pss_kib", pss)
        .print();
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The port (any local address, IPv4 or IPv6).
    #[arg(long)]
    port: u16,
    /// A UDP port: wait until a socket is bound to it.
    #[arg(long)]
    udp: bool,
    /// Give up as soon as this process has exited (the server that should
    /// listen failed to start).
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    timeout: Duration,
}

pub fn wait_listen(args: &WaitArgs) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + args.timeout;
    loop {
        let ready = if args.udp {
            is_bound_udp(args.port)?
        } else {
            is_listening(args.port)?
        };
        if ready {
            return Ok(());
        }
        if let Some(pid) = args.pid.filter(|&pid| !alive(pid)) {
            return Err(format!("process {pid} exited before port {} was ready", args.port).into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing listens on port {} after {:?}",
                args.port, args.timeout
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a socket in state LISTEN (0A) has local port `port`, per
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn is_listening(port: u16) -> io::Result<bool> {
    has_socket(&["/proc/net/tcp", "/proc/net/tcp6"], port, "0A")
}

/// Whether an unconnected UDP socket (state 07) is bound to local port
/// `port`, per `/proc/net/udp` and `/proc/net/udp6`.
pub fn is_bound_udp(port: u16) -> io::Result<bool> {
    has_socket(&["/proc/net/udp", "/proc/net/udp6"], port, "07")
}

/// Whether one of the socket tables lists local port `port` in `wanted_state`.
fn has_socket(tables: &[&str], port: u16, wanted_state: &str) -> io::Result<bool> {
    let wanted = format!(":{port:04X}");
    for &table in tables {
        let text = match fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let found = text.lines().skip(1).any(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            state == wanted_state && local.ends_with(&wanted)
        });
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process() {
        let pid = std::process::id();
        let source = CpuSource {
            pid: Some(pid),
            cgroup: None,
        };
        let cpu = source.sample().expect("own stat").expect("a pid");
        assert!(cpu.own_ns > 0 && cpu.tree_ns >= cpu.own_ns);
        assert!(status_kib(pid, "VmRSS").expect("own status") > 0);
        assert!(pss_kib(pid).expect("own smaps_rollup") > 0);
        assert!(self_thread_ns() > 0);
    }

    #[test]
    fn kib_fields() {
        let text = "VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(text, "VmRSS"), Some(1024));
        assert_eq!(kib_field(text, "Vm"), None);
    }

    #[test]
    fn listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(is_listening(port).expect("read /proc/net"));
        drop(listener);
        assert!(!is_listening(port).expect("read /proc/net"));
    }

    #[test]
    fn bound_udp_port() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        assert!(is_bound_udp(port).expect("read /proc/net"));
        drop(socket);
        assert!(!is_bound_udp(port).expect("read /proc/net"));
    }

    #[test]
    fn own_tree() {
        let pid = std::process::id();
        assert!(alive(pid));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let child_pid = child.id();
        let tree = tree_pids(pid, None).expect("read /proc");
        assert!(tree.contains(&pid) && tree.contains(&child_pid), "{tree:?}");
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert!(!alive(child_pid));
    }
}
