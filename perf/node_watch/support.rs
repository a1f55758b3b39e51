//! What `node_watch` and `relist_storm` share: an HTTP/1.1 client (hyper) for requests and
//! watches, starting watchcache and etcd as restartable processes, /proc readings beyond
//! `fanout/procs.rs` (peak RSS), etcd's request counters, percentiles and SVG charts (plotters).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

/// A number from the environment, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().replace('_', "").parse().map_err(|_| format!("{name}={value:?} is not a number"))
        }
        _ => Ok(default),
    }
}

/// A comma-separated list from the environment, or `default`.
pub fn env_list(name: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(name) {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
        _ => default.iter().map(|item| (*item).to_owned()).collect(),
    }
}

/// The watchcache binary: `WATCHCACHE_BIN`, or the one cargo built.
pub fn watchcache_binary() -> PathBuf {
    std::env::var_os("WATCHCACHE_BIN")
        .filter(|bin| !bin.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_watchcache")))
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, killed (SIGKILL) on drop.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would; waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

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

/// `watchcache serve --listen 127.0.0.1:PORT` with `args` and `envs`; waits for its startup line.
pub fn start_watchcache(
    binary: &Path,
    port: u16,
    args: &[String],
    envs: &[(&str, &str)],
) -> Result<(Process, SocketAddr), String> {
    use std::io::{BufRead, BufReader};
    let mut command = Command::new(binary);
    command.arg("serve").arg(format!("--listen=127.0.0.1:{port}")).arg("--log-level=warn").args(args);
    for (name, value) in envs {
        command.env(name, value);
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
    let mut process = Process { child };
    if read.is_err() || line.is_empty() {
        return Err(format!("watchcache exited before its startup line: {:?}", process.exited()));
    }
    std::thread::spawn(move || for _ in stdout.lines() {});
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| format!("no address in startup line {line:?}"))?;
    Ok((process, address))
}

/// One etcd member on fixed ports and a data directory that outlive its process, so that it can
/// be killed and started again.
pub struct Etcd {
    binary: PathBuf,
    dir: PathBuf,
    pub client_url: String,
    peer_url: String,
    pub process: Option<Process>,
}

impl Etcd {
    pub fn start(binary: &Path, dir: &Path) -> Result<Etcd, String> {
        let mut etcd = Etcd {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            process: None,
        };
        etcd.restart()?;
        Ok(etcd)
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::pid)
    }

    /// Starts the member (again) and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| error.to_string())?;
        let child = Command::new(&self.binary)
            .arg("--name=member0")
            .arg(format!("--data-dir={}", self.dir.join("member0").display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=member0={}", self.peer_url))
            .arg("--initial-cluster-state=new")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start etcd: {error}"))?;
        let mut process = Process { child };
        let address = self.client_url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            if let Some(status) = process.exited() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("etcd exited with {status}: {log}"));
            }
            if Instant::now() > deadline {
                return Err("etcd did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

/// Peak resident set (VmHWM) of a process, bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One HTTP/1.1 connection (hyper's client).
pub struct Http {
    address: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A response: status and body.
pub type Reply = (u16, Bytes);

impl Http {
    pub async fn connect(address: SocketAddr) -> Result<Http, String> {
        Ok(Http { address, sender: open(address).await? })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        if self.sender.ready().await.is_err() {
            self.sender = open(self.address).await?;
            self.sender.ready().await.map_err(|error| format!("connection: {error}"))?;
        }
        let content_type =
            if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "watchcache")
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        let response =
            self.sender.send_request(request).await.map_err(|error| format!("{method} {path}: {error}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("{method} {path}: reading the body: {error}"))?
            .to_bytes();
        Ok((status, body))
    }
}

async fn open(address: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(address).await.map_err(|error| format!("connect {address}: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// An open watch: its body, split into lines.
pub struct Watch {
    body: hyper::body::Incoming,
    pending: Vec<u8>,
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// How opening a watch went.
pub enum Opened {
    Watching(Watch),
    /// A non-200 status and its body.
    Status(u16, Bytes),
}

impl Watch {
    /// GET `path` on a connection of its own.
    pub async fn open(address: SocketAddr, path: &str) -> Result<Opened, String> {
        let mut sender = open(address).await?;
        let request = http::Request::builder()
            .uri(path)
            .header("host", "watchcache")
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let response = sender.send_request(request).await.map_err(|error| format!("watch: {error}"))?;
        let status = response.status().as_u16();
        let body = response.into_body();
        if status != 200 {
            let body = body.collect().await.map(|body| body.to_bytes()).unwrap_or_default();
            return Ok(Opened::Status(status, body));
        }
        Ok(Opened::Watching(Watch { body, pending: Vec::new(), _sender: sender }))
    }

    /// The complete lines of the next read (without their newline); `None` once the stream ends.
    pub async fn lines(&mut self) -> Result<Option<Vec<Bytes>>, String> {
        loop {
            let Some(frame) = self.body.frame().await else { return Ok(None) };
            let frame = frame.map_err(|error| format!("watch stream broke: {error}"))?;
            let Ok(data) = frame.into_data() else { continue };
            self.pending.extend_from_slice(&data);
            let Some(last) = memchr::memrchr(b'\n', &self.pending) else { continue };
            let rest = self.pending.split_off(last + 1);
            let whole = Bytes::from(std::mem::replace(&mut self.pending, rest));
            let mut lines = Vec::new();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &whole) {
                if end > start {
                    lines.push(whole.slice(start..end));
                }
                start = end + 1;
            }
            return Ok(Some(lines));
        }
    }
}

/// The digits after `"key":"` in `text`.
pub fn quoted_number(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits]).ok()?.parse().ok()
}

/// etcd's request counters from its /metrics: (Range requests handled, Watch streams started,
/// every unary request handled but Put, which the scenarios' own writers send).
pub fn etcd_requests(client_url: &str) -> Option<(f64, f64, f64)> {
    use std::io::{Read, Write};
    let address = client_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (mut range, mut watch, mut unary) = (0.0, 0.0, 0.0);
    for line in text.lines() {
        let value = || line.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
        if line.starts_with("grpc_server_handled_total{") && line.contains("grpc_type=\"unary\"") {
            if !line.contains("grpc_method=\"Put\"") {
                unary += value();
            }
            if line.contains("grpc_method=\"Range\"") {
                range += value();
            }
        } else if line.starts_with("grpc_server_started_total{") && line.contains("grpc_method=\"Watch\"") {
            watch += value();
        }
    }
    Some((range, watch, unary))
}

/// A counter of watchcache's /metrics (summed over its labels).
pub fn watchcache_metric(address: SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if rest.starts_with(' ') || rest.starts_with('{') {
            let value = rest.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// Connections the kernel dropped because a listen queue was full (`TcpExt: ListenOverflows`
/// of /proc/net/netstat, the whole machine), or 0 if unreadable.
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[index.min(sorted.len() - 1)])
}

/// µs as milliseconds with two decimals, or "–".
pub fn ms(us: Option<i64>) -> String {
    us.map_or_else(|| "–".to_owned(), |us| format!("{:.2}", us as f64 / 1e3))
}

/// A line chart of `series` (name, points) to an SVG file.
pub fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    use plotters::prelude::*;
    let points = series.iter().flat_map(|(_, points)| points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let x_max = if x_max > 0.0 { x_max * 1.05 } else { 1.0 };
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let error = |error: DrawingAreaErrorKind<_>| format!("chart {}: {error}", path.display());
    root.fill(&WHITE).map_err(error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(error)?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(error)?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (index, (name, points)) in series.iter().enumerate() {
        let color = colors[index % colors.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(error)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&point| Circle::new(point, 3, color.filled())))
            .map_err(error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(error)?;
    root.present().map_err(error)?;
    Ok(())
}
