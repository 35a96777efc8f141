//! The usual end-to-end setup in one value: a test CA, a mock provider, a temp home, a config
//! pointing at the mock, random canary credentials for the three connectors, and a running
//! proxy. Fields drop proxy first, so the process is gone before its home is removed.

use super::ca::TestCa;
use super::config::ConfigBuilder;
use super::curl::CurlOutput;
use super::mock::{Alpn, MockProvider};
use super::proxy::{Proxy, ProxyBuilder};
use super::{canary_github, canary_linear, canary_slack, Home, GITHUB_ENV, LINEAR_ENV, SLACK_ENV};

type ConfigFn = Box<dyn FnOnce(ConfigBuilder) -> ConfigBuilder>;
type ProxyFn = Box<dyn FnOnce(ProxyBuilder) -> ProxyBuilder>;

/// A running proxy in front of a mock provider.
pub struct Stack {
    pub proxy: Proxy,
    pub mock: MockProvider,
    pub home: Home,
    pub ca: TestCa,
    /// The credential the proxy holds per connector (`None` when its env var was left unset).
    pub github: Option<String>,
    pub slack: Option<String>,
    pub linear: Option<String>,
}

impl Stack {
    /// The default stack: both ALPN protocols, default config, all three credentials.
    pub fn start() -> Stack {
        Stack::builder().start()
    }

    pub fn builder() -> StackBuilder {
        StackBuilder {
            alpn: Alpn::H2AndHttp1,
            mock_names: None,
            config: Vec::new(),
            proxy: Vec::new(),
            github: Some(canary_github()),
            slack: Some(canary_slack()),
            linear: Some(canary_linear()),
        }
    }

    /// The GitHub credential; panics when the stack was built without one.
    pub fn github_token(&self) -> &str {
        self.github.as_deref().expect("stack has a GitHub token")
    }

    pub fn slack_token(&self) -> &str {
        self.slack.as_deref().expect("stack has a Slack token")
    }

    pub fn linear_token(&self) -> &str {
        self.linear.as_deref().expect("stack has a Linear token")
    }

    /// Every credential the proxy holds.
    pub fn secrets(&self) -> Vec<String> {
        [&self.github, &self.slack, &self.linear]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// curl through the proxy, trusting its CA.
    pub fn curl<I, S>(&self, args: I) -> CurlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.proxy.curl(args)
    }
}

/// Options for a `Stack`.
pub struct StackBuilder {
    alpn: Alpn,
    mock_names: Option<Vec<String>>,
    config: Vec<ConfigFn>,
    proxy: Vec<ProxyFn>,
    github: Option<String>,
    slack: Option<String>,
    linear: Option<String>,
}

impl StackBuilder {
    pub fn alpn(mut self, alpn: Alpn) -> Self {
        self.alpn = alpn;
        self
    }

    /// DNS names on the mock's certificate instead of the provider hosts.
    pub fn mock_names(mut self, names: &[&str]) -> Self {
        self.mock_names = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Adjusts the config before it is written.
    pub fn config(mut self, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder + 'static) -> Self {
        self.config.push(Box::new(f));
        self
    }

    /// Adjusts the proxy command before it starts.
    pub fn proxy(mut self, f: impl FnOnce(ProxyBuilder) -> ProxyBuilder + 'static) -> Self {
        self.proxy.push(Box::new(f));
        self
    }

    /// Leaves the env var of `connector` (`github`, `slack`, `linear`) unset.
    pub fn without_token(mut self, connector: &str) -> Self {
        match connector {
            "github" => self.github = None,
            "slack" => self.slack = None,
            "linear" => self.linear = None,
            other => panic!("unknown connector {other}"),
        }
        self
    }

    /// Uses `value` as the credential of `connector`.
    pub fn token(mut self, connector: &str, value: &str) -> Self {
        let value = Some(value.to_string());
        match connector {
            "github" => self.github = value,
            "slack" => self.slack = value,
            "linear" => self.linear = value,
            other => panic!("unknown connector {other}"),
        }
        self
    }

    pub fn start(self) -> Stack {
        let ca = TestCa::new();
        let mut mock = MockProvider::builder(&ca).alpn(self.alpn);
        if let Some(names) = &self.mock_names {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            mock = mock.names(&names);
        }
        let mock = mock.start();
        let home = Home::new();
        let mut config = ConfigBuilder::new(&ca, &mock);
        for f in self.config {
            config = f(config);
        }
        let path = home.write_config(&config.build());
        let mut builder = home.proxy(&path);
        for (env, value) in [
            (GITHUB_ENV, &self.github),
            (SLACK_ENV, &self.slack),
            (LINEAR_ENV, &self.linear),
        ] {
            if let Some(v) = value {
                builder = builder.env(env, v);
            }
        }
        for f in self.proxy {
            builder = f(builder);
        }
        let proxy = builder.start();
        Stack {
            proxy,
            mock,
            home,
            ca,
            github: self.github,
            slack: self.slack,
            linear: self.linear,
        }
    }
}
