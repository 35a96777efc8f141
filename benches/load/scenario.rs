//! The load shapes and the time-boxed runner.
//!
//! Every worker loops until the window closes, timing each request from the moment it starts
//! (for new-connection shapes that includes TCP, CONNECT and TLS). Requests started during
//! the warm-up are checked but not recorded, so the first leaf mint, pool fill and cache
//! misses do not count. A failed request stops its worker and fails the run.

use std::time::{Duration, Instant};

use hyper::client::conn::http2;

use super::client::{Client, ReqBody, H1};

/// Bound on one request (including its connection set-up), so a stuck proxy fails the run
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client does.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `connections` HTTP/1.1 keep-alive connections, one request at a time on each.
    KeepAlive { connections: usize },
    /// One HTTP/2 connection carrying `streams` concurrent streams.
    H2Streams { streams: usize },
    /// `concurrency` workers each opening a new TLS connection per request.
    NewConnection { concurrency: usize },
}

/// When recording starts and when workers stop starting requests.
#[derive(Clone, Copy)]
struct Window {
    record_from: Instant,
    until: Instant,
}

impl Window {
    fn starting_now(warmup: Duration, measure: Duration) -> Window {
        let record_from = Instant::now() + warmup;
        Window {
            record_from,
            until: record_from + measure,
        }
    }
}

/// What one run (one shape, one route) produced.
#[derive(Default)]
pub struct Outcome {
    /// Latency of every recorded request, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Length of the recording window.
    pub window: Duration,
    /// Every request that succeeded, warm-up included (for CPU per request).
    pub completed: u64,
    /// TLS handshakes made during the recording window, and how many of them resumed.
    pub handshakes: u64,
    pub resumed: u64,
    /// The first failure, and how many there were.
    pub failure: Option<String>,
    pub failures: u64,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.latencies_ns.extend(other.latencies_ns);
        self.completed += other.completed;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.failures += other.failures;
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }

    fn fail(&mut self, why: String) {
        self.failures += 1;
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }
}

/// One worker's connection state: what a step reuses from the previous one.
enum Work {
    H1(H1),
    H2(http2::SendRequest<ReqBody>),
    /// Nothing is reused: every step opens and closes its own connection.
    Fresh,
}

/// Runs `shape` against `client`: connections first (keep-alive shapes), then `warmup`,
/// then `measure` of recorded requests.
pub async fn run(client: &Client, shape: Shape, warmup: Duration, measure: Duration) -> Outcome {
    let mut total = Outcome {
        window: measure,
        ..Outcome::default()
    };
    let mut work = Vec::new();
    match shape {
        Shape::KeepAlive { connections } => {
            for _ in 0..connections {
                match client.open_h1().await {
                    Ok((conn, _)) => work.push(Work::H1(conn)),
                    Err(e) => {
                        total.fail(format!("opening a keep-alive connection: {e}"));
                        return total;
                    }
                }
            }
        }
        Shape::H2Streams { streams } => match client.open_h2().await {
            Ok(sender) => work.extend((0..streams).map(|_| Work::H2(sender.clone()))),
            Err(e) => {
                total.fail(format!("opening the HTTP/2 connection: {e}"));
                return total;
            }
        },
        Shape::NewConnection { concurrency } => {
            work.extend((0..concurrency).map(|_| Work::Fresh));
        }
    }
    // The window opens only once the keep-alive connections exist.
    let window = Window::starting_now(warmup, measure);
    let workers: Vec<_> = work
        .into_iter()
        .map(|w| tokio::spawn(worker(client.clone(), window, w)))
        .collect();
    for w in workers {
        match w.await {
            Ok(out) => total.merge(out),
            Err(e) => total.fail(format!("a worker panicked: {e}")),
        }
    }
    total
}

/// Starts requests until the window closes; records those started inside it.
async fn worker(client: Client, window: Window, mut work: Work) -> Outcome {
    let mut out = Outcome::default();
    loop {
        let started = Instant::now();
        if started >= window.until {
            return out;
        }
        let record = started >= window.record_from;
        match tokio::time::timeout(REQUEST_TIMEOUT, step(&client, &mut work)).await {
            Ok(Ok(resumed)) => {
                out.completed += 1;
                if record {
                    out.latencies_ns.push(started.elapsed().as_nanos() as u64);
                    if let Some(resumed) = resumed {
                        out.handshakes += 1;
                        out.resumed += u64::from(resumed);
                    }
                }
            }
            Ok(Err(e)) => {
                out.fail(e);
                return out;
            }
            Err(_) => {
                out.fail(format!(
                    "a request took longer than {} s",
                    REQUEST_TIMEOUT.as_secs()
                ));
                return out;
            }
        }
    }
}

/// One checked request; for a fresh connection also whether its TLS handshake resumed.
async fn step(client: &Client, work: &mut Work) -> Result<Option<bool>, String> {
    match work {
        Work::H1(conn) => client.get_h1(conn).await.map(|()| None),
        Work::H2(sender) => client.get_h2(sender).await.map(|()| None),
        Work::Fresh => {
            let (mut conn, resumed) = client.open_h1().await?;
            client.get_h1(&mut conn).await?;
            // Dropping the connection here ends it: close_notify and FIN.
            Ok(Some(resumed))
        }
    }
}
