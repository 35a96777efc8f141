//! `axtary smoke [CONNECTOR...]`: one harmless real call per connector (GitHub
//! `GET /rate_limit`, Slack `POST /api/auth.test`, Linear `{ viewer { id } }`), sent through an
//! in-process proxy in gateway mode so it takes exactly the injection path an agent's requests
//! take. It reports status and latency per connector and never prints a secret or a body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Cli;
use crate::connectors::Provider;
use crate::error::CliError;

/// Bound on one smoke call, end to end (the proxy's own upstream timeout may be shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies larger than this are not read (the smoke answers are tiny).
const MAX_BODY: usize = 256 * 1024;

#[derive(Args, Debug)]
pub struct SmokeArgs {
    /// Connectors to try (default: every configured connector).
    #[arg(value_name = "CONNECTOR")]
    pub connectors: Vec<String>,
}

/// The harmless call for a provider: method, path, body.
fn call_for(provider: Provider) -> (http::Method, &'static str, Option<&'static str>) {
    match provider {
        Provider::Github => (http::Method::GET, "/rate_limit", None),
        Provider::Slack => (http::Method::POST, "/api/auth.test", None),
        Provider::Linear => (
            http::Method::POST,
            "/graphql",
            Some(r#"{"query":"{ viewer { id } }"}"#),
        ),
    }
}

/// What one smoke call found.
struct Outcome {
    name: String,
    provider: Provider,
    call: String,
    status: Option<u16>,
    latency_ms: u128,
    problem: Option<String>,
}

impl Outcome {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "provider": self.provider.as_str(),
            "call": self.call,
            "ok": self.problem.is_none(),
            "status": self.status,
            "latencyMs": self.latency_ms as u64,
            "problem": self.problem,
        })
    }
}

pub fn run(cli: &Cli, args: &SmokeArgs) -> Result<(), CliError> {
    let ephemeral: SocketAddr = ([127, 0, 0, 1], 0).into();
    let prepared = super::proxy::prepare(cli, Some(ephemeral))?;
    let mut chosen = Vec::new();
    for wanted in &args.connectors {
        match prepared
            .config
            .connectors
            .iter()
            .find(|c| &c.name == wanted)
        {
            Some(c) => chosen.push(c.clone()),
            None => {
                let names: Vec<&str> = prepared
                    .config
                    .connectors
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(CliError::Usage(format!(
                    "no connector named `{wanted}` in {}; configured: {}",
                    prepared.config.source,
                    names.join(", ")
                )));
            }
        }
    }
    if args.connectors.is_empty() {
        chosen = prepared.config.connectors.clone();
    }
    let runtime = super::runtime()?;
    let outcomes = runtime.block_on(async {
        let running = super::proxy::bind(&prepared).await?;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let token = prepared
            .proxy_token
            .as_ref()
            .map(|t| t.expose().to_string());
        let mut outcomes = Vec::new();
        for c in &chosen {
            outcomes.push(
                smoke_one(&client, running.addr, token.as_deref(), &c.name, c.provider).await,
            );
        }
        running.shutdown(Duration::from_secs(2)).await;
        Ok::<_, CliError>(outcomes)
    })?;
    let all_ok = outcomes.iter().all(|o| o.problem.is_none());
    if cli.json {
        super::print_json(&serde_json::json!({
            "ok": all_ok,
            "connectors": outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
        }));
    } else {
        for o in &outcomes {
            let status = o.status.map_or("-".to_string(), |s| s.to_string());
            match &o.problem {
                None => println!(
                    "{:<12} PASS  {status:>3}  {:>5} ms  {}",
                    o.name, o.latency_ms, o.call
                ),
                Some(p) => println!(
                    "{:<12} FAIL  {status:>3}  {:>5} ms  {}: {p}",
                    o.name, o.latency_ms, o.call
                ),
            }
        }
        if outcomes.is_empty() {
            println!("no connectors configured");
        }
    }
    if all_ok {
        Ok(())
    } else if cli.json {
        Err(CliError::Exit(1))
    } else {
        Err(CliError::Failed(
            "some smoke calls failed; `axtary doctor` shows each connector's credential".into(),
        ))
    }
}

async fn smoke_one<C>(
    client: &Client<C, Full<Bytes>>,
    proxy: SocketAddr,
    proxy_token: Option<&str>,
    name: &str,
    provider: Provider,
) -> Outcome
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let (method, path, body) = call_for(provider);
    let mut outcome = Outcome {
        name: name.to_string(),
        provider,
        call: format!("{method} {path}"),
        status: None,
        latency_ms: 0,
        problem: None,
    };
    // Gateway mode: `http://PROXY/<connector>/<path>` takes the same guard and injection
    // stages as an intercepted request.
    let uri = format!("http://{proxy}/{name}{path}");
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json");
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(t) = proxy_token {
        builder = builder.header(http::header::PROXY_AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match builder.body(Full::new(Bytes::from(body.unwrap_or("")))) {
        Ok(r) => r,
        Err(e) => {
            outcome.problem = Some(format!("cannot build the request: {e}"));
            return outcome;
        }
    };
    let started = Instant::now();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| crate::outbound::describe_client_error(&e))?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let result = tokio::time::timeout(CALL_TIMEOUT, exchange).await;
    outcome.latency_ms = started.elapsed().as_millis();
    let (parts, bytes) = match result {
        Err(_) => {
            outcome.problem = Some(format!("no answer within {} s", CALL_TIMEOUT.as_secs()));
            return outcome;
        }
        Ok(Err(e)) => {
            outcome.problem = Some(e);
            return outcome;
        }
        Ok(Ok(done)) => done,
    };
    outcome.status = Some(parts.status.as_u16());
    outcome.problem = judge(provider, &parts, &bytes);
    outcome
}

/// None when the answer means the credential works; otherwise what went wrong, built only
/// from error codes and messages (never from echoed headers or the body as a whole).
fn judge(provider: Provider, parts: &http::response::Parts, body: &[u8]) -> Option<String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(code) = parts
        .headers
        .get(crate::proxy::respond::X_AXTARY_ERROR)
        .and_then(|v| v.to_str().ok())
    {
        let message = json
            .as_ref()
            .and_then(|j| j["error"]["message"].as_str())
            .unwrap_or("");
        return Some(format!("axtary refused ({code}): {message}"));
    }
    if !parts.status.is_success() {
        let detail = json
            .as_ref()
            .and_then(|j| j["message"].as_str().or_else(|| j["error"].as_str()))
            .map(|m| format!(": {}", truncate(m)))
            .unwrap_or_default();
        return Some(format!(
            "the provider answered HTTP {}{detail}",
            parts.status
        ));
    }
    match provider {
        Provider::Github => None,
        // Slack answers errors as HTTP 200 with `"ok": false`.
        Provider::Slack => match json.as_ref().map(|j| &j["ok"]) {
            Some(serde_json::Value::Bool(true)) => None,
            Some(serde_json::Value::Bool(false)) => {
                let err = json
                    .as_ref()
                    .and_then(|j| j["error"].as_str())
                    .unwrap_or("unknown");
                Some(format!("Slack answered ok:false ({})", truncate(err)))
            }
            _ => Some("Slack's answer has no `ok` field".to_string()),
        },
        // GraphQL reports errors beside HTTP 200.
        Provider::Linear => match json.as_ref().map(|j| &j["errors"]) {
            Some(serde_json::Value::Array(errs)) if !errs.is_empty() => {
                let first = errs[0]["message"].as_str().unwrap_or("unknown");
                Some(format!("Linear answered errors: {}", truncate(first)))
            }
            Some(_) => None,
            None => Some("Linear's answer is not JSON".to_string()),
        },
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16) -> http::response::Parts {
        let (parts, _) = http::Response::builder()
            .status(status)
            .body(())
            .map(|r| r.into_parts())
            .unwrap_or_else(|_| http::Response::new(()).into_parts());
        parts
    }

    #[test]
    fn slack_ok_false_is_a_failure() {
        let p = judge(
            Provider::Slack,
            &parts(200),
            br#"{"ok":false,"error":"invalid_auth"}"#,
        );
        assert_eq!(p.as_deref(), Some("Slack answered ok:false (invalid_auth)"));
        assert!(judge(Provider::Slack, &parts(200), br#"{"ok":true}"#).is_none());
    }

    #[test]
    fn linear_graphql_errors_fail_and_data_passes() {
        assert!(judge(
            Provider::Linear,
            &parts(200),
            br#"{"data":{"viewer":{"id":"x"}}}"#
        )
        .is_none());
        assert!(judge(
            Provider::Linear,
            &parts(200),
            br#"{"errors":[{"message":"Authentication required"}]}"#
        )
        .is_some());
    }

    #[test]
    fn non_2xx_fails_with_the_provider_message() {
        let p = judge(
            Provider::Github,
            &parts(401),
            br#"{"message":"Bad credentials"}"#,
        );
        assert!(p.is_some_and(|p| p.contains("401") && p.contains("Bad credentials")));
    }
}
