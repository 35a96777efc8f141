//! Turning outcomes into numbers and the one markdown table printed at the end, with the
//! targets of the performance issue beside the measured values.

use std::time::Duration;

use super::scenario::Outcome;

/// Throughput and latency of one run.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub requests: usize,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Share of recorded handshakes that resumed a session, when the shape makes any.
    pub resumed: Option<f64>,
    /// CPU time of the measured process per completed request.
    pub cpu_per_request: Duration,
}

impl Stats {
    /// `cpu` is what the process of interest used during the whole run (warm-up included):
    /// the bench process (client + upstream) for the direct route, the proxy for the other.
    pub fn from(outcome: &mut Outcome, cpu: Duration) -> Stats {
        outcome.latencies_ns.sort_unstable();
        let n = outcome.latencies_ns.len();
        let pick = |p: f64| -> Duration {
            if n == 0 {
                return Duration::ZERO;
            }
            // Nearest rank: the smallest value with at least p of the samples at or below it.
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            Duration::from_nanos(outcome.latencies_ns[rank - 1])
        };
        Stats {
            requests: n,
            rps: n as f64 / outcome.window.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
            resumed: (outcome.handshakes > 0)
                .then(|| outcome.resumed as f64 / outcome.handshakes as f64),
            cpu_per_request: cpu / u32::try_from(outcome.completed.max(1)).unwrap_or(u32::MAX),
        }
    }
}

/// A goal from the performance issue, checked against a row.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// proxy req/s >= this fraction of direct req/s.
    MinRatio(f64),
    /// proxy p50 - direct p50 <= this.
    MaxAddedP50(Duration),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::MinRatio(r) => format!("ratio >= {r:.1}x"),
            Target::MaxAddedP50(d) => format!("added p50 <= {} us", d.as_micros()),
        }
    }

    fn met(self, direct: &Stats, proxy: &Stats) -> bool {
        match self {
            Target::MinRatio(r) => ratio(direct, proxy) >= r,
            Target::MaxAddedP50(d) => added_p50_us(direct, proxy) <= d.as_secs_f64() * 1e6,
        }
    }
}

/// One scenario, measured both ways.
pub struct Row {
    pub name: String,
    pub target: Option<Target>,
    pub direct: Stats,
    pub proxy: Stats,
}

/// A memory reading of the proxy with its goal.
pub struct MemoryLine {
    pub what: String,
    pub kib: u64,
    pub limit_mib: Option<f64>,
    pub note: String,
}

fn ratio(direct: &Stats, proxy: &Stats) -> f64 {
    if direct.rps > 0.0 {
        proxy.rps / direct.rps
    } else {
        0.0
    }
}

fn added_p50_us(direct: &Stats, proxy: &Stats) -> f64 {
    (proxy.p50.as_secs_f64() - direct.p50.as_secs_f64()) * 1e6
}

fn latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table plus memory lines, as markdown.
pub fn render(rows: &[Row], memory: &[MemoryLine], notes: &[String]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | direct req/s | proxy req/s | ratio | direct p50 | proxy p50 | added p50 | direct p99 | proxy p99 | client+upstream CPU/req (direct) | proxy CPU/req | target | result |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for r in rows {
        let (target, result) = match r.target {
            Some(t) => (
                t.describe(),
                verdict(t.met(&r.direct, &r.proxy)).to_string(),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.3}x | {} | {} | {:+.0} us | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.direct.rps,
            r.proxy.rps,
            ratio(&r.direct, &r.proxy),
            latency(r.direct.p50),
            latency(r.proxy.p50),
            added_p50_us(&r.direct, &r.proxy),
            latency(r.direct.p99),
            latency(r.proxy.p99),
            latency(r.direct.cpu_per_request),
            latency(r.proxy.cpu_per_request),
            target,
            result,
        ));
    }
    out.push('\n');
    for m in memory {
        let goal = match m.limit_mib {
            Some(limit) => format!(
                " (target <= {limit:.0} MiB: {})",
                verdict(mib(m.kib) <= limit)
            ),
            None => String::new(),
        };
        out.push_str(&format!(
            "- proxy RSS, {}: {:.1} MiB{goal}{}\n",
            m.what,
            mib(m.kib),
            if m.note.is_empty() {
                String::new()
            } else {
                format!("; {}", m.note)
            }
        ));
    }
    for n in notes {
        out.push_str(&format!("- {n}\n"));
    }
    out
}
