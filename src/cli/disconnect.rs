//! `axtary disconnect PROVIDER`: removes a stored connection, both its keychain item and its
//! entry in `credentials.json`. Prints what was removed (metadata only).

use std::sync::Arc;

use clap::Args;

use super::Cli;
use crate::broker::store::{Store, StoreChoice};
use crate::error::CliError;

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// `linear` or `slack`, or the name of the connector.
    #[arg(value_name = "PROVIDER")]
    pub provider: String,
}

pub fn run(cli: &Cli, args: &DisconnectArgs) -> Result<(), CliError> {
    let home = super::home()?;
    let choice = StoreChoice::from_env().map_err(CliError::Usage)?;
    let store = Arc::new(Store::new(home.clone(), choice));
    let stored = store.list().map_err(CliError::Failed)?;
    // A stored connector name first (it may no longer be in the config), else the config's
    // connector for that provider.
    let name = if stored.iter().any(|c| c.connector == args.provider) {
        args.provider.clone()
    } else {
        let config = super::load_config(cli, &home)?;
        super::connect::pick_connector(&config, &args.provider)?
            .name
            .clone()
    };
    let removed = store
        .lock()
        .and_then(|locked| locked.remove(&name))
        .map_err(CliError::Failed)?;
    let Some(conn) = removed else {
        return Err(CliError::Failed(format!(
            "`{name}` is not connected: nothing to remove (see `axtary connections`)"
        )));
    };
    if cli.json {
        super::print_json(&serde_json::json!({ "removed": conn.to_json() }));
    } else {
        println!(
            "disconnected {} ({}): removed its {} and its entry in {}",
            conn.connector,
            conn.provider,
            match conn.storage {
                crate::broker::store::Storage::Keyring => "keychain item",
                crate::broker::store::Storage::File => "token",
            },
            store.path().display()
        );
    }
    Ok(())
}
