//! Load benchmark of the intercepting path: the same GitHub-shaped request sent straight to a
//! local TLS upstream and through `axtary proxy` (CONNECT, TLS interception, credential
//! injection, pooled upstream), under keep-alive, HTTP/2 and new-connection-per-request
//! loads, plus the proxy's memory idle, at peak, and holding 10,000 idle client connections.
//!
//! Everything runs on loopback: the upstream and the client share this process (one
//! multi-thread runtime), the proxy is the release binary in a child process. Every answer is
//! checked for the injected credential; a wrong or missing one makes the run exit non-zero.
//! The targets of the performance issue are printed beside the numbers, not enforced.

// The parts live beside this file in `load/`.
#[path = "load/client.rs"]
mod client;
#[path = "load/proxy.rs"]
mod proxy;
#[path = "load/report.rs"]
mod report;
#[path = "load/scenario.rs"]
mod scenario;
#[path = "load/upstream.rs"]
mod upstream;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use client::{Client, Proto, Route, HOST_NAME};
use proxy::ProxyProcess;
use report::{MemoryLine, Row, Stats, Target};
use scenario::Shape;

/// Unrecorded requests before each measurement: first mint, pool fill, caches.
const WARMUP: Duration = Duration::from_millis(500);
/// Recorded time per scenario and route.
const MEASURE: Duration = Duration::from_secs(3);
/// Lets closed connections and freed buffers settle between phases.
const SETTLE: Duration = Duration::from_millis(300);
/// The whole run must finish within this, or it fails.
const RUN_BUDGET: Duration = Duration::from_secs(115);
/// Idle client connections held open for the memory reading.
const IDLE_CONNECTIONS: usize = 10_000;
/// Connections opened at once while building the idle set.
const IDLE_OPENERS: usize = 64;
/// Bound on opening one idle connection.
const IDLE_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

struct Scenario {
    name: &'static str,
    shape: Shape,
    proto: Proto,
    resume: bool,
    target: Option<Target>,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "keep-alive HTTP/1.1, c=1",
        shape: Shape::KeepAlive { connections: 1 },
        proto: Proto::Http1,
        resume: false,
        target: Some(Target::MaxAddedP50(Duration::from_micros(60))),
    },
    Scenario {
        name: "keep-alive HTTP/1.1, c=32 (32 connections)",
        shape: Shape::KeepAlive { connections: 32 },
        proto: Proto::Http1,
        resume: false,
        target: Some(Target::MinRatio(0.5)),
    },
    Scenario {
        name: "HTTP/2, 32 streams on 1 connection",
        shape: Shape::H2Streams { streams: 32 },
        proto: Proto::Http2,
        resume: false,
        target: None,
    },
    Scenario {
        name: "new TLS connection per request, c=8, no resumption",
        shape: Shape::NewConnection { concurrency: 8 },
        proto: Proto::Http1,
        resume: false,
        target: Some(Target::MinRatio(0.8)),
    },
    Scenario {
        name: "new TLS connection per request, c=8, resumption",
        shape: Shape::NewConnection { concurrency: 8 },
        proto: Proto::Http1,
        resume: true,
        target: Some(Target::MinRatio(0.8)),
    },
];

/// What a completed run hands back: the rendered report and any failed checks.
struct Summary {
    report: String,
    failures: Vec<String>,
}

fn main() -> ExitCode {
    // One crypto provider for every TLS config in this process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let began = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the bench runtime");
    let result = runtime.block_on(async { tokio::time::timeout(RUN_BUDGET, run()).await });
    // Held sockets and driver tasks go now, not at process exit.
    drop(runtime);
    let took = began.elapsed();
    match result {
        Ok(Ok(summary)) => {
            println!("{}", summary.report);
            println!("run took {:.1} s", took.as_secs_f64());
            if summary.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("load: FAILED: answers were wrong or missing:");
                for f in &summary.failures {
                    eprintln!("  {f}");
                }
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("load: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "load: FAILED: the run did not finish within {} s",
                RUN_BUDGET.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<Summary, String> {
    // Both processes hold one descriptor per idle connection, plus a few hundred for the
    // load scenarios and the process itself. Checked first so a low limit is a clear message
    // rather than a failure after a minute of load.
    let needed = IDLE_CONNECTIONS as u64 + 1_000;
    if let Some(limit) = proxy::open_file_limit()? {
        if limit < needed {
            return Err(format!(
                "the open-file limit is {limit}; the idle-connection phase needs {needed}: run `ulimit -n {needed}` (or higher) first"
            ));
        }
    }
    let token = format!("ghs_{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    let marker = client::expected_marker(&token);
    let ca = upstream::BenchCa::new();
    let upstream = upstream::start(&ca, HOST_NAME).await;

    let exe = Path::new(env!("CARGO_BIN_EXE_axtary"));
    // Waiting for the listening line blocks; keep the upstream's tasks running meanwhile.
    let mut proxy =
        tokio::task::block_in_place(|| ProxyProcess::start(exe, upstream.addr, ca.pem(), &token))?;
    tokio::time::sleep(SETTLE).await;
    let idle = proxy.memory()?;
    let proxy_ca = read_ca(&proxy.ca_pem)?;
    eprintln!(
        "load: proxy pid {} on {}, upstream on {}, idle RSS {:.1} MiB",
        proxy.pid(),
        proxy.addr,
        upstream.addr,
        idle.rss_kib as f64 / 1024.0
    );

    let proxy_addr = proxy.addr;
    let client_for = |route: Route, proto: Proto, resume: bool| -> Client {
        let (addr, root) = match route {
            Route::Direct => (upstream.addr, ca.cert_der()),
            Route::Proxy => (proxy_addr, &proxy_ca),
        };
        let tls = client::tls_config(root, proto, resume);
        Client::new(route, addr, tls, &token, marker.clone())
    };

    // One intercepted keep-alive connection left idle for the whole run, to see whether and
    // when the proxy closes idle client connections.
    let canary = client_for(Route::Proxy, Proto::Http1, false)
        .open_idle()
        .await
        .map_err(|e| format!("first request through the proxy failed: {e}"))?
        .0;
    let canary = tokio::spawn(watch_close(canary, Instant::now()));

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut busiest_others = (0.0f64, String::new());
    for sc in &SCENARIOS {
        let mut stats = Vec::with_capacity(2);
        for route in [Route::Direct, Route::Proxy] {
            let client = client_for(route, sc.proto, sc.resume);
            // The direct route's cost is this process (client + upstream); the proxied
            // route's extra cost is the proxy's.
            let cpu_of = || match route {
                Route::Direct => proxy::read_cpu_time(std::process::id()),
                Route::Proxy => proxy.cpu_time(),
            };
            let cpu_before = cpu_of()?;
            let ours_before = own_cpu(&proxy)?;
            let machine_before = proxy::read_machine_busy()?;
            let began = Instant::now();
            let mut outcome = scenario::run(&client, sc.shape, WARMUP, MEASURE).await;
            let cpu = cpu_of()?.saturating_sub(cpu_before);
            // Anything else busy on the machine skews every number: measure it.
            let others = proxy::read_machine_busy()?
                .saturating_sub(machine_before)
                .saturating_sub(own_cpu(&proxy)?.saturating_sub(ours_before));
            let others_share = others.as_secs_f64() / began.elapsed().as_secs_f64();
            if others_share > busiest_others.0 {
                busiest_others = (others_share, format!("{} ({route:?})", sc.name));
            }
            if let Some(first) = &outcome.failure {
                failures.push(format!(
                    "{} ({route:?}): {} failed request(s); first: {first}",
                    sc.name, outcome.failures
                ));
            }
            proxy.check_alive()?;
            let s = Stats::from(&mut outcome, cpu);
            eprintln!(
                "load: {} {:?}: {} requests, {:.0} req/s, p50 {} us, p99 {} us, {} us CPU/req, other processes {:.0}% of a core{}",
                sc.name,
                route,
                s.requests,
                s.rps,
                s.p50.as_micros(),
                s.p99.as_micros(),
                s.cpu_per_request.as_micros(),
                others_share * 100.0,
                s.resumed
                    .map(|r| format!(", {:.1}% of handshakes resumed", r * 100.0))
                    .unwrap_or_default()
            );
            stats.push(s);
            tokio::time::sleep(SETTLE).await;
        }
        let (direct, via) = (stats[0], stats[1]);
        if sc.resume {
            notes.push(format!(
                "{}: handshakes resumed: direct {:.1}%, proxy {:.1}%",
                sc.name,
                direct.resumed.unwrap_or(0.0) * 100.0,
                via.resumed.unwrap_or(0.0) * 100.0
            ));
        }
        rows.push(Row {
            name: sc.name.to_string(),
            target: sc.target,
            direct,
            proxy: via,
        });
    }

    tokio::time::sleep(SETTLE).await;
    let after_load = proxy.memory()?;
    let fds_before = proxy.open_fds()?;

    let idle_client = client_for(Route::Proxy, Proto::Http1, true);
    let started = Instant::now();
    let opened = open_idle_set(&idle_client, IDLE_CONNECTIONS).await;
    let open_secs = started.elapsed().as_secs_f64();
    let (held, resumed) = match opened {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("opening {IDLE_CONNECTIONS} idle connections: {e}"));
            (Vec::new(), 0)
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.check_alive()?;
    let with_idle = proxy.memory()?;
    let fds_idle = proxy.open_fds()?;
    let bench_self = proxy::read_memory(std::process::id())?;
    let per_conn_kib =
        with_idle.rss_kib.saturating_sub(after_load.rss_kib) as f64 / held.len().max(1) as f64;
    drop(held);

    let memory = vec![
        MemoryLine {
            what: "idle after start (VmRSS)".to_string(),
            kib: idle.rss_kib,
            limit_mib: Some(15.0),
            note: String::new(),
        },
        MemoryLine {
            what: "peak after the load scenarios (VmHWM)".to_string(),
            kib: after_load.hwm_kib,
            limit_mib: None,
            note: format!(
                "VmRSS once the load stopped: {:.1} MiB",
                after_load.rss_kib as f64 / 1024.0
            ),
        },
        MemoryLine {
            what: format!("{IDLE_CONNECTIONS} idle client connections held (VmRSS)"),
            kib: with_idle.rss_kib,
            limit_mib: Some(150.0),
            note: format!(
                "{per_conn_kib:.1} KiB per connection over the post-load VmRSS; VmHWM {:.1} MiB; proxy fds {fds_before} -> {fds_idle}",
                with_idle.hwm_kib as f64 / 1024.0
            ),
        },
    ];
    notes.push(format!(
        "idle connections: each did CONNECT + full TLS handshake or resumption ({resumed} of {IDLE_CONNECTIONS} resumed) + one checked HTTP/1.1 request, then stayed open without traffic; opened in {open_secs:.1} s, {IDLE_OPENERS} at a time; the client kept only the TCP socket"
    ));
    notes.push(format!(
        "bench process (client + upstream) RSS at 10k idle: {:.1} MiB",
        bench_self.rss_kib as f64 / 1024.0
    ));
    // The watcher finishes only if the proxy closed the connection during the run.
    notes.push(if canary.is_finished() {
        match canary.await {
            Ok(d) => format!(
                "an idle intercepted keep-alive connection was closed by the proxy after {:.1} s",
                d.as_secs_f64()
            ),
            Err(e) => format!("idle-connection watcher failed: {e}"),
        }
    } else {
        "an idle intercepted keep-alive connection opened at the start stayed open for the whole run".to_string()
    });
    notes.push(format!(
        "other processes on the machine used at most {:.0}% of a core during a measured run ({}); the numbers are comparable between runs only when this stays small",
        busiest_others.0 * 100.0,
        busiest_others.1
    ));
    notes.push(
        "CPU/req: user + system CPU of this process (client + upstream) over the direct run, and of the proxy process over the proxied run, divided by every completed request including warm-up (10 ms resolution)"
            .to_string(),
    );
    notes.push(
        "targets are reported, not enforced: the run fails only on a wrong or missing answer"
            .to_string(),
    );

    drop(proxy);
    drop(upstream);
    Ok(Summary {
        report: report::render(&rows, &memory, &notes),
        failures,
    })
}

/// CPU used so far by this process and the proxy together.
fn own_cpu(proxy: &ProxyProcess) -> Result<Duration, String> {
    Ok(proxy::read_cpu_time(std::process::id())? + proxy.cpu_time()?)
}

/// Opens `count` idle intercepted connections, `IDLE_OPENERS` at a time. Returns the sockets
/// and how many TLS handshakes resumed; stops at the first failure.
async fn open_idle_set(client: &Client, count: usize) -> Result<(Vec<TcpStream>, usize), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut openers = Vec::with_capacity(IDLE_OPENERS);
    for _ in 0..IDLE_OPENERS {
        let client = client.clone();
        let next = next.clone();
        let stop = stop.clone();
        openers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut resumed = 0usize;
            while !stop.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < count {
                match tokio::time::timeout(IDLE_OPEN_TIMEOUT, client.open_idle()).await {
                    Ok(Ok((tcp, r))) => {
                        held.push(tcp);
                        resumed += usize::from(r);
                    }
                    Ok(Err(e)) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("after {} opened: {e}", held.len()));
                    }
                    Err(_) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err("opening one took longer than 10 s".to_string());
                    }
                }
            }
            Ok((held, resumed))
        }));
    }
    let mut all = Vec::with_capacity(count);
    let mut resumed = 0;
    let mut first_error = None;
    for o in openers {
        match o.await {
            Ok(Ok((held, r))) => {
                all.extend(held);
                resumed += r;
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(format!("an opener panicked: {e}"))),
        }
    }
    match first_error {
        Some(e) => Err(format!("{e} ({} were open)", all.len())),
        None => Ok((all, resumed)),
    }
}

/// Resolves when the peer closes `tcp` (TLS alerts before the FIN are skipped).
async fn watch_close(mut tcp: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => continue,
        }
    }
}

fn read_ca(path: &Path) -> Result<CertificateDer<'static>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the proxy CA {}: {e}", path.display()))?;
    CertificateDer::from_pem_slice(&pem)
        .map_err(|e| format!("the proxy CA {} is not PEM: {e}", path.display()))
}
