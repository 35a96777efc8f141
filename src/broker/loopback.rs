//! The loopback listener that receives the browser's OAuth redirect (`/callback?code=..&state=..`).
//!
//! The socket is bound by the caller before anything else happens, so a busy port is reported
//! before a browser opens. Each callback is handed to the caller together with a way to answer
//! the browser: the page is sent only once the code has been exchanged and stored, so "connected"
//! is true when the user reads it. Connections are HTTP/1.1 without keep-alive, so a connection
//! ends with its response and the caller can wait for the page to be written before exiting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, Mutex};

/// A page shown in the browser after the callback.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl Page {
    pub fn ok(title: impl Into<String>, message: impl Into<String>) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.into(),
            message: message.into(),
        }
    }

    pub fn failed(title: impl Into<String>, message: impl Into<String>) -> Page {
        Page {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            message: message.into(),
        }
    }

    fn html(&self) -> String {
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body style=\"font-family: sans-serif; margin: 3em\"><h1 id=\"result\">{t}</h1><p>{m}</p></body></html>\n",
            t = escape(&self.title),
            m = escape(&self.message)
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One request to the callback path.
pub struct Callback {
    /// The query parameters (`code`, `state`, `error`, ...).
    pub params: HashMap<String, String>,
    page: oneshot::Sender<Page>,
    written: oneshot::Receiver<()>,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: the parameters hold the authorization code.
        f.debug_struct("Callback").finish_non_exhaustive()
    }
}

impl Callback {
    /// Answers the browser and waits (bounded) until the page has been written.
    pub async fn respond(self, page: Page) {
        let _ = self.page.send(page);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), self.written).await;
    }
}

/// Serves `listener` until dropped: requests to `path` become `Callback`s on the returned
/// channel; anything else gets a 404.
pub fn serve(
    listener: std::net::TcpListener,
    path: String,
) -> std::io::Result<(mpsc::Receiver<Callback>, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (tx, rx) = mpsc::channel(4);
    let path = Arc::new(path);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let served = Arc::new(AtomicBool::new(false));
                let (written_tx, written_rx) = oneshot::channel::<()>();
                let written_rx = Arc::new(Mutex::new(Some(written_rx)));
                let svc = {
                    let served = served.clone();
                    service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        let path = path.clone();
                        let served = served.clone();
                        let written_rx = written_rx.clone();
                        async move {
                            Ok::<_, Infallible>(handle(req, &path, &tx, &served, &written_rx).await)
                        }
                    })
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                if served.load(Ordering::SeqCst) {
                    let _ = written_tx.send(());
                }
            });
        }
    });
    Ok((rx, addr))
}

async fn handle(
    req: Request<Incoming>,
    path: &str,
    tx: &mpsc::Sender<Callback>,
    served: &AtomicBool,
    written: &Mutex<Option<oneshot::Receiver<()>>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != path {
        return page_response(&Page {
            status: StatusCode::NOT_FOUND,
            title: "Not found".into(),
            message: format!("This is the axtary OAuth callback listener; it answers only {path}."),
        });
    }
    let params: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            oauth2::url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let Some(written) = written.lock().await.take() else {
        return page_response(&Page::failed(
            "Already handled",
            "This connection already carried a callback.",
        ));
    };
    let (page_tx, page_rx) = oneshot::channel();
    served.store(true, Ordering::SeqCst);
    let cb = Callback {
        params,
        page: page_tx,
        written,
    };
    if tx.send(cb).await.is_err() {
        return page_response(&Page::failed(
            "Not waiting",
            "axtary is no longer waiting for this callback; run `axtary connect` again.",
        ));
    }
    match page_rx.await {
        Ok(page) => page_response(&page),
        Err(_) => page_response(&Page::failed(
            "Already handled",
            "axtary already handled a callback for this sign-in; this one was ignored.",
        )),
    }
}

fn page_response(page: &Page) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(page.html())));
    *resp.status_mut() = page.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    // SECURITY: the callback URL holds the code; keep it out of any Referer.
    resp.headers_mut().insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    resp
}
