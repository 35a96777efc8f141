//! `axtary connections`: the stored connections, metadata only (provider, scopes, expiry,
//! where the token lives). It never reads the keychain and never prints a secret.

use time::OffsetDateTime;

use super::Cli;
use crate::broker::store::{rfc3339, Storage, Store, StoreChoice};
use crate::error::CliError;

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let home = super::home()?;
    let choice = StoreChoice::from_env().map_err(CliError::Usage)?;
    let store = Store::new(home, choice);
    let list = store.list().map_err(CliError::Failed)?;
    let now = OffsetDateTime::now_utc();
    if cli.json {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                let mut v = c.to_json();
                v["expired"] = serde_json::Value::Bool(c.expires_at.is_some_and(|t| t <= now));
                v
            })
            .collect();
        super::print_json(&serde_json::json!({
            "credentialsFile": store.path().display().to_string(),
            "connections": items,
        }));
        return Ok(());
    }
    if list.is_empty() {
        println!("no connections (run `axtary connect linear` or `axtary connect slack`)");
        return Ok(());
    }
    println!(
        "{:<12} {:<8} {:<7} {:<26} {:<9} SCOPES",
        "CONNECTOR", "PROVIDER", "SOURCE", "EXPIRES", "STORAGE"
    );
    for c in &list {
        let expires = match c.expires_at {
            Some(t) if t <= now => format!("{} (expired)", rfc3339(t)),
            Some(t) => rfc3339(t),
            None => "never".to_string(),
        };
        let storage = match c.storage {
            Storage::Keyring => "keychain",
            Storage::File => "file",
        };
        println!(
            "{:<12} {:<8} {:<7} {:<26} {:<9} {}",
            c.connector,
            c.provider,
            c.source.as_str(),
            expires,
            storage,
            c.scopes.join(",")
        );
    }
    println!("credentials file: {}", store.path().display());
    Ok(())
}
