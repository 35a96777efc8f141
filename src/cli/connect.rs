//! `axtary connect linear|slack`: browser OAuth into the broker (SPEC 5.1).
//!
//! Order matters and is part of the contract: every usage problem (unknown provider, missing
//! client id or secret, Slack without an https redirect) is reported before any port is bound
//! or browser opened; then the loopback port is bound (busy: exit 2); only then is the URL
//! printed and the browser opened. The code is exchanged locally with its PKCE verifier, the
//! tokens are stored (keychain, else the 0600 file), and only then does the browser get its
//! "connected" page. Metadata is printed, never a token. `--device` runs the RFC 8628 device
//! grant instead, for machines without a browser.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use oauth2::url::Url;
use time::OffsetDateTime;

use super::Cli;
use crate::broker::loopback::{self, Page};
use crate::broker::oauth::{Endpoints, Granted, OauthClient};
use crate::broker::store::{Connection, Source, Storage, Store, StoreChoice};
use crate::config::{Config, ConnectorConfig};
use crate::connectors::Provider;
use crate::error::CliError;
use crate::secret::Secret;

/// The default loopback port for the redirect.
pub const DEFAULT_REDIRECT_PORT: u16 = 7878;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// `linear` or `slack` (or the name of a connector of one of those providers).
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
    /// The OAuth client id (else read from the env var named by --client-id-env).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Env var holding the client id [default: AXTARY_<PROVIDER>_CLIENT_ID].
    #[arg(long, value_name = "NAME")]
    pub client_id_env: Option<String>,
    /// Env var holding the client secret [default: AXTARY_<PROVIDER>_CLIENT_SECRET].
    #[arg(long, value_name = "NAME")]
    pub client_secret_env: Option<String>,
    /// Loopback port that receives the browser's redirect (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_REDIRECT_PORT)]
    pub redirect_port: u16,
    /// Redirect URI to advertise instead of http://127.0.0.1:<port>/callback (e.g. an https
    /// tunnel to that port; Slack requires https).
    #[arg(long, value_name = "URL")]
    pub redirect_uri: Option<String>,
    /// Scopes to request, comma-separated (default: the connector's oauth.scopes, else the
    /// provider's).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Do not open a browser; only print the URL.
    #[arg(long)]
    pub no_browser: bool,
    /// Use the device grant (RFC 8628): print a code to enter on another device.
    #[arg(long)]
    pub device: bool,
    /// How long to wait for the sign-in.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout_secs: u64,
}

/// Everything checked before the flow starts.
struct Plan {
    connector: ConnectorConfig,
    endpoints: Endpoints,
    client_id: Secret,
    client_secret: Secret,
    client_id_env: String,
    client_secret_env: String,
    scopes: Vec<String>,
    store: Arc<Store>,
    config: Config,
}

pub fn run(cli: &Cli, args: &ConnectArgs) -> Result<(), CliError> {
    let plan = plan(cli, args)?;
    if args.device {
        let runtime = super::runtime()?;
        let conn = runtime.block_on(device_flow(&plan, args))?;
        return print_connected(cli, &plan, &conn);
    }

    // SPEC 5.1: Slack without an https redirect fails before any port or browser is opened.
    let redirect_override = match &args.redirect_uri {
        Some(uri) => Some(parse_redirect(uri)?),
        None => None,
    };
    if plan.endpoints.provider == Provider::Slack
        && redirect_override
            .as_ref()
            .is_none_or(|u| u.scheme() != "https")
    {
        return Err(CliError::Usage(format!(
            "Slack only redirects to https URLs, so `connect slack` needs --redirect-uri https://...: \
             run an https tunnel to the loopback port (e.g. `cloudflared tunnel --url http://127.0.0.1:{port}` or `ngrok http {port}`), \
             register https://<tunnel-host>/callback as a redirect URL in the Slack app, and pass it as --redirect-uri; \
             or skip OAuth: install the app in Slack, copy its bot token and set {} for the proxy",
            plan.connector.token_env,
            port = args.redirect_port
        )));
    }

    // Bind first: a busy port is a usage problem, reported before a browser opens.
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.redirect_port)))
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot listen on 127.0.0.1:{} for the OAuth redirect: {e}; stop whatever holds it or pick another port with --redirect-port (the redirect URI registered with the provider must match)",
                args.redirect_port
            ))
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot read the bound address: {e}")))?;
    let redirect = match redirect_override {
        Some(u) => u,
        None => Url::parse(&format!("http://127.0.0.1:{}/callback", bound.port()))
            .map_err(|e| CliError::Failed(format!("cannot build the redirect URI: {e}")))?,
    };
    let callback_path = match redirect.path() {
        "" => "/".to_string(),
        p => p.to_string(),
    };

    let runtime = super::runtime()?;
    let conn = runtime.block_on(browser_flow(&plan, args, listener, redirect, callback_path))?;
    // The "connected" page has been written; drop the runtime (and the listener) now.
    drop(runtime);
    print_connected(cli, &plan, &conn)
}

fn parse_redirect(uri: &str) -> Result<Url, CliError> {
    let url = Url::parse(uri).map_err(|e| {
        CliError::Usage(format!(
            "--redirect-uri `{uri}` is not a URL ({e}): pass e.g. https://my-tunnel.example/callback"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "--redirect-uri `{uri}` must be an http or https URL"
        )));
    }
    Ok(url)
}

/// Checks everything that can be checked before any port, browser or network is touched.
fn plan(cli: &Cli, args: &ConnectArgs) -> Result<Plan, CliError> {
    let home = super::home()?;
    let config = super::load_config(cli, &home)?;
    let connector = pick_connector(&config, &args.provider)?.clone();
    let endpoints = Endpoints::of(&connector).map_err(CliError::Usage)?;
    if args.timeout_secs == 0 {
        return Err(CliError::Usage(
            "--timeout-secs must be at least 1".to_string(),
        ));
    }
    let client_id_env = args
        .client_id_env
        .clone()
        .unwrap_or_else(|| endpoints.client_id_env.clone());
    let client_secret_env = args
        .client_secret_env
        .clone()
        .unwrap_or_else(|| endpoints.client_secret_env.clone());
    let client_id = match &args.client_id {
        Some(id) if !id.trim().is_empty() => Secret::new(id),
        _ => read_env(&client_id_env).ok_or_else(|| {
            CliError::Usage(format!(
                "no OAuth client id for {}: set {client_id_env} (or pass --client-id) to the client id of your {} OAuth app",
                connector.name,
                endpoints.provider.as_str()
            ))
        })?,
    };
    let client_secret = read_env(&client_secret_env).ok_or_else(|| {
        CliError::Usage(format!(
            "no OAuth client secret for {}: set {client_secret_env} to the client secret of your {} OAuth app (it is read from the environment, never stored)",
            connector.name,
            endpoints.provider.as_str()
        ))
    })?;
    crate::logging::register_secret(&client_secret);
    let scopes = match &args.scopes {
        Some(s) => s
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => endpoints.scopes.clone(),
    };
    if args.device && endpoints.device_authorization_url.is_none() {
        return Err(CliError::Usage(format!(
            "connector `{}` has no oauth.deviceAuthorizationUrl, so --device cannot be used: add it under connectors.{}.oauth in {}, or connect without --device",
            connector.name, connector.name, config.source
        )));
    }
    let choice = StoreChoice::from_env().map_err(CliError::Usage)?;
    let store = Arc::new(Store::new(home, choice));
    // An unreadable or unsafe credentials file, or a required keychain that does not answer,
    // fails now, before the user signs in.
    store.list().map_err(CliError::Failed)?;
    if choice == StoreChoice::Keyring {
        store.keychain().map_err(|why| {
            CliError::Failed(format!(
                "AXTARY_CREDENTIAL_STORE=keyring, but the OS keychain cannot be used: {why}; unlock or start it, or set AXTARY_CREDENTIAL_STORE=auto to fall back to the 0600 file"
            ))
        })?;
    }
    Ok(Plan {
        connector,
        endpoints,
        client_id,
        client_secret,
        client_id_env,
        client_secret_env,
        scopes,
        store,
        config,
    })
}

fn read_env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .map(Secret::new)
        .filter(|s| !s.is_empty())
}

/// The connector `arg` names: a connector of that name, else the one connector of that
/// provider.
pub fn pick_connector<'a>(config: &'a Config, arg: &str) -> Result<&'a ConnectorConfig, CliError> {
    let no_github = || {
        CliError::Usage(
            "there is no `connect github`: GitHub uses a GitHub App (`mode: app`) or a token in the env var named by tokenEnv".to_string(),
        )
    };
    if let Some(c) = config.connectors.iter().find(|c| c.name == arg) {
        if c.provider == Provider::Github {
            return Err(no_github());
        }
        return Ok(c);
    }
    let provider = match arg {
        "linear" => Provider::Linear,
        "slack" => Provider::Slack,
        "github" => return Err(no_github()),
        other => {
            return Err(CliError::Usage(format!(
                "`{other}` is not a provider `connect` supports: use linear or slack"
            )))
        }
    };
    let matching: Vec<&ConnectorConfig> = config
        .connectors
        .iter()
        .filter(|c| c.provider == provider)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::Usage(format!(
            "{} has no connector with `provider: {arg}`: add one under `connectors:`",
            config.source
        ))),
        many => Err(CliError::Usage(format!(
            "several connectors use provider {arg} ({}): name the one to connect",
            many.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn oauth_client(plan: &Plan) -> Result<OauthClient, CliError> {
    OauthClient::new(
        plan.endpoints.clone(),
        &plan.client_id,
        &plan.client_secret,
        &plan.config.upstream,
    )
    .map_err(CliError::Usage)
}

/// The authorization-code flow. Returns the stored connection.
async fn browser_flow(
    plan: &Plan,
    args: &ConnectArgs,
    listener: TcpListener,
    redirect: Url,
    callback_path: String,
) -> Result<Connection, CliError> {
    let client = oauth_client(plan)?;
    let (url, state, verifier) = client
        .authorize_url(redirect.as_str(), &plan.scopes)
        .map_err(CliError::Usage)?;
    let (mut callbacks, bound) = loopback::serve(listener, callback_path)
        .map_err(|e| CliError::Failed(format!("cannot serve the OAuth redirect listener: {e}")))?;

    eprintln!(
        "To connect {} ({}), open this URL in a browser and approve access:\n\n  {url}\n",
        plan.connector.name,
        plan.endpoints.provider.as_str()
    );
    eprintln!(
        "Waiting up to {} s for the redirect on http://{bound}{} ...",
        args.timeout_secs,
        redirect.path()
    );
    if !args.no_browser {
        open_browser(url.as_str());
    }

    let timeout = Duration::from_secs(args.timeout_secs);
    let cb = match tokio::time::timeout(timeout, callbacks.recv()).await {
        Ok(Some(cb)) => cb,
        Ok(None) => {
            return Err(CliError::Failed(
                "the redirect listener stopped before the browser came back: run the command again".to_string(),
            ))
        }
        Err(_) => {
            return Err(CliError::Failed(format!(
                "no redirect arrived within {} s: nothing was stored; run the command again (and finish the sign-in in time, or raise --timeout-secs)",
                args.timeout_secs
            )))
        }
    };

    if let Some(error) = cb.params.get("error").cloned() {
        let desc = cb
            .params
            .get("error_description")
            .map(|d| format!(" ({})", d.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        cb.respond(Page::failed(
            "Not connected",
            format!(
                "The provider answered {error}{desc}. Nothing was stored; you can close this tab."
            ),
        ))
        .await;
        return Err(CliError::Failed(format!(
            "{} refused the authorization: {error}{desc}; nothing was stored",
            plan.endpoints.provider.as_str()
        )));
    }
    // SECURITY: a callback whose state is not ours may be a forged redirect (CSRF): refuse it.
    if cb.params.get("state").map(String::as_str) != Some(state.secret().as_str()) {
        cb.respond(Page::failed(
            "Not connected",
            "The redirect's state does not match this sign-in, so it was refused. Nothing was stored.",
        ))
        .await;
        return Err(CliError::Failed(
            "the redirect's `state` does not match the one this sign-in sent (a stale tab or a forged redirect): nothing was stored; run the command again".to_string(),
        ));
    }
    let Some(code) = cb.params.get("code").cloned().filter(|c| !c.is_empty()) else {
        cb.respond(Page::failed(
            "Not connected",
            "The redirect carried no code. Nothing was stored.",
        ))
        .await;
        return Err(CliError::Failed(
            "the redirect carried no authorization code: nothing was stored; run the command again"
                .to_string(),
        ));
    };

    let granted = match client
        .exchange_code(&code, verifier, redirect.as_str())
        .await
    {
        Ok(g) => g,
        Err(e) => {
            cb.respond(Page::failed(
                "Not connected",
                "Exchanging the code for a token failed; see the terminal. Nothing was stored.",
            ))
            .await;
            return Err(CliError::Failed(format!(
                "exchanging the code failed: {}; nothing was stored",
                e.message
            )));
        }
    };
    match store_granted(plan, granted).await {
        Ok(conn) => {
            cb.respond(Page::ok(
                "Connected",
                format!(
                    "axtary is connected to {}. You can close this tab.",
                    plan.endpoints.provider.as_str()
                ),
            ))
            .await;
            Ok(conn)
        }
        Err(e) => {
            cb.respond(Page::failed(
                "Not connected",
                "The token could not be stored; see the terminal.",
            ))
            .await;
            Err(e)
        }
    }
}

/// The device grant (RFC 8628).
async fn device_flow(plan: &Plan, args: &ConnectArgs) -> Result<Connection, CliError> {
    let client = oauth_client(plan)?;
    let details = client.device_start(&plan.scopes).await.map_err(|e| {
        CliError::Failed(format!("starting the device sign-in failed: {}", e.message))
    })?;
    let uri = details.verification_uri().to_string();
    eprintln!(
        "To connect {} ({}), open {uri} on any device and enter the code:\n\n  {}\n",
        plan.connector.name,
        plan.endpoints.provider.as_str(),
        details.user_code().secret()
    );
    if let Some(complete) = details.verification_uri_complete() {
        eprintln!("(or open {} directly)", complete.secret());
    }
    let limit = Duration::from_secs(args.timeout_secs).min(details.expires_in());
    eprintln!(
        "Waiting up to {} s for approval (polling every {} s) ...",
        limit.as_secs(),
        details.interval().as_secs()
    );
    let granted = client.device_poll(&details, limit).await.map_err(|e| {
        CliError::Failed(format!(
            "the device sign-in failed: {}; nothing was stored",
            e.message
        ))
    })?;
    store_granted(plan, granted).await
}

/// Stores what was granted (blocking work off the async workers).
async fn store_granted(plan: &Plan, granted: Granted) -> Result<Connection, CliError> {
    let conn = Connection {
        connector: plan.connector.name.clone(),
        provider: plan.endpoints.provider.as_str().to_string(),
        source: Source::Oauth,
        scopes: granted
            .scopes
            .clone()
            .unwrap_or_else(|| plan.scopes.clone()),
        created_at: OffsetDateTime::now_utc(),
        expires_at: granted.expires_at,
        storage: Storage::File,
        client_id_env: Some(plan.client_id_env.clone()),
        client_secret_env: Some(plan.client_secret_env.clone()),
    };
    let store = plan.store.clone();
    let tokens = granted.tokens;
    tokio::task::spawn_blocking(move || store.lock()?.put(conn, &tokens))
        .await
        .map_err(|e| CliError::Failed(format!("storing the token failed: {e}")))?
        .map_err(|e| CliError::Failed(format!("the token could not be stored: {e}")))
}

fn print_connected(cli: &Cli, plan: &Plan, conn: &Connection) -> Result<(), CliError> {
    let location = match conn.storage {
        Storage::Keyring => match plan.store.keychain() {
            Ok(kc) => format!("the OS keychain ({})", kc.name()),
            Err(_) => "the OS keychain".to_string(),
        },
        Storage::File => format!("{} (mode 0600)", plan.store.path().display()),
    };
    if cli.json {
        let mut v = conn.to_json();
        v["credentialsFile"] = serde_json::Value::String(plan.store.path().display().to_string());
        super::print_json(&v);
    } else {
        println!(
            "connected {} ({}): scopes {}; {}; token stored in {location}",
            conn.connector,
            conn.provider,
            if conn.scopes.is_empty() {
                "(none reported)".to_string()
            } else {
                conn.scopes.join(",")
            },
            match conn.expires_at {
                Some(t) => format!("expires {}", crate::broker::store::rfc3339(t)),
                None => "no expiry".to_string(),
            }
        );
        eprintln!("a running `axtary proxy` picks it up when restarted");
    }
    Ok(())
}

/// Opens `url` with the platform's opener. Failing to open is not an error: the URL has been
/// printed already.
fn open_browser(url: &str) {
    #[cfg(target_os = "macos")]
    let mut cmd = {
        let mut c = std::process::Command::new("open");
        c.arg(url);
        c
    };
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]).arg(url);
        c
    };
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let mut cmd = {
        let mut c = std::process::Command::new("xdg-open");
        c.arg(url);
        c
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            // Reap it in the background so it never lingers as a zombie.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Err(e) => eprintln!("(could not open a browser: {e}; open the URL above yourself)"),
    }
}
