//! The usual setup for commands that start a proxy of their own (`run`, `smoke`, `doctor`): a
//! test CA, a mock provider, a temp home holding an `axtary.yml` that points at the mock, and
//! random canary tokens for the three connectors, handed only to the axtary process.

use std::path::PathBuf;
use std::time::Duration;

use super::ca::TestCa;
use super::config::ConfigBuilder;
use super::mock::MockProvider;
use super::{
    canary_github, canary_linear, canary_slack, run_bounded, Home, RunOutput, GITHUB_ENV,
    LINEAR_ENV, SLACK_ENV,
};

pub struct CliSetup {
    pub ca: TestCa,
    pub mock: MockProvider,
    pub home: Home,
    pub config: PathBuf,
    /// Env var name -> canary value, set on every axtary command run through `axtary`.
    pub tokens: Vec<(&'static str, String)>,
}

impl CliSetup {
    pub fn new() -> CliSetup {
        let ca = TestCa::new();
        let mock = MockProvider::start(&ca);
        let home = Home::new();
        let config = home.write_config(&ConfigBuilder::new(&ca, &mock).build());
        CliSetup {
            ca,
            mock,
            home,
            config,
            tokens: vec![
                (GITHUB_ENV, canary_github()),
                (SLACK_ENV, canary_slack()),
                (LINEAR_ENV, canary_linear()),
            ],
        }
    }

    /// The canary held in `env` ("" when unset).
    pub fn token(&self, env: &str) -> &str {
        self.tokens
            .iter()
            .find(|(k, _)| *k == env)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    pub fn set(&mut self, env: &str, value: String) {
        for (k, v) in &mut self.tokens {
            if *k == env {
                *v = value.clone();
            }
        }
    }

    pub fn unset(&mut self, env: &str) {
        self.tokens.retain(|(k, _)| *k != env);
    }

    /// Runs `axtary SUBCOMMAND --config <config> ARGS...` with the tokens in its environment,
    /// bounded by `timeout`, and checks that no token appears in what it printed.
    pub fn axtary(
        &self,
        subcommand: &str,
        args: &[&str],
        extra_env: &[(&str, String)],
        timeout: Duration,
    ) -> RunOutput {
        let mut cmd = self.home.command([subcommand, "--config"]);
        cmd.arg(&self.config).args(args);
        for (k, v) in &self.tokens {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = run_bounded(cmd, timeout);
        for (_, token) in &self.tokens {
            assert!(!out.stdout().contains(token.as_str()), "{}", out.stdout());
            assert!(!out.stderr().contains(token.as_str()), "{}", out.stderr());
        }
        out
    }
}

impl Default for CliSetup {
    fn default() -> Self {
        CliSetup::new()
    }
}
