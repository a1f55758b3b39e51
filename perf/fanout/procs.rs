//! The processes a run measures: watchcache, the floor, etcd's grpc-proxy (etcd itself is
//! `common::EtcdCluster`), their CPU time from /proc, and the file descriptor limit.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU seconds of a process, user and system.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.sys
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu { user: self.user - before.user, sys: self.sys - before.sys }
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime and stime of a process (every thread, living or gone), from /proc/<pid>/stat.
pub fn cpu(pid: Option<u32>) -> Cpu {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    let ticks = ticks_per_second();
    Cpu { user: field(11) / ticks, sys: field(12) / ticks }
}

/// CPU seconds the whole machine spent busy since boot (every core: user, nice, system, irq,
/// softirq), and those the hypervisor gave to other guests while this one wanted to run
/// (steal), from /proc/stat.
pub fn machine_busy() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else { return (0.0, 0.0) };
    let fields: Vec<f64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&index| fields.get(index)).sum();
    let steal = fields.get(7).copied().unwrap_or(0.0);
    (busy / ticks_per_second(), steal / ticks_per_second())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it); returns the new soft
/// limit and the hard limit.
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
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running; otherwise how it exited.
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
    }
}

/// Reads the first line of the child's stdout (its startup line), then keeps draining stdout.
fn startup_line(child: &mut Child, what: &str) -> Result<String, String> {
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|error| format!("{what}: reading its startup line: {error}"))?;
    if line.is_empty() {
        return Err(format!("{what} exited before its startup line: {:?}", child.wait()));
    }
    std::thread::spawn(move || for _ in stdout.lines() {});
    Ok(line.trim_end().to_owned())
}

/// The `host:port` after `http://` in a startup line.
fn address_in(line: &str) -> Result<SocketAddr, String> {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| format!("no address in startup line {line:?}"))
}

/// `watchcache serve --listen 127.0.0.1:0 --data-dir DIR [--etcd-endpoints URL]`; its address.
pub fn watchcache(
    binary: &Path,
    data_dir: &Path,
    etcd: Option<&str>,
) -> Result<(Process, SocketAddr), String> {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--log-level=warn");
    if let Some(etcd) = etcd {
        command.arg(format!("--etcd-endpoints={etcd}"));
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let line = startup_line(&mut child, "watchcache");
    let process = Process { child };
    let address = address_in(&line?)?;
    Ok((process, address))
}

/// The floor server: this binary again, with [`crate::floor::FLAG`]. Its watch address and its
/// control address.
pub fn floor(coalesce: bool) -> Result<(Process, SocketAddr, SocketAddr), String> {
    let binary = std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
    let mut child = Command::new(binary)
        .arg(crate::floor::FLAG)
        .arg(if coalesce { "coalesced" } else { "uncoalesced" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("cannot start the floor: {error}"))?;
    let line = startup_line(&mut child, "the floor");
    let process = Process { child };
    let line = line?;
    let watches = address_in(&line)?;
    let control = line
        .split(" control ")
        .nth(1)
        .and_then(|address| address.trim().parse().ok())
        .ok_or_else(|| format!("no control address in {line:?}"))?;
    Ok((process, watches, control))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `etcd grpc-proxy start` in front of `endpoint` (`http://host:port`); its client URL.
pub fn grpc_proxy(etcd: &Path, endpoint: &str, dir: &Path) -> Result<(Process, String), String> {
    let listen = format!("127.0.0.1:{}", free_port());
    let log_path = dir.join("grpc-proxy.log");
    let log = std::fs::File::create(&log_path).map_err(|error| error.to_string())?;
    let child = Command::new(etcd)
        .arg("grpc-proxy")
        .arg("start")
        .arg(format!("--endpoints={}", endpoint.trim_start_matches("http://")))
        .arg(format!("--listen-addr={listen}"))
        .arg(format!("--data-dir={}", dir.join("proxy").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start etcd grpc-proxy: {error}"))?;
    let mut process = Process { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.exited() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("etcd grpc-proxy exited with {status}: {log}"));
        }
        if std::net::TcpStream::connect(&listen).is_ok() {
            return Ok((process, format!("http://{listen}")));
        }
        if Instant::now() > deadline {
            return Err("etcd grpc-proxy did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The etcd binary on PATH, if any.
pub fn etcd_binary() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join("etcd")).find(|candidate| candidate.is_file())
}
