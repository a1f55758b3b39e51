//! Checks every (watcher, write) receipt for gaps, duplicates and order, and turns a run into a
//! row: CPU per delivered event, write rate, ack→receive latency percentiles.

use std::collections::BTreeMap;

use crate::procs::Cpu;
use crate::run::Measured;
use crate::watch::Wire;

pub struct Row {
    pub name: String,
    pub server_label: &'static str,
    pub result: Result<Figures, String>,
}

pub struct Figures {
    pub server: Cpu,
    pub etcd: Option<Cpu>,
    pub load: Cpu,
    pub others: f64,
    pub steal: f64,
    pub window: f64,
    pub acked: u32,
    pub writes_per_second: f64,
    /// p50, p99, p999, max of ack→receive, µs.
    pub latency: Option<[i64; 4]>,
    pub delivered: u64,
    pub expected: u64,
    pub missing: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    pub failed: usize,
    pub failures: Vec<(String, usize)>,
    pub bytes_per_event: f64,
    /// Per wire, when the watchers did not all ask for the same one.
    pub wires: Vec<WireFigures>,
    pub notes: Vec<String>,
}

/// The watchers of one wire in a mixed run.
pub struct WireFigures {
    pub wire: Wire,
    pub watchers: usize,
    /// p50, p99, p999, max of ack→receive, µs.
    pub latency: Option<[i64; 4]>,
    pub delivered: u64,
    pub bytes_per_event: f64,
}

/// p50, p99, p999 and max of sorted latencies.
fn percentiles(latencies: &[i32]) -> Option<[i64; 4]> {
    (!latencies.is_empty()).then(|| {
        let at = |q: f64| {
            let index = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            i64::from(latencies[index])
        };
        [at(0.50), at(0.99), at(0.999), i64::from(*latencies.last().unwrap())]
    })
}

impl Figures {
    /// Every write reached every watcher, once and in order.
    pub fn complete(&self) -> bool {
        self.delivered == self.expected
            && self.expected > 0
            && self.missing == 0
            && self.duplicate == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.failed == 0
    }

    /// µs of `seconds` per delivered event.
    fn per_event(&self, seconds: f64) -> String {
        if self.delivered == 0 {
            "–".into()
        } else {
            format!("{:.2}", seconds * 1e6 / self.delivered as f64)
        }
    }
}

/// The failure reason without what varies between watchers.
fn reason_kind(reason: &str) -> String {
    let mut kind: String = reason.chars().take(160).collect();
    if reason.len() > kind.len() {
        kind.push('…');
    }
    kind
}

pub fn analyze(measured: Measured, writes: u32, watchers: usize) -> Figures {
    let log = &measured.log;
    let acked = log.acked;
    let words = writes as usize / 64 + 1;
    let mut seen = vec![0u64; words];
    let total: usize = measured.receipts.iter().map(|receipts| receipts.events.len()).sum();
    let mut latencies: Vec<i32> = Vec::with_capacity(total);
    let (mut delivered, mut missing, mut duplicate, mut out_of_order, mut unexpected) = (0u64, 0, 0, 0, 0);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    // Per wire: watchers, latencies, deliveries, bytes.
    let mut wires: BTreeMap<Wire, (usize, Vec<i32>, u64, u64)> = BTreeMap::new();
    let mixed = measured.receipts.iter().any(|receipts| receipts.wire != measured.receipts[0].wire);
    for receipts in &measured.receipts {
        let latencies_before = latencies.len();
        seen.fill(0);
        let mut highest = 0;
        let mut distinct = 0u64;
        for &(seq, at) in &receipts.events {
            if seq == 0 || seq > writes {
                unexpected += 1;
                continue;
            }
            let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
            if seen[word] & bit != 0 {
                duplicate += 1;
                continue;
            }
            seen[word] |= bit;
            if seq < highest {
                out_of_order += 1;
            } else {
                highest = seq;
            }
            if seq <= acked {
                distinct += 1;
                latencies.push((i64::from(at) - i64::from(log.ack_us[seq as usize])) as i32);
            }
        }
        delivered += distinct;
        missing += u64::from(acked) - distinct;
        if mixed {
            let wire = wires.entry(receipts.wire).or_default();
            wire.0 += 1;
            wire.1.extend_from_slice(&latencies[latencies_before..]);
            wire.2 += distinct;
            wire.3 += receipts.bytes;
        }
        if let Some(reason) = &receipts.failure {
            failed += 1;
            *failures.entry(reason_kind(reason)).or_default() += 1;
        }
    }
    latencies.sort_unstable();
    let latency = percentiles(&latencies);
    let wires = wires
        .into_iter()
        .map(|(wire, (watchers, mut latencies, delivered, bytes))| {
            latencies.sort_unstable();
            WireFigures {
                wire,
                watchers,
                latency: percentiles(&latencies),
                delivered,
                bytes_per_event: if delivered > 0 { bytes as f64 / delivered as f64 } else { 0.0 },
            }
        })
        .collect();
    let mut failures: Vec<(String, usize)> = failures.into_iter().collect();
    failures.sort_by_key(|failure| std::cmp::Reverse(failure.1));
    let seconds = f64::from(log.last_ack_us.saturating_sub(log.first_sent_us)) / 1e6;
    Figures {
        server: measured.server,
        etcd: measured.etcd,
        load: measured.load,
        others: measured.others,
        steal: measured.steal,
        window: measured.window,
        acked,
        writes_per_second: if seconds > 0.0 { f64::from(acked) / seconds } else { 0.0 },
        latency,
        delivered,
        expected: u64::from(acked) * watchers as u64,
        missing,
        duplicate,
        out_of_order,
        unexpected,
        failed,
        failures,
        bytes_per_event: if delivered > 0 { measured.bytes as f64 / delivered as f64 } else { 0.0 },
        wires,
        notes: measured.notes,
    }
}

fn ms(us: i64) -> String {
    let ms = us as f64 / 1e3;
    if ms.abs() < 1.0 {
        format!("{ms:.3} ms")
    } else if ms.abs() < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Thousands separators.
fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// One line for the progress output, right after a run.
pub fn summary(row: &Row) -> String {
    match &row.result {
        Err(error) => format!("{}: FAILED: {error}", row.name),
        Ok(f) => format!(
            "{}: {} µs {} CPU per delivered event; {:.0} writes/s; ack→receive p50 {} p99 {} p999 {}; \
             delivered {}/{}; load generator {:.2} s CPU",
            row.name,
            f.per_event(f.server.total()),
            row.server_label,
            f.writes_per_second,
            f.latency.map(|l| ms(l[0])).unwrap_or_default(),
            f.latency.map(|l| ms(l[1])).unwrap_or_default(),
            f.latency.map(|l| ms(l[2])).unwrap_or_default(),
            count(f.delivered),
            count(f.expected),
            f.load.total(),
        ),
    }
}

/// The markdown table of every row, then the details under it.
pub fn table(rows: &[Row], rate: f64) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "| peer | server CPU µs/event | user | sys | etcd CPU µs/event | writes/s (of {rate}) | \
         ack→receive p50 | p99 | p999 | delivered / expected | missing | duplicate | out of order | \
         failed watchers | event bytes | load generator CPU |\n"
    ));
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for row in rows {
        match &row.result {
            Err(error) => {
                let error: String = error.chars().take(120).collect();
                out.push_str(&format!("| {} | failed: {error} |||||||||||||||\n", row.name));
            }
            Ok(f) => {
                let latency = |index: usize| f.latency.map(|l| ms(l[index])).unwrap_or_else(|| "–".into());
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {:.0} | {:.0}% |\n",
                    row.name,
                    f.per_event(f.server.total()),
                    f.per_event(f.server.user),
                    f.per_event(f.server.sys),
                    f.etcd.map(|etcd| f.per_event(etcd.total())).unwrap_or_else(|| "–".into()),
                    f.writes_per_second,
                    latency(0),
                    latency(1),
                    latency(2),
                    count(f.delivered),
                    count(f.expected),
                    count(f.missing),
                    count(f.duplicate),
                    count(f.out_of_order),
                    f.failed,
                    f.bytes_per_event,
                    100.0 * f.load.total() / f.window,
                ));
            }
        }
    }
    out.push('\n');
    for row in rows {
        let Ok(f) = &row.result else { continue };
        out.push_str(&format!(
            "- {}: server ({}) {:.2} s CPU ({:.2} user, {:.2} sys){} in a window of {:.2} s; {} writes \
             acknowledged; max ack→receive {}; load generator {:.2} s CPU; other processes {:.2} s CPU; steal {:.2} s\n",
            row.name,
            row.server_label,
            f.server.total(),
            f.server.user,
            f.server.sys,
            f.etcd.map(|etcd| format!(", etcd {:.2} s", etcd.total())).unwrap_or_default(),
            f.window,
            f.acked,
            f.latency.map(|l| ms(l[3])).unwrap_or_else(|| "–".into()),
            f.load.total(),
            f.others,
            f.steal,
        ));
        if f.unexpected > 0 {
            out.push_str(&format!("  - {} receipts of writes never made\n", f.unexpected));
        }
        for wire in &f.wires {
            let latency = |index: usize| wire.latency.map(|l| ms(l[index])).unwrap_or_else(|| "–".into());
            out.push_str(&format!(
                "  - {} watchers ({}): ack→receive p50 {} p99 {} p999 {}; delivered {}; {:.0} bytes per event\n",
                wire.wire.name(),
                wire.watchers,
                latency(0),
                latency(1),
                latency(2),
                count(wire.delivered),
                wire.bytes_per_event,
            ));
        }
        for (reason, watchers) in f.failures.iter().take(3) {
            out.push_str(&format!("  - {watchers} watchers failed: {reason}\n"));
        }
        for note in &f.notes {
            out.push_str(&format!("  - {note}\n"));
        }
    }
    out
}
