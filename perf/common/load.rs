//! The closed-loop load runner: C clients, each with one request in flight at a time, for a
//! fixed time (every request started before the end is waited for and counted); latency
//! percentiles, requests/s, errors, and the CPU seconds the servers spent meanwhile.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One client of the load: a connection and what it sends.
pub trait Client: Send + 'static {
    /// One request (or one whole paginated list): Ok, or why it failed.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// What one level of concurrency measured.
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the start to the last response.
    pub seconds: f64,
    /// Latency percentiles in µs.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// CPU seconds of each server process (in the order given) over the level.
    pub cpu: Vec<f64>,
    /// CPU seconds of this process (the load generator) over the level.
    pub load_cpu: f64,
    /// CPU seconds the machine spent on anything else (other people's processes) over the level.
    pub others_cpu: f64,
}

impl Level {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Cores the rest of the machine kept busy over the level, on average.
    pub fn others_cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.others_cpu / self.seconds
        } else {
            0.0
        }
    }

    /// Cores the load generator kept busy over the level, on average.
    pub fn load_cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.load_cpu / self.seconds
        } else {
            0.0
        }
    }

    /// Server CPU (all the processes given) per successful request, in µs.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.cpu.iter().sum::<f64>() * 1e6 / self.requests.max(1) as f64
    }
}

/// The value at quantile `q` of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `clients` (already connected and warmed up by the caller) for `duration`, at least
/// `min_requests` in all; `pids` are the server processes whose CPU is read before and after.
pub fn run<C: Client>(
    runtime: &tokio::runtime::Runtime,
    clients: Vec<C>,
    duration: Duration,
    min_requests: usize,
    pids: &[u32],
) -> Level {
    let count = clients.len();
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before: Vec<f64> = pids.iter().map(|pid| super::procs::cpu_seconds(*pid)).collect();
    let own_before = super::procs::own_cpu_seconds();
    let machine_before = super::procs::machine_busy_seconds();
    let start = Instant::now();
    let end = start + duration;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for mut client in clients {
            let samples = Arc::clone(&samples);
            let errors = Arc::clone(&errors);
            let started = Arc::clone(&started);
            tasks.push(tokio::spawn(async move {
                let mut own = Vec::new();
                loop {
                    // Relaxed: a count of requests begun, read only to decide whether to go on;
                    // it orders nothing else.
                    let begun = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if Instant::now() >= end && begun >= min_requests {
                        break;
                    }
                    let sent = Instant::now();
                    match client.call().await {
                        Ok(()) => own.push(sent.elapsed().as_secs_f64() * 1e6),
                        Err(error) => {
                            let mut errors = errors.lock().unwrap();
                            errors.0 += 1;
                            errors.1.get_or_insert(error);
                            if errors.0 > 1_000 {
                                break;
                            }
                        }
                    }
                }
                samples.lock().unwrap().extend(own);
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let cpu: Vec<f64> =
        pids.iter().zip(&cpu_before).map(|(pid, before)| super::procs::cpu_seconds(*pid) - before).collect();
    let load_cpu = super::procs::own_cpu_seconds() - own_before;
    let machine = super::procs::machine_busy_seconds() - machine_before;
    let others_cpu = (machine - load_cpu - cpu.iter().sum::<f64>()).max(0.0);
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort_by(f64::total_cmp);
    let (errors, first_error) = std::mem::take(&mut *errors.lock().unwrap());
    Level {
        clients: count,
        requests: samples.len(),
        errors,
        first_error,
        seconds,
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
        max: samples.last().copied().unwrap_or(0.0),
        cpu,
        load_cpu,
        others_cpu,
    }
}

/// One progress line for a level.
pub fn progress(peer: &str, level: &Level) -> String {
    let mut line = format!(
        "  {peer}, {} clients: {} requests in {:.1} s, {:.1}/s, p50 {} p99 {}, server CPU {} per request",
        level.clients,
        level.requests,
        level.seconds,
        level.per_second(),
        super::micros(level.p50),
        super::micros(level.p99),
        super::micros(level.cpu_per_request_us()),
    );
    line.push_str(&format!(
        "; load generator {:.2} cores, other processes {:.2} cores",
        level.load_cores(),
        level.others_cores()
    ));
    if level.errors > 0 {
        line.push_str(&format!(
            "; {} errors, first: {}",
            level.errors,
            level.first_error.as_deref().unwrap_or("")
        ));
    }
    line
}
