//! Micro-benchmarks of the per-request hot path, with no I/O:
//! - `classify_strip_inject`: a realistic GitHub API request through host classification,
//!   the guard, hop-by-hop stripping and credential injection (what every proxied request
//!   pays before it is sent);
//! - `redact_64k`: the streaming response scrubber over a 64 KiB body in 16 KiB chunks.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::Request;

use axtary::broker::Broker;
use axtary::config::Config;
use axtary::ledger::Ledger;
use axtary::paths::Home;
use axtary::proxy::certs::CertAuthority;
use axtary::proxy::{pipeline, respond, State};
use axtary::redact::{RedactStream, Redactor};
use axtary::secret::Secret;

const CONFIG: &str = "version: 1\nconnectors:\n  github:\n    provider: github\n    tokenEnv: BENCH_GITHUB_TOKEN\n    deny: [\"DELETE /**\"]\n";

fn github_request() -> http::request::Parts {
    let (parts, _) = Request::get("/repos/acme/widgets/pulls?state=open&per_page=100")
        .header("host", "api.github.com")
        .header("user-agent", "GitHub CLI 2.62.0")
        .header("accept", "application/vnd.github+json")
        .header("authorization", "Bearer placeholder")
        .header("x-github-api-version", "2022-11-28")
        .header("accept-encoding", "gzip")
        .header("connection", "keep-alive")
        .header("proxy-authorization", "Bearer proxy-token")
        .body(())
        .expect("static request")
        .into_parts();
    parts
}

fn bench_inject(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::at(dir.path());
    let config = Config::parse(CONFIG, "bench.yml", Path::new("."), &home).expect("config");
    let ca = CertAuthority::load_or_create(&home).expect("CA");
    let token = format!("ghs_{}", "x".repeat(36));
    let broker = Broker::with_lookup(&config, |_| Some(token.clone()));
    let state = State::build(&config, ca, broker, Ledger::off(), None).expect("state");

    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function("classify_strip_inject", |b| {
        b.iter_batched(
            github_request,
            |parts| {
                let prepared = pipeline::prepare_ready(
                    &state,
                    black_box("api.github.com"),
                    parts,
                    respond::empty(),
                )
                .expect("prepared");
                black_box(prepared)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_redact(c: &mut Criterion) {
    let secret = Secret::new(format!("ghs_{}", "q".repeat(36)));
    let redactor = std::sync::Arc::new(Redactor::new(&[secret]).expect("redactor"));
    // JSON-ish text with no secret in it: the common case the scrubber must make cheap.
    let body: Vec<u8> = br#"{"id":123456,"node_id":"PR_kwDOABCD","state":"open","title":"Fix the widget","user":{"login":"octocat"}},"#
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    let mut group = c.benchmark_group("scrub");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("redact_64k", |b| {
        b.iter(|| {
            let mut s = RedactStream::new(redactor.clone());
            let mut n = 0;
            for chunk in &chunks {
                n += s.push(chunk.clone()).len();
            }
            n += s.finish().len();
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_inject, bench_redact);
criterion_main!(benches);
