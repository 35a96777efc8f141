//! GitHub App mode: what a request pays for its installation token.
//! - `cached/*`: the per-request fast path once a token is minted (read lock, owner lookup,
//!   expiry check, `Arc` clone), for a repository path and for a path served by the app's
//!   only installation;
//! - `mint_local/sign_jwt`: an RS256 signature with a 2048-bit key, the local part of every
//!   mint (the network round trip to GitHub comes on top), which is why the JWT is cached.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use axtary::broker::github_app::GithubApp;
use axtary::config::Config;
use axtary::paths::Home;
use axtary::secret::Secret;

const CONFIG: &str = "version: 1\nconnectors:\n  github:\n    provider: github\n    mode: app\n";

fn app() -> GithubApp {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::LineEnding;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
    let pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .expect("PKCS#1 PEM")
        .to_string();
    let home = Home::at("/nonexistent-bench-home");
    let config = Config::parse(CONFIG, "bench.yml", Path::new("."), &home).expect("config");
    let lookup = |k: &str| match k {
        "AXTARY_GITHUB_APP_ID" => Some("424242".to_string()),
        "AXTARY_GITHUB_APP_PRIVATE_KEY" => Some(pem.clone()),
        _ => None,
    };
    GithubApp::from_config(&config.connectors[0], &config.upstream, lookup).expect("app")
}

fn bench_github_app(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = app();
    let hour = Duration::from_secs(3600);
    let token = |s: &str| Secret::new(format!("ghs_{s}{}", "x".repeat(60)));
    app.prime(101, Some("acme"), token("acme"), hour)
        .expect("prime acme");
    app.prime(303, None, token("sole"), hour)
        .expect("prime sole");
    assert!(app.cached("/repos/acme/widgets/pulls").is_some());
    assert!(app.cached("/rate_limit").is_some());

    let mut group = c.benchmark_group("cached");
    group.throughput(Throughput::Elements(1));
    group.bench_function("repo_path", |b| {
        b.iter(|| black_box(app.cached(black_box("/repos/acme/widgets/pulls?state=open"))))
    });
    group.bench_function("sole_installation", |b| {
        b.iter(|| black_box(app.cached(black_box("/rate_limit"))))
    });
    group.finish();

    let mut group = c.benchmark_group("mint_local");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_jwt", |b| {
        b.iter(|| black_box(app.sign_jwt().expect("sign")))
    });
    group.finish();
}

criterion_group!(benches, bench_github_app);
criterion_main!(benches);
