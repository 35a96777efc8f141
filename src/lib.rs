//! Axtary: a local credential proxy for AI agents. The agent never holds the token.
//!
//! # Layout
//!
//! Data flows one way, and each module uses only those above it in this list:
//!
//! - `secret`, `error`, `paths`: the vocabulary (redacted secrets, wire errors, state files).
//! - `config`: `axtary.yml`, syntax first, then resolved into real values.
//! - `connectors`: what each provider needs (hosts, header format, GraphQL paths).
//! - `outbound`: every outbound HTTPS client (resolve overrides, extra roots, verification).
//! - `redact`, `logging`: secret scrubbing for response bodies and for log output.
//! - `broker`: which credential each connector injects, and from where.
//! - `ledger`: the append-only hash-chained audit log.
//! - `proxy`: accept -> classify -> intercept -> guard -> inject -> forward.
//! - `cli`: one module per subcommand; `main.rs` only dispatches and picks the exit code.
#![forbid(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod error;
pub mod ledger;
pub mod logging;
pub mod outbound;
pub mod paths;
pub mod proxy;
pub mod redact;
pub mod secret;
