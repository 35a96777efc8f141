//! `axtary doctor`: is everything in place for an agent to use the proxy? Per connector:
//! ready or not, the credential source, where a stored token lives (a plaintext file earns a
//! warning), expiry, and the one command that fixes what is wrong. Then the CA, the listen
//! port, the clock against a provider's `Date` (GitHub App JWTs break on skew) and whether the
//! current shell would route an agent through the proxy. Exit 0 only when every connector is
//! ready; the other checks warn. It never creates anything and never prints a secret.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

use super::Cli;
use crate::broker::store::{rfc3339, Storage, Store, StoreChoice};
use crate::broker::{Broker, CredentialSource};
use crate::config::{Config, ConnectorConfig, GithubMode};
use crate::connectors::Provider;
use crate::error::CliError;
use crate::paths::Home;

/// Bound on the clock probe; an unreachable provider is a note, not a failure.
const DATE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on asking whatever holds the listen port who it is.
const PORT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Skew beyond this is worth a warning (GitHub rejects JWTs issued in its future).
const SKEW_WARN_SECS: i64 = 30;
/// The env vars that point clients at a CA bundle.
const CA_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
];

/// One connector's state.
struct ConnectorReport {
    name: String,
    provider: Provider,
    ready: bool,
    source: Option<CredentialSource>,
    storage: Option<Storage>,
    expires_at: Option<OffsetDateTime>,
    problem: Option<String>,
    warning: Option<String>,
    fix: Option<String>,
}

/// A check that is not about a connector: ok, a warning, or a note.
struct Check {
    ok: bool,
    detail: String,
    fix: Option<String>,
    extra: serde_json::Value,
}

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let home = super::home()?;
    let config = super::load_config(cli, &home)?;
    let connectors = connector_reports(&config, &home)?;
    let ca = ca_check(&home);
    let port = port_check(config.proxy.listen);
    let clock = clock_check(&config)?;
    let shell = shell_check(&config, &home);
    let proxy_auth = proxy_auth_check(&config);
    let all_ready = connectors.iter().all(|c| c.ready);

    if cli.json {
        let mut checks = serde_json::json!({
            "ca": check_json(&ca),
            "listen": check_json(&port),
            "clock": check_json(&clock),
            "shell": check_json(&shell),
        });
        if let Some(a) = &proxy_auth {
            checks["proxyAuth"] = check_json(a);
        }
        super::print_json(&serde_json::json!({
            "ok": all_ready,
            "config": config.source,
            "home": home.root().display().to_string(),
            "connectors": connectors.iter().map(connector_json).collect::<Vec<_>>(),
            "checks": checks,
        }));
    } else {
        println!("config: {}", config.source);
        for c in &connectors {
            print_connector(c);
        }
        if connectors.is_empty() {
            println!("no connectors configured: add one to the config (see the README)");
        }
        print_check("CA", &ca);
        print_check("listen", &port);
        print_check("clock", &clock);
        print_check("shell", &shell);
        if let Some(a) = &proxy_auth {
            print_check("proxy auth", a);
        }
    }
    if all_ready {
        Ok(())
    } else if cli.json {
        Err(CliError::Exit(1))
    } else {
        let n = connectors.iter().filter(|c| !c.ready).count();
        Err(CliError::Failed(format!(
            "{n} connector(s) not ready: run the fix shown for each"
        )))
    }
}

fn connector_reports(config: &Config, home: &Home) -> Result<Vec<ConnectorReport>, CliError> {
    let choice = StoreChoice::from_env().map_err(CliError::Usage)?;
    let store = std::sync::Arc::new(Store::new(home.clone(), choice));
    let store_path = store.path().display().to_string();
    let broker = Broker::load(config, store).map_err(CliError::Failed)?;
    let now = OffsetDateTime::now_utc();
    Ok(config
        .connectors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let d = broker.details(i);
            let ready = d.source.is_some();
            let mut warning = None;
            if d.storage == Some(Storage::File) && d.source == Some(CredentialSource::Broker) {
                warning = Some(format!(
                    "the token is stored in a plaintext file ({store_path}, mode 0600): with a keychain (Secret Service) available, run `axtary disconnect {0}` and `axtary connect {0}` to move it there",
                    c.name
                ));
            }
            if ready {
                if let Some(t) = d.expires_at.filter(|t| *t <= now) {
                    let note = format!(
                        "the stored token expired at {}; it is refreshed on first use",
                        rfc3339(t)
                    );
                    warning = Some(match warning {
                        Some(w) => format!("{w}; {note}"),
                        None => note,
                    });
                }
            }
            ConnectorReport {
                name: c.name.clone(),
                provider: c.provider,
                ready,
                source: d.source,
                storage: d.storage,
                expires_at: d.expires_at,
                fix: (!ready).then(|| fix_for(c)),
                problem: if ready { None } else { d.problem },
                warning,
            }
        })
        .collect())
}

/// The one command that gets a connector a credential.
fn fix_for(c: &ConnectorConfig) -> String {
    if c.mode == GithubMode::App {
        let names: Vec<&str> = [
            &c.app.app_id_env,
            &c.app.client_id_env,
            &c.app.private_key_env,
            &c.app.private_key_file_env,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        return format!(
            "export the GitHub App settings the connector names ({}) and start axtary again",
            names.join(", ")
        );
    }
    match c.provider {
        Provider::Linear | Provider::Slack => format!("axtary connect {}", c.name),
        Provider::Github => format!("export {}=<token>", c.token_env),
    }
}

fn connector_json(c: &ConnectorReport) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "provider": c.provider.as_str(),
        "ready": c.ready,
        "source": c.source.map(CredentialSource::as_str),
        "storage": c.storage.map(storage_name),
        "plaintext": c.storage == Some(Storage::File),
        "expiresAt": c.expires_at.map(rfc3339),
        "problem": c.problem,
        "warning": c.warning,
        "fix": c.fix,
    })
}

fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Keyring => "keychain",
        Storage::File => "file",
    }
}

fn print_connector(c: &ConnectorReport) {
    if c.ready {
        let mut parts = vec![format!(
            "source {}",
            c.source.map(CredentialSource::as_str).unwrap_or("?")
        )];
        if let Some(s) = c.storage {
            parts.push(match s {
                Storage::Keyring => "stored in the keychain".to_string(),
                Storage::File => "stored in a PLAINTEXT file".to_string(),
            });
        }
        if let Some(t) = c.expires_at {
            parts.push(format!("expires {}", rfc3339(t)));
        }
        println!("connector {}: ready ({})", c.name, parts.join(", "));
    } else {
        println!(
            "connector {}: NOT READY: {}",
            c.name,
            c.problem.as_deref().unwrap_or("no credential")
        );
    }
    if let Some(w) = &c.warning {
        println!("  warning: {w}");
    }
    if let Some(f) = &c.fix {
        println!("  fix: {f}");
    }
}

fn check_json(c: &Check) -> serde_json::Value {
    let mut v = serde_json::json!({"ok": c.ok, "detail": c.detail, "fix": c.fix});
    if let (Some(map), serde_json::Value::Object(extra)) = (v.as_object_mut(), &c.extra) {
        for (k, val) in extra {
            map.insert(k.clone(), val.clone());
        }
    }
    v
}

fn print_check(label: &str, c: &Check) {
    let mark = if c.ok { "ok" } else { "WARNING" };
    println!("{label}: {mark}: {}", c.detail);
    if let Some(f) = &c.fix {
        println!("  fix: {f}");
    }
}

fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn ca_check(home: &Home) -> Check {
    let cert = home.ca_cert();
    let key = home.ca_key();
    let cert_mode = mode_of(&cert);
    let key_mode = mode_of(&key);
    let mut extra = serde_json::json!({
        "path": cert.display().to_string(),
        "present": cert_mode.is_some() && key_mode.is_some(),
        "certMode": cert_mode.map(|m| format!("{m:o}")),
        "keyMode": key_mode.map(|m| format!("{m:o}")),
        "expiresAt": null,
    });
    if cert_mode.is_none() || key_mode.is_none() {
        return Check {
            ok: false,
            detail: format!("no CA at {} yet", cert.display()),
            fix: Some("axtary ca init".to_string()),
            extra,
        };
    }
    if let Some(m) = key_mode.filter(|m| m & 0o077 != 0) {
        return Check {
            ok: false,
            detail: format!(
                "the CA key {} is readable by group or others (mode {m:o})",
                key.display()
            ),
            fix: Some(format!("chmod 600 {}", key.display())),
            extra,
        };
    }
    let not_after = std::fs::read_to_string(&cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| cert_not_after(&pem));
    match not_after {
        Err(e) => Check {
            ok: false,
            detail: format!("the CA certificate {} cannot be read: {e}", cert.display()),
            fix: Some("move the ca directory aside and run `axtary ca init`".to_string()),
            extra,
        },
        Ok(t) => {
            extra["expiresAt"] = rfc3339(t).into();
            let now = OffsetDateTime::now_utc();
            if t <= now {
                Check {
                    ok: false,
                    detail: format!("the CA certificate expired at {}", rfc3339(t)),
                    fix: Some("move the ca directory aside and run `axtary ca init`".to_string()),
                    extra,
                }
            } else {
                Check {
                    ok: true,
                    detail: format!(
                        "{} (key mode {:o}), expires {}",
                        cert.display(),
                        key_mode.unwrap_or(0),
                        rfc3339(t)
                    ),
                    fix: None,
                    extra,
                }
            }
        }
    }
}

fn port_check(listen: SocketAddr) -> Check {
    let extra = serde_json::json!({"address": listen.to_string()});
    if listen.port() == 0 {
        return Check {
            ok: true,
            detail: format!("{listen}: port 0, each start picks a free port"),
            fix: None,
            extra,
        };
    }
    match TcpListener::bind(listen) {
        Ok(l) => {
            drop(l);
            let mut extra = extra;
            extra["state"] = "free".into();
            Check {
                ok: true,
                detail: format!("{listen} is free"),
                fix: None,
                extra,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let mut extra = extra;
            if probe_is_axtary(listen) {
                extra["state"] = "axtary".into();
                Check {
                    ok: true,
                    detail: format!("{listen} is held by a running axtary proxy"),
                    fix: None,
                    extra,
                }
            } else {
                extra["state"] = "other".into();
                Check {
                    ok: false,
                    detail: format!("{listen} is held by another program"),
                    fix: Some(
                        "stop it, or set proxy.listen (or `axtary proxy --listen`) to a free port"
                            .to_string(),
                    ),
                    extra,
                }
            }
        }
        Err(e) => Check {
            ok: false,
            detail: format!("cannot listen on {listen}: {e}"),
            fix: Some("set proxy.listen to an address this machine has".to_string()),
            extra,
        },
    }
}

/// True when whatever listens at `addr` answers `GET /healthz` like an axtary proxy.
fn probe_is_axtary(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, PORT_PROBE_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PORT_PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PORT_PROBE_TIMEOUT));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(16 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200") && text.contains("\"status\":\"ok\"")
}

/// The `notAfter` of the first certificate in `pem`.
fn cert_not_after(pem: &str) -> Result<OffsetDateTime, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not valid PEM ({e})"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("not a valid certificate ({e})"))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Compares our clock with the `Date` of the first connector's first host.
fn clock_check(config: &Config) -> Result<Check, CliError> {
    let Some(host) = config.connectors.first().and_then(|c| c.hosts.first()) else {
        return Ok(Check {
            ok: true,
            detail: "skipped: no connector host to ask".to_string(),
            fix: None,
            extra: serde_json::json!({"skewSecs": null}),
        });
    };
    let runtime = super::runtime()?;
    let probed = runtime.block_on(async {
        let client = crate::outbound::https_client(&config.upstream)?;
        let req = http::Request::builder()
            .method(http::Method::HEAD)
            .uri(format!("https://{host}/"))
            .header(http::header::USER_AGENT, "axtary-doctor")
            .body(crate::outbound::full(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        // Only the head matters: the body (if any) is never read, so a server that sends a
        // sloppy HEAD answer still gives its Date.
        let resp = tokio::time::timeout(DATE_PROBE_TIMEOUT, client.request(req))
            .await
            .map_err(|_| format!("no answer within {} s", DATE_PROBE_TIMEOUT.as_secs()))?
            .map_err(|e| crate::outbound::describe_client_error(&e))?;
        Ok::<_, String>(resp.headers().clone())
    });
    let host = host.clone();
    Ok(match probed {
        Err(e) => Check {
            ok: true,
            detail: format!("skipped: {host} could not be reached ({e})"),
            fix: None,
            extra: serde_json::json!({"host": host, "skewSecs": null}),
        },
        Ok(headers) => {
            let date = headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date);
            match date {
                None => Check {
                    ok: true,
                    detail: format!("skipped: {host} sent no usable Date header"),
                    fix: None,
                    extra: serde_json::json!({"host": host, "skewSecs": null}),
                },
                Some(theirs) => {
                    let skew = (theirs - OffsetDateTime::now_utc()).whole_seconds();
                    let extra = serde_json::json!({"host": host, "skewSecs": skew});
                    if skew.abs() > SKEW_WARN_SECS {
                        Check {
                            ok: false,
                            detail: format!(
                                "this clock differs from {host}'s by {skew} s (GitHub App JWTs are rejected when it is off)"
                            ),
                            fix: Some("enable time sync (e.g. `timedatectl set-ntp true`)".into()),
                            extra,
                        }
                    } else {
                        Check {
                            ok: true,
                            detail: format!("within {skew} s of {host}"),
                            fix: None,
                            extra,
                        }
                    }
                }
            }
        }
    })
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP servers send.
fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .map(|t| t.assume_utc())
}

/// Would an agent started from this shell go through the proxy, trusting its CA?
fn shell_check(config: &Config, home: &Home) -> Check {
    let proxy_var = ["HTTPS_PROXY", "https_proxy"].into_iter().find_map(|k| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (k, v))
    });
    let listen = config.proxy.listen;
    let proxy_ok = proxy_var.as_ref().map(|(_, v)| proxy_points_at(v, listen));
    let ca_pem = std::fs::read_to_string(home.ca_cert()).ok();
    let mut ca_vars = serde_json::Map::new();
    let mut trusted = false;
    for name in CA_VARS {
        let Ok(path) = std::env::var(name) else {
            continue;
        };
        let holds = ca_pem
            .as_deref()
            .is_some_and(|ca| file_holds_cert(&path, ca));
        trusted |= holds;
        ca_vars.insert(
            name.to_string(),
            serde_json::json!({"path": path, "holdsAxtaryCa": holds}),
        );
    }
    let routes = proxy_ok == Some(true) && trusted;
    let extra = serde_json::json!({
        "routesThroughProxy": routes,
        // The proxy URL may carry the proxy token: only say whether it matches.
        "httpsProxySet": proxy_var.is_some(),
        "httpsProxyMatches": proxy_ok,
        "caVars": ca_vars,
    });
    let fix = Some(
        "eval \"$(axtary env)\" in this shell, or start the agent with `axtary run -- CMD`"
            .to_string(),
    );
    let detail = match (proxy_ok, trusted) {
        (None, _) => "HTTPS_PROXY is not set: agents started here bypass the proxy".to_string(),
        (Some(false), _) => format!("HTTPS_PROXY does not point at the configured listen address {listen}"),
        (Some(true), false) => "HTTPS_PROXY points at the proxy, but no CA variable (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, ...) names a file holding the Axtary CA".to_string(),
        (Some(true), true) => format!("HTTPS_PROXY points at {listen} and the CA variables trust the Axtary CA"),
    };
    Check {
        ok: routes,
        detail,
        fix: (!routes).then_some(fix).flatten(),
        extra,
    }
}

/// True when the proxy URL `value` names `listen` (any host of a port-0 loopback listener).
fn proxy_points_at(value: &str, listen: SocketAddr) -> bool {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("HTTP://"))
        .unwrap_or(value);
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let Ok(addr) = hostport
        .replace("localhost", "127.0.0.1")
        .parse::<SocketAddr>()
    else {
        return false;
    };
    if listen.port() == 0 {
        return addr.ip() == listen.ip() || (addr.ip().is_loopback() && listen.ip().is_loopback());
    }
    addr == listen
        || (addr.port() == listen.port()
            && addr.ip().is_loopback()
            && (listen.ip().is_loopback() || listen.ip().is_unspecified()))
}

/// True when the PEM file at `path` contains the certificate `ca_pem`.
fn file_holds_cert(path: &str, ca_pem: &str) -> bool {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    match std::fs::read_to_string(path) {
        Ok(text) => squash(&text).contains(&squash(ca_pem)),
        Err(_) => false,
    }
}

fn proxy_auth_check(config: &Config) -> Option<Check> {
    let name = config.proxy.auth_token_env.as_ref()?;
    let set = std::env::var(name).is_ok_and(|v| !v.is_empty());
    Some(Check {
        ok: set,
        detail: if set {
            format!("proxy.auth is on and {name} is set")
        } else {
            format!("proxy.auth names {name}, which is not set: the proxy will not start")
        },
        fix: (!set).then(|| format!("export {name}=<a long random string>")),
        extra: serde_json::json!({"tokenEnv": name}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imf_fixdate() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(t.map(|t| t.unix_timestamp()), Some(784111777));
        assert!(parse_http_date("yesterday").is_none());
    }

    #[test]
    fn proxy_url_matching() {
        let listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
        assert!(proxy_points_at("http://127.0.0.1:8080", listen));
        assert!(proxy_points_at("http://axtary:tok@localhost:8080/", listen));
        assert!(!proxy_points_at("http://127.0.0.1:9090", listen));
        assert!(!proxy_points_at("http://proxy.corp:8080", listen));
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        assert!(proxy_points_at("http://127.0.0.1:45123", any));
    }
}
