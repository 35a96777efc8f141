//! Counters for `GET /metrics` on the admin listener (Prometheus text format).
//!
//! Plain relaxed atomics, indexed by connector and decision: counting a request costs one
//! atomic add and never takes a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ledger::Decision;

const DECISIONS: [(Decision, &str); 6] = [
    (Decision::Injected, "injected"),
    (Decision::Denied, "denied"),
    (Decision::DryRun, "dry_run"),
    (Decision::RateLimited, "rate_limited"),
    (Decision::Tunneled, "tunneled"),
    (Decision::Error, "error"),
];

fn decision_index(d: Decision) -> usize {
    DECISIONS.iter().position(|(x, _)| *x == d).unwrap_or(5)
}

/// Process-wide counters.
pub struct Metrics {
    connectors: Vec<String>,
    /// `[connector][decision]`; the last row counts requests with no connector.
    requests: Vec<[AtomicU64; 6]>,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
}

impl Metrics {
    pub fn new(connectors: Vec<String>) -> Metrics {
        let rows = connectors.len() + 1;
        Metrics {
            connectors,
            requests: (0..rows).map(|_| Default::default()).collect(),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
        }
    }

    /// Counts one request; `connector` is an index into the config's connectors.
    pub fn request(&self, connector: Option<usize>, decision: Decision) {
        let row = connector
            .filter(|i| *i < self.connectors.len())
            .unwrap_or(self.connectors.len());
        if let Some(r) = self.requests.get(row) {
            r[decision_index(decision)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP axtary_requests_total Requests handled, by connector and decision.\n");
        out.push_str("# TYPE axtary_requests_total counter\n");
        for (row, counts) in self.requests.iter().enumerate() {
            let name = self.connectors.get(row).map(String::as_str).unwrap_or("");
            for (i, (_, label)) in DECISIONS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "axtary_requests_total{{connector=\"{name}\",decision=\"{label}\"}} {}",
                    counts[i].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP axtary_connections_accepted_total Client connections accepted.\n");
        out.push_str("# TYPE axtary_connections_accepted_total counter\n");
        let _ = writeln!(
            out,
            "axtary_connections_accepted_total {}",
            self.connections_accepted.load(Ordering::Relaxed)
        );
        out.push_str("# HELP axtary_connections_open Client connections open now.\n");
        out.push_str("# TYPE axtary_connections_open gauge\n");
        let _ = writeln!(
            out,
            "axtary_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let m = Metrics::new(vec!["github".into()]);
        m.request(Some(0), Decision::Injected);
        m.request(Some(0), Decision::Injected);
        m.request(None, Decision::Tunneled);
        let text = m.render();
        assert!(
            text.contains("axtary_requests_total{connector=\"github\",decision=\"injected\"} 2")
        );
        assert!(text.contains("axtary_requests_total{connector=\"\",decision=\"tunneled\"} 1"));
    }
}
