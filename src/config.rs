//! `axtary.yml`: raw YAML checked for syntax first, then resolved into a `Config` of real
//! values (socket addresses, paths, durations, compiled host lists).
//!
//! The parser is serde-saphyr: maintained, panic-free, and it reports exact line and column
//! for syntax errors, unknown keys and duplicate keys, which SPEC 3 requires of every config
//! error. Keys are camelCase and unknown keys are errors (`deny_unknown_fields` everywhere), so
//! a typo can never silently disable a rule. Values that need checking beyond their type are
//! read as `Spanned` so their errors point at the value too.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::connectors::Provider;
use crate::paths::Home;

/// The built-in default configuration (the same text as `config/axtary.yml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/axtary.yml");

/// Default listen address of the proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8877";
/// Default upstream timeout: connect plus response head.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default grace period for in-flight requests on SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

// ---------------------------------------------------------------------------------------------
// Raw YAML shape (syntax only)

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    version: Spanned<u32>,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    connectors: BTreeMap<String, RawConnector>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProxy {
    listen: Option<Spanned<String>>,
    unmatched: Option<Unmatched>,
    auth: Option<RawAuth>,
    admin: Option<Spanned<String>>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAuth {
    token_env: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUpstream {
    ca_file: Option<String>,
    #[serde(default)]
    resolve: BTreeMap<String, Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLedger {
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConnector {
    provider: Provider,
    mode: Option<GithubMode>,
    token_env: Option<String>,
    app_id_env: Option<String>,
    client_id_env: Option<String>,
    private_key_env: Option<String>,
    private_key_file_env: Option<String>,
    installation_id_env: Option<String>,
    hosts: Option<Spanned<Vec<String>>>,
    oauth: Option<RawOauth>,
    #[serde(default)]
    writes: WritesSetting,
    allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOauth {
    authorize_url: Option<String>,
    token_url: Option<String>,
    device_authorization_url: Option<String>,
    scopes: Option<Vec<String>>,
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRateLimit {
    per_minute: u32,
    burst: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Resolved configuration

/// What the proxy does with hosts that belong to no connector.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Blind CONNECT splice: no interception, no injection.
    #[default]
    Tunnel,
    /// `403 unmatched_host`.
    Deny,
}

/// How the GitHub connector gets its token.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GithubMode {
    /// A token from the broker or `tokenEnv`.
    #[default]
    Token,
    /// Installation tokens minted from a GitHub App key.
    App,
}

/// `writes:` guard setting (SPEC 7).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WritesSetting {
    #[default]
    Allow,
    Deny,
    DryRun,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from: a path, or "built-in default".
    pub source: String,
    pub proxy: ProxySettings,
    pub upstream: UpstreamSettings,
    /// None: the ledger is off.
    pub ledger: Option<PathBuf>,
    pub connectors: Vec<ConnectorConfig>,
}

#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub unmatched: Unmatched,
    /// Env var holding the proxy token clients must present.
    pub auth_token_env: Option<String>,
    pub admin: Option<SocketAddr>,
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub ca_file: Option<PathBuf>,
    /// `(host, port)` -> the TCP address to use instead of DNS.
    pub resolve: HashMap<(String, u16), SocketAddr>,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    pub name: String,
    pub provider: Provider,
    pub mode: GithubMode,
    pub token_env: String,
    pub app: AppSettings,
    /// Lower-case host names this connector intercepts (port 443).
    pub hosts: Vec<String>,
    pub oauth: OauthSettings,
    pub guard: GuardSettings,
    pub repositories: Vec<String>,
    pub permissions: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    pub app_id_env: Option<String>,
    pub client_id_env: Option<String>,
    pub private_key_env: Option<String>,
    pub private_key_file_env: Option<String>,
    pub installation_id_env: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct OauthSettings {
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_authorization_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub client_id_env: Option<String>,
    pub client_secret_env: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct GuardSettings {
    pub writes: WritesSetting,
    pub allow: Option<Vec<Located>>,
    pub deny: Vec<Located>,
    /// `(perMinute, burst)`.
    pub rate_limit: Option<(u32, u32)>,
}

/// A config value with where it was written, for errors found when it is compiled later
/// (guard patterns are compiled by the proxy, but their errors must still point at the line).
#[derive(Clone, Debug)]
pub struct Located {
    pub value: String,
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl Located {
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: Some(self.line),
            column: Some(self.column),
            message: message.into(),
        }
    }
}

/// A config error: always names the file, and line and column when the YAML has them.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads `--config FILE`, else `./axtary.yml`, else the built-in default.
    pub fn load(explicit: Option<&Path>, home: &Home) -> Result<Config, ConfigError> {
        let (path, source) = match explicit {
            Some(p) => (Some(p.to_path_buf()), p.display().to_string()),
            None if Path::new("axtary.yml").is_file() => {
                (Some(PathBuf::from("axtary.yml")), "axtary.yml".to_string())
            }
            None => (None, "built-in default".to_string()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError {
                file: source.clone(),
                line: None,
                column: None,
                message: format!("cannot read the config file: {e}"),
            })?,
            None => DEFAULT_CONFIG.to_string(),
        };
        let base_dir = path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Config::parse(&text, &source, &base_dir, home)
    }

    /// Parses and resolves YAML text. `file` names it in errors; relative paths are taken
    /// from `base_dir`.
    pub fn parse(
        text: &str,
        file: &str,
        base_dir: &Path,
        home: &Home,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location();
            ConfigError {
                file: file.to_string(),
                line: loc.map(|l| l.line()),
                column: loc.map(|l| l.column()),
                message: syntax_message(&e.to_string()),
            }
        })?;
        Resolver {
            file,
            base_dir,
            home,
        }
        .resolve(raw)
    }

    /// The connector whose hosts include `host` (lower-case, without port).
    pub fn connector_for_host(&self, host: &str) -> Option<&ConnectorConfig> {
        self.connectors
            .iter()
            .find(|c| c.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
    }
}

/// serde-saphyr's message starts with "error: line L column C: ..." and follows with a
/// snippet; we print our own `file:line:col:` prefix, so keep the message and the snippet.
fn syntax_message(display: &str) -> String {
    let mut lines = display.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop "line L column C: " which our prefix already says.
    let first = match first.find(": ") {
        Some(i) if first.starts_with("line ") => &first[i + 2..],
        _ => first,
    };
    let rest: Vec<&str> = lines
        .filter(|l| !l.trim_start().starts_with("-->"))
        .collect();
    if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}\n{}", rest.join("\n"))
    }
}

struct Resolver<'a> {
    file: &'a str,
    base_dir: &'a Path,
    home: &'a Home,
}

impl Resolver<'_> {
    fn err_at(&self, loc: &serde_saphyr::Location, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: Some(loc.line()),
            column: Some(loc.column()),
            message,
        }
    }

    fn err(&self, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: None,
            column: None,
            message,
        }
    }

    fn located(&self, s: &Spanned<String>) -> Located {
        Located {
            value: s.value.clone(),
            file: self.file.to_string(),
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }

    fn path(&self, raw: &str) -> PathBuf {
        let p = self.home.expand(raw);
        if p.is_relative() {
            self.base_dir.join(p)
        } else {
            p
        }
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.version.value != 1 {
            return Err(self.err_at(
                &raw.version.referenced,
                format!(
                    "unsupported config version {}: this axtary reads `version: 1`",
                    raw.version.value
                ),
            ));
        }

        let listen = match &raw.proxy.listen {
            Some(s) => s.value.parse::<SocketAddr>().map_err(|_| {
                self.err_at(
                    &s.referenced,
                    format!(
                        "proxy.listen `{}` is not an IP:port address (e.g. 127.0.0.1:8877)",
                        s.value
                    ),
                )
            })?,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| self.err("bad default".into()))?,
        };
        let admin = match &raw.proxy.admin {
            Some(s) => Some(s.value.parse::<SocketAddr>().map_err(|_| {
                self.err_at(
                    &s.referenced,
                    format!("proxy.admin `{}` is not an IP:port address", s.value),
                )
            })?),
            None => None,
        };

        let mut resolve = HashMap::new();
        for (key, target) in &raw.upstream.resolve {
            let (host, port) = split_host_port(key).ok_or_else(|| {
                self.err_at(
                    &target.referenced,
                    format!(
                        "upstream.resolve key `{key}` must be host:port, e.g. api.github.com:443"
                    ),
                )
            })?;
            let addr = target.value.parse::<SocketAddr>().map_err(|_| {
                self.err_at(
                    &target.referenced,
                    format!(
                        "upstream.resolve target `{}` must be IP:port, e.g. 127.0.0.1:9443",
                        target.value
                    ),
                )
            })?;
            resolve.insert((host.to_ascii_lowercase(), port), addr);
        }
        let timeout_secs = match &raw.upstream.timeout_secs {
            Some(t) if t.value == 0 => {
                return Err(self.err_at(
                    &t.referenced,
                    "upstream.timeoutSecs must be at least 1".to_string(),
                ))
            }
            Some(t) => t.value,
            None => DEFAULT_TIMEOUT_SECS,
        };

        let ledger = match raw.ledger.path.as_deref() {
            Some("off") => None,
            Some(p) => Some(self.path(p)),
            None => Some(self.home.ledger()),
        };

        let mut connectors = Vec::new();
        for (name, c) in raw.connectors {
            connectors.push(self.connector(name, c)?);
        }
        for (i, a) in connectors.iter().enumerate() {
            for b in &connectors[i + 1..] {
                if let Some(h) = a.hosts.iter().find(|h| b.hosts.contains(h)) {
                    return Err(self.err(format!(
                        "host `{h}` is claimed by both connectors `{}` and `{}`: give each host to one connector",
                        a.name, b.name
                    )));
                }
            }
        }

        Ok(Config {
            source: self.file.to_string(),
            proxy: ProxySettings {
                listen,
                unmatched: raw.proxy.unmatched.unwrap_or_default(),
                auth_token_env: raw.proxy.auth.map(|a| a.token_env),
                admin,
                shutdown_grace: Duration::from_secs(
                    raw.proxy
                        .shutdown_grace_secs
                        .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
                ),
            },
            upstream: UpstreamSettings {
                ca_file: raw.upstream.ca_file.as_deref().map(|p| self.path(p)),
                resolve,
                timeout: Duration::from_secs(timeout_secs),
            },
            ledger,
            connectors,
        })
    }

    fn connector(&self, name: String, c: RawConnector) -> Result<ConnectorConfig, ConfigError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(self.err(format!(
                "connector name `{name}` must be lower-case letters, digits, - or _ (it is a URL path segment in gateway mode)"
            )));
        }
        if c.mode.is_some() && c.provider != Provider::Github {
            return Err(self.err(format!(
                "connectors.{name}.mode applies only to provider: github"
            )));
        }
        let hosts = match &c.hosts {
            Some(h) => {
                if h.value.is_empty() {
                    return Err(self.err_at(
                        &h.referenced,
                        format!("connectors.{name}.hosts is empty: list at least one host or remove the key"),
                    ));
                }
                let mut out = Vec::new();
                for host in &h.value {
                    let host = host.trim().to_ascii_lowercase();
                    if host.is_empty() || host.contains(['/', ':', ' ', '*']) {
                        return Err(self.err_at(
                            &h.referenced,
                            format!("connectors.{name}.hosts entry `{host}` must be a bare host name like api.github.com"),
                        ));
                    }
                    out.push(host);
                }
                out
            }
            None => c
                .provider
                .default_hosts()
                .iter()
                .map(|h| h.to_string())
                .collect(),
        };
        let rate_limit = match &c.rate_limit {
            Some(r) if r.value.per_minute == 0 => {
                return Err(self.err_at(
                    &r.referenced,
                    format!("connectors.{name}.rateLimit.perMinute must be at least 1"),
                ))
            }
            Some(r) => {
                let burst = r
                    .value
                    .burst
                    .unwrap_or(r.value.per_minute.div_ceil(10).max(1));
                Some((r.value.per_minute, burst.max(1)))
            }
            None => None,
        };
        let guard = GuardSettings {
            writes: c.writes,
            allow: c
                .allow
                .as_ref()
                .map(|v| v.iter().map(|s| self.located(s)).collect()),
            deny: c.deny.iter().map(|s| self.located(s)).collect(),
            rate_limit,
        };
        let oauth = c.oauth.unwrap_or_default();
        Ok(ConnectorConfig {
            token_env: c
                .token_env
                .unwrap_or_else(|| c.provider.default_token_env().to_string()),
            mode: c.mode.unwrap_or_default(),
            app: AppSettings {
                app_id_env: c.app_id_env,
                client_id_env: c.client_id_env,
                private_key_env: c.private_key_env,
                private_key_file_env: c.private_key_file_env,
                installation_id_env: c.installation_id_env,
            },
            hosts,
            oauth: OauthSettings {
                authorize_url: oauth.authorize_url,
                token_url: oauth.token_url,
                device_authorization_url: oauth.device_authorization_url,
                scopes: oauth.scopes,
                client_id_env: oauth.client_id_env,
                client_secret_env: oauth.client_secret_env,
            },
            guard,
            repositories: c.repositories,
            permissions: c.permissions,
            provider: c.provider,
            name,
        })
    }
}

/// Splits `host:port` (IPv6 as `[::1]:443`) without breaking on the colons of an address.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let authority: http::uri::Authority = s.parse().ok()?;
    let port = authority.port_u16()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "axtary.yml", Path::new("/cfg"), &Home::at("/h"))
    }

    #[test]
    fn default_config_parses() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8877");
        assert_eq!(c.connectors.len(), 3);
        assert_eq!(
            c.connector_for_host("API.GITHUB.COM").unwrap().name,
            "github"
        );
        assert_eq!(c.ledger, Some(PathBuf::from("/h/ledger.jsonl")));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = parse("version: 1\nproxy:\n  listn: 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(3)));
        let shown = e.to_string();
        assert!(
            shown.starts_with("axtary.yml:3:3: unknown field `listn`"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = parse("version: 1\nproxy:\n  listen: nope\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(11)));
        let e = parse("version: 1\nupstream:\n  resolve:\n    api.github.com: 127.0.0.1:1\n")
            .unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        let e = parse("version: 2\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn resolve_and_paths() {
        let c = parse(
            "version: 1\nupstream:\n  caFile: certs/ca.pem\n  resolve:\n    api.github.com:443: 127.0.0.1:9443\n    '[::1]:443': '[::1]:8443'\nledger:\n  path: off\n",
        )
        .unwrap();
        assert_eq!(c.upstream.ca_file, Some(PathBuf::from("/cfg/certs/ca.pem")));
        assert_eq!(
            c.upstream.resolve[&("api.github.com".to_string(), 443)].to_string(),
            "127.0.0.1:9443"
        );
        assert!(c.upstream.resolve.contains_key(&("::1".to_string(), 443)));
        assert_eq!(c.ledger, None);
    }

    #[test]
    fn duplicate_hosts_rejected() {
        let e = parse(
            "version: 1\nconnectors:\n  a:\n    provider: github\n  b:\n    provider: github\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("claimed by both"), "{e}");
    }

    #[test]
    fn split_host_port_handles_ipv6() {
        assert_eq!(split_host_port("a.b:443"), Some(("a.b".to_string(), 443)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".to_string(), 80)));
        assert_eq!(split_host_port("a.b"), None);
    }
}
