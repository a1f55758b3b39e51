//! Processes a scenario starts (watchcache, etcd), killed on drop; CPU time and RSS from /proc;
//! the file-descriptor limit.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (every thread, living or gone), in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// utime + stime of this process, in seconds.
pub fn own_cpu_seconds() -> f64 {
    stat_cpu("/proc/self/stat")
}

fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks_per_second()
}

/// CPU seconds the whole machine spent busy since boot (every core: user, nice, system, irq,
/// softirq), from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else { return 0.0 };
    let fields: Vec<f64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    [0, 1, 2, 5, 6].iter().filter_map(|&index| fields.get(index)).sum::<f64>() / ticks_per_second()
}

/// Resident set size of a process in bytes (VmRSS of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it); returns the soft
/// limit now in force and the hard limit.
pub fn raise_nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// A child process, killed on drop.
pub struct Process {
    child: Child,
    /// Removed on drop (after the kill).
    dir: Option<tempfile::TempDir>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, if it did.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.dir.take());
    }
}

/// The watchcache binary: `WATCHCACHE_BIN`, or the one cargo built with the benches.
pub fn watchcache_binary() -> PathBuf {
    std::env::var_os("WATCHCACHE_BIN")
        .filter(|bin| !bin.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_watchcache")))
}

/// `watchcache serve --listen 127.0.0.1:0 --log-level=warn ARGS`, with a data directory of its
/// own unless ARGS say `--in-memory` or `--etcd-endpoints`; the process and its address.
pub fn watchcache(args: &[String]) -> Result<(Process, SocketAddr), String> {
    let binary = watchcache_binary();
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let mut command = Command::new(&binary);
    command.arg("serve").arg("--listen=127.0.0.1:0").arg("--log-level=warn").args(args);
    if !args.iter().any(|arg| arg == "--in-memory" || arg.starts_with("--etcd-endpoints")) {
        command.arg(format!("--data-dir={}", dir.path().join("data").display()));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    let read = stdout.read_line(&mut line);
    let mut process = Process { child, dir: Some(dir) };
    read.map_err(|error| format!("watchcache: reading its startup line: {error}"))?;
    if line.is_empty() {
        return Err(format!("watchcache exited before its startup line: {:?}", process.exited()));
    }
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| format!("no address in watchcache's startup line {line:?}"))?;
    Ok((process, address))
}

/// The etcd binary on PATH, if any.
pub fn etcd_binary() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join("etcd")).find(|candidate| candidate.is_file())
}

/// What to say when etcd is missing.
pub const NO_ETCD: &str = "etcd is not installed (Debian: apt-get install etcd-server)";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-member etcd on loopback with a data directory of its own and an 8 GiB backend quota
/// (room for 100,000 × 10 KiB); the process and its client URL.
pub fn etcd() -> Result<(Process, String), String> {
    let binary = etcd_binary().ok_or(NO_ETCD)?;
    start_etcd(&binary)
}

fn start_etcd(binary: &Path) -> Result<(Process, String), String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let log_path = dir.path().join("etcd.log");
    let log = std::fs::File::create(&log_path).map_err(|error| error.to_string())?;
    let child = Command::new(binary)
        .arg("--name=perf")
        .arg(format!("--data-dir={}", dir.path().join("member").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=perf={peer}"))
        .arg("--initial-cluster-state=new")
        .arg("--max-request-bytes=2097152")
        .arg("--quota-backend-bytes=8589934592")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start etcd: {error}"))?;
    let mut process = Process { child, dir: Some(dir) };
    let address = client.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.exited() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("etcd exited with {status}: {log}"));
        }
        if std::net::TcpStream::connect(&address).is_ok() {
            return Ok((process, client));
        }
        if Instant::now() > deadline {
            return Err("etcd did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An etcd client able to receive a range of 100,000 × 10 KiB.
pub async fn etcd_client(url: &str) -> Result<etcd_client::KvClient, String> {
    let client = etcd_client::Client::connect([url], None)
        .await
        .map_err(|error| format!("etcd-client connect {url}: {error}"))?;
    Ok(client.kv_client().max_decoding_message_size(2 << 30).max_encoding_message_size(16 << 20))
}
