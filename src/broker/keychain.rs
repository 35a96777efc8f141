//! The OS keychain, through `keyring-core` and one store crate per platform: the Secret
//! Service over D-Bus on Linux and the BSDs (gnome-keyring, KeePassXC, KWallet's bridge), the
//! login Keychain on macOS, the Credential Manager on Windows.
//!
//! Every call here blocks (the Secret Service store runs its own D-Bus client to completion),
//! so async code must reach it through `spawn_blocking`. Errors are turned into messages by
//! variant only: some `keyring_core::Error` variants carry the raw secret bytes, and those must
//! never be formatted.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error};

use crate::secret::Secret;

/// The service name every Axtary item is filed under in the keychain.
pub const SERVICE: &str = "axtary";

/// An open keychain.
#[derive(Clone)]
pub struct Keychain {
    store: Arc<CredentialStore>,
    name: &'static str,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keychain")
            .field("name", &self.name)
            .finish()
    }
}

impl Keychain {
    /// Connects to this platform's keychain. Fails fast when there is none (no D-Bus session,
    /// no Secret Service on it): the cue for the file fallback.
    pub fn open() -> Result<Keychain, String> {
        open_platform()
    }

    /// A human name for where items live, e.g. "the Secret Service (D-Bus)".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads the item `user`; `Ok(None)` when it does not exist.
    pub fn get(&self, user: &str) -> Result<Option<Secret>, String> {
        let entry = self.entry(user)?;
        match entry.get_password() {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(describe(&e, "read")),
        }
    }

    /// Creates or replaces the item `user`.
    pub fn set(&self, user: &str, value: &Secret) -> Result<(), String> {
        let entry = self.entry(user)?;
        entry
            .set_password(value.expose())
            .map_err(|e| describe(&e, "write"))
    }

    /// Deletes the item `user`; true when there was one.
    pub fn delete(&self, user: &str) -> Result<bool, String> {
        let entry = self.entry(user)?;
        match entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(Error::NoEntry) => Ok(false),
            Err(e) => Err(describe(&e, "delete")),
        }
    }

    fn entry(&self, user: &str) -> Result<Entry, String> {
        Entry::new_in_store(&self.store, SERVICE, user).map_err(|e| describe(&e, "address"))
    }
}

/// A message for a keychain error. Variants that carry secret bytes are named, never shown.
fn describe(e: &Error, action: &str) -> String {
    match e {
        Error::PlatformFailure(inner) => format!("the keychain failed to {action} the item: {inner}"),
        Error::NoStorageAccess(inner) => format!(
            "the keychain refused access ({inner}); unlock it (e.g. log in to the desktop session) or set AXTARY_CREDENTIAL_STORE=file"
        ),
        Error::NoEntry => "the keychain has no such item".to_string(),
        // SECURITY: these variants hold the stored bytes; never format them.
        Error::BadEncoding(_) | Error::BadDataFormat(_, _) => {
            "the keychain item is not in the expected format: run `axtary disconnect` and connect again".to_string()
        }
        Error::Ambiguous(_) => {
            "the keychain holds several matching items: remove the extra `axtary` items with your keychain tool".to_string()
        }
        Error::TooLong(what, max) => format!("the keychain limits {what} to {max} bytes"),
        Error::Invalid(what, why) => format!("the keychain rejected {what}: {why}"),
        Error::NoDefaultStore => "no keychain store is set up".to_string(),
        Error::NotSupportedByStore(why) => format!("the keychain cannot {action} items: {why}"),
        Error::BadStoreFormat(why) => format!("the keychain is not in the expected format: {why}"),
        _ => format!("the keychain failed to {action} the item"),
    }
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
fn open_platform() -> Result<Keychain, String> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
    {
        return Err(
            "no D-Bus session (DBUS_SESSION_BUS_ADDRESS is not set), so no Secret Service"
                .to_string(),
        );
    }
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| {
        format!(
            "the Secret Service did not answer: {}",
            describe(&e, "open")
        )
    })?;
    Ok(Keychain {
        store,
        name: "the Secret Service (D-Bus)",
    })
}

#[cfg(target_os = "macos")]
fn open_platform() -> Result<Keychain, String> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| {
        format!(
            "the macOS Keychain did not answer: {}",
            describe(&e, "open")
        )
    })?;
    Ok(Keychain {
        store,
        name: "the macOS login Keychain",
    })
}

#[cfg(target_os = "windows")]
fn open_platform() -> Result<Keychain, String> {
    let store = windows_native_keyring_store::Store::new().map_err(|e| {
        format!(
            "the Windows Credential Manager did not answer: {}",
            describe(&e, "open")
        )
    })?;
    Ok(Keychain {
        store,
        name: "the Windows Credential Manager",
    })
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos",
    target_os = "windows"
)))]
fn open_platform() -> Result<Keychain, String> {
    Err("this platform has no supported keychain".to_string())
}
