//! What the whole-system scenarios `list`, `writes` and `memory` share: processes and their CPU
//! and RSS from /proc, an HTTP/1.1 client connection, a closed-loop load runner with latency
//! percentiles, environment sizes, markdown tables and SVG charts. Each scenario includes it
//! with `#[path = "common/mod.rs"] mod scenario;`; it depends on nothing of the scenarios.
#![allow(dead_code)]

pub mod chart;
pub mod http;
pub mod load;
pub mod procs;

/// A number from the environment (`_` allowed as a separator), or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().replace('_', "").parse().map_err(|_| format!("{name}={value:?} is not a number"))
        }
        _ => Ok(default),
    }
}

/// A comma-separated list of numbers from the environment, or `default`.
pub fn env_list(name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .split(',')
            .map(|item| {
                item.trim()
                    .replace('_', "")
                    .parse::<usize>()
                    .ok()
                    .filter(|number| *number > 0)
                    .ok_or_else(|| format!("{name}={value:?}: {item:?} is not a positive number"))
            })
            .collect(),
        _ => Ok(default.to_vec()),
    }
}

/// A comma-separated list of names from the environment, or `default`.
pub fn env_names(name: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
        _ => default.iter().map(|item| (*item).to_owned()).collect(),
    }
}

/// Whether this is a smoke run: `cargo bench` passes `--bench`, `cargo test --benches` does
/// not. A smoke run uses tiny sizes whatever the environment says, writes its charts to a
/// temporary directory, and fails on any error.
pub fn quick() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

/// Where the charts go: `PERF_CHARTS` or `perf/charts` (cargo runs benches from the package
/// root); a temporary directory in a smoke run.
pub fn chart_dir() -> std::path::PathBuf {
    if quick() {
        return std::env::temp_dir().join("watchcache-perf-charts");
    }
    std::env::var_os("PERF_CHARTS")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/charts"))
}

/// The machine, for the header of a report: cores and the kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| format!(", {:.0} GiB RAM", kib as f64 / 1048576.0));
    format!("{cores} cores{memory}, Linux {}", kernel.trim())
}

/// A markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), " --- |".repeat(header.len()));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// A duration in µs, shown in the unit that suits it.
pub fn micros(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// A ratio such as `12.3×`.
pub fn ratio(value: f64) -> String {
    if !value.is_finite() {
        "—".into()
    } else if value >= 10.0 {
        format!("{value:.1}×")
    } else {
        format!("{value:.2}×")
    }
}
