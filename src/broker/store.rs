//! Where connections live (SPEC 2): metadata per connector in `$AXTARY_HOME/credentials.json`
//! (0600), the tokens themselves in the OS keychain, or in that file when no keychain answers.
//!
//! Every change happens under an exclusive lock on `credentials.lock`, re-reads the file after
//! taking the lock (another process may have changed it), and replaces the file atomically: a
//! new 0600 temp file, fsync, rename, fsync of the directory. So two `connect` runs at once both
//! survive, a refresh in one process is seen by the next one to take the lock, and a crash never
//! leaves a torn file. A file that cannot be parsed is reported with its line and column and is
//! never overwritten; a file readable by group or others is refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::keychain::Keychain;
use crate::paths::{check_private_file, ensure_private_dir, Home};
use crate::secret::Secret;

/// The env var that picks where tokens go.
pub const STORE_ENV: &str = "AXTARY_CREDENTIAL_STORE";

/// `AXTARY_CREDENTIAL_STORE`: where new tokens are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// The keychain when it answers, else the file.
    Auto,
    /// The keychain or nothing.
    Keyring,
    /// The 0600 file; the keychain is never touched.
    File,
}

impl StoreChoice {
    /// Reads `AXTARY_CREDENTIAL_STORE` (unset or empty: `auto`).
    pub fn from_env() -> Result<StoreChoice, String> {
        match std::env::var(STORE_ENV) {
            Ok(v) => StoreChoice::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(StoreChoice::Auto),
            Err(_) => Err(format!(
                "{STORE_ENV} is not valid UTF-8: set it to auto, keyring or file"
            )),
        }
    }

    pub fn parse(value: &str) -> Result<StoreChoice, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(StoreChoice::Auto),
            "keyring" | "keychain" => Ok(StoreChoice::Keyring),
            "file" => Ok(StoreChoice::File),
            other => Err(format!(
                "{STORE_ENV}={other} is not a store: set it to auto, keyring or file"
            )),
        }
    }
}

/// Where one connection's tokens are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Keyring,
    File,
}

impl Storage {
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Keyring => "keyring",
            Storage::File => "file",
        }
    }
}

/// How a connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Oauth,
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Oauth => "oauth",
            Source::Manual => "manual",
        }
    }
}

/// A connection's metadata: everything but the tokens. Safe to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The connector it belongs to (the key in `credentials.json`).
    pub connector: String,
    pub provider: String,
    pub source: Source,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub storage: Storage,
    /// Env var NAMES the client id and secret were read from, so a refresh reads the same ones.
    pub client_id_env: Option<String>,
    pub client_secret_env: Option<String>,
}

impl Connection {
    /// The metadata as JSON (what `connections --json` prints): never a secret.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connector": self.connector,
            "provider": self.provider,
            "source": self.source.as_str(),
            "scopes": self.scopes,
            "createdAt": rfc3339(self.created_at),
            "expiresAt": self.expires_at.map(rfc3339),
            "storage": self.storage.as_str(),
        })
    }
}

/// The tokens of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
}

/// A stored connection with its tokens, or why the tokens cannot be had (keychain locked,
/// item gone, ...).
pub type Loaded = (Connection, Result<Tokens, String>);

/// Formats a time as RFC 3339 (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

// ---------------------------------------------------------------------------------------------
// The file's shape

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    version: u32,
    #[serde(default)]
    connections: BTreeMap<String, RawEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEntry {
    provider: String,
    source: Source,
    #[serde(default)]
    scopes: Vec<String>,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    storage: Storage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret_env: Option<String>,
    /// Only when `storage` is `file`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_secret",
        deserialize_with = "de_secret"
    )]
    access_token: Option<Secret>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_secret",
        deserialize_with = "de_secret"
    )]
    refresh_token: Option<Secret>,
}

/// The keychain item's value: both tokens in one item, so a rotation replaces them together.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeychainValue {
    #[serde(serialize_with = "ser_secret", deserialize_with = "de_secret")]
    access_token: Option<Secret>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_secret",
        deserialize_with = "de_secret"
    )]
    refresh_token: Option<Secret>,
}

fn ser_secret<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .map(Secret::new)
        .filter(|s| !s.is_empty()))
}

impl RawEntry {
    fn to_connection(&self, connector: &str, path: &Path) -> Result<Connection, String> {
        let time = |field: &str, v: &str| {
            OffsetDateTime::parse(v, &Rfc3339).map_err(|e| {
                format!(
                    "{}: connection `{connector}` has a {field} that is not an RFC 3339 time ({e}); fix it or run `axtary disconnect {connector}`",
                    path.display()
                )
            })
        };
        Ok(Connection {
            connector: connector.to_string(),
            provider: self.provider.clone(),
            source: self.source,
            scopes: self.scopes.clone(),
            created_at: time("createdAt", &self.created_at)?,
            expires_at: match &self.expires_at {
                Some(v) => Some(time("expiresAt", v)?),
                None => None,
            },
            storage: self.storage,
            client_id_env: self.client_id_env.clone(),
            client_secret_env: self.client_secret_env.clone(),
        })
    }

    fn from_connection(c: &Connection, tokens: Option<&Tokens>) -> RawEntry {
        RawEntry {
            provider: c.provider.clone(),
            source: c.source,
            scopes: c.scopes.clone(),
            created_at: rfc3339(c.created_at),
            expires_at: c.expires_at.map(rfc3339),
            storage: c.storage,
            client_id_env: c.client_id_env.clone(),
            client_secret_env: c.client_secret_env.clone(),
            access_token: tokens.map(|t| t.access.clone()),
            refresh_token: tokens.and_then(|t| t.refresh.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store

/// The credential store of one `AXTARY_HOME`.
pub struct Store {
    home: Home,
    choice: StoreChoice,
    keychain: OnceLock<Result<Keychain, String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path())
            .field("choice", &self.choice)
            .finish()
    }
}

impl Store {
    pub fn new(home: Home, choice: StoreChoice) -> Store {
        Store {
            home,
            choice,
            keychain: OnceLock::new(),
        }
    }

    /// `credentials.json`.
    pub fn path(&self) -> PathBuf {
        self.home.credentials()
    }

    pub fn choice(&self) -> StoreChoice {
        self.choice
    }

    fn lock_path(&self) -> PathBuf {
        self.home.root().join("credentials.lock")
    }

    /// The keychain, opened once per process. Blocking.
    pub fn keychain(&self) -> Result<&Keychain, String> {
        if self.choice == StoreChoice::File {
            return Err(format!("{STORE_ENV}=file: the keychain is not used"));
        }
        self.keychain
            .get_or_init(Keychain::open)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The keychain item name of a connector: the home is part of it, so two homes on one
    /// machine never share an item.
    fn item(&self, connector: &str) -> String {
        format!("{connector}@{}", self.home.root().display())
    }

    /// Every connection's metadata (no keychain access).
    pub fn list(&self) -> Result<Vec<Connection>, String> {
        let path = self.path();
        let doc = read_document(&path)?;
        doc.connections
            .iter()
            .map(|(name, raw)| raw.to_connection(name, &path))
            .collect()
    }

    /// One connection with its tokens. `Ok(None)` when the connector is not connected. The
    /// inner error says why the tokens cannot be had (keychain locked, gone, ...).
    pub fn get(&self, connector: &str) -> Result<Option<Loaded>, String> {
        let path = self.path();
        let doc = read_document(&path)?;
        let Some(raw) = doc.connections.get(connector) else {
            return Ok(None);
        };
        let conn = raw.to_connection(connector, &path)?;
        let tokens = self.tokens_of(&conn, raw);
        Ok(Some((conn, tokens)))
    }

    fn tokens_of(&self, conn: &Connection, raw: &RawEntry) -> Result<Tokens, String> {
        match conn.storage {
            Storage::File => match &raw.access_token {
                Some(access) => Ok(Tokens {
                    access: access.clone(),
                    refresh: raw.refresh_token.clone(),
                }),
                None => Err(format!(
                    "{}: connection `{}` says its token is in the file, but there is none: run `axtary connect {}` again",
                    self.path().display(),
                    conn.connector,
                    conn.provider
                )),
            },
            Storage::Keyring => {
                let kc = self.keychain().map_err(|why| {
                    format!(
                        "the token of `{}` is in the OS keychain, which cannot be used here: {why}",
                        conn.connector
                    )
                })?;
                let value = kc
                    .get(&self.item(&conn.connector))
                    .map_err(|why| format!("the token of `{}`: {why}", conn.connector))?
                    .ok_or_else(|| {
                        format!(
                            "the keychain has no token for `{}` (it was removed outside axtary): run `axtary connect {}` again",
                            conn.connector, conn.provider
                        )
                    })?;
                let parsed: KeychainValue = serde_json::from_str(value.expose()).map_err(|_| {
                    format!(
                        "the keychain item of `{}` is not in the expected format: run `axtary disconnect {}` and connect again",
                        conn.connector, conn.connector
                    )
                })?;
                let access = parsed.access_token.ok_or_else(|| {
                    format!("the keychain item of `{}` holds no access token", conn.connector)
                })?;
                crate::logging::register_secret(&access);
                Ok(Tokens {
                    access,
                    refresh: parsed.refresh_token,
                })
            }
        }
    }

    /// Takes the exclusive lock that serialises every change (blocking until it is free).
    pub fn lock(self: &Arc<Self>) -> Result<Locked, String> {
        ensure_private_dir(self.home.root())
            .map_err(|e| format!("cannot create {}: {e}", self.home.root().display()))?;
        let path = self.lock_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Ok(Locked {
            store: self.clone(),
            _file: file,
        })
    }
}

/// The store while this process holds its lock. Dropping it releases the lock.
pub struct Locked {
    store: Arc<Store>,
    _file: File,
}

impl Locked {
    /// Re-reads one connection (another process may have changed it before we got the lock).
    pub fn get(&self, connector: &str) -> Result<Option<Loaded>, String> {
        self.store.get(connector)
    }

    /// Stores `conn` with `tokens`, replacing any previous connection of the same connector.
    /// The tokens go to the keychain when the store choice allows and it answers, else to the
    /// file. Returns the connection as stored (with its `storage`).
    pub fn put(&self, mut conn: Connection, tokens: &Tokens) -> Result<Connection, String> {
        let store = &self.store;
        let path = store.path();
        let mut doc = read_document(&path)?;
        let previous = doc.connections.get(&conn.connector).map(|r| r.storage);
        let item = store.item(&conn.connector);
        let storage = match store.choice {
            StoreChoice::File => Storage::File,
            StoreChoice::Keyring | StoreChoice::Auto => {
                let written = store.keychain().and_then(|kc| {
                    let value = KeychainValue {
                        access_token: Some(tokens.access.clone()),
                        refresh_token: tokens.refresh.clone(),
                    };
                    let json = serde_json::to_string(&value)
                        .map_err(|e| format!("cannot encode the keychain item: {e}"))?;
                    kc.set(&item, &Secret::new(json))
                });
                match written {
                    Ok(()) => Storage::Keyring,
                    Err(why) if store.choice == StoreChoice::Keyring => {
                        return Err(format!(
                            "{STORE_ENV}=keyring, but the keychain cannot store the token: {why}; unlock the keychain, or set {STORE_ENV}=auto to fall back to the 0600 file"
                        ))
                    }
                    Err(why) => {
                        tracing::info!(reason = %why, "no OS keychain: the token goes to the 0600 credentials file");
                        Storage::File
                    }
                }
            }
        };
        conn.storage = storage;
        let file_tokens = (storage == Storage::File).then_some(tokens);
        doc.connections.insert(
            conn.connector.clone(),
            RawEntry::from_connection(&conn, file_tokens),
        );
        write_document(&path, &doc)?;
        // An older copy in the keychain must not outlive a move to the file.
        if previous == Some(Storage::Keyring) && storage == Storage::File {
            if let Ok(kc) = store.keychain() {
                let _ = kc.delete(&item);
            }
        }
        Ok(conn)
    }

    /// Removes a connection: its keychain item and its file entry. Returns what was removed.
    pub fn remove(&self, connector: &str) -> Result<Option<Connection>, String> {
        let store = &self.store;
        let path = store.path();
        let mut doc = read_document(&path)?;
        let Some(raw) = doc.connections.get(connector).cloned() else {
            return Ok(None);
        };
        let conn = raw.to_connection(connector, &path)?;
        if conn.storage == Storage::Keyring {
            let kc = store.keychain().map_err(|why| {
                format!(
                    "the token of `{connector}` is in the OS keychain, which cannot be reached: {why}; run this where the keychain is available"
                )
            })?;
            kc.delete(&store.item(connector)).map_err(|why| {
                format!("cannot remove the keychain item of `{connector}`: {why}")
            })?;
        }
        doc.connections.remove(connector);
        write_document(&path, &doc)?;
        Ok(Some(conn))
    }
}

/// Reads `credentials.json`; a missing file is an empty store. Refuses a group- or
/// other-readable file, and reports an unparseable one with its line and column.
fn read_document(path: &Path) -> Result<Document, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Document {
                version: VERSION,
                connections: BTreeMap::new(),
            })
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    // SECURITY: the file may hold tokens; one others can read is refused, not used.
    check_private_file(path)?;
    let doc: Document = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}:{}:{}: the credentials file cannot be parsed ({}); axtary will not overwrite it: fix it by hand, or move it aside and run `axtary connect` again",
            path.display(),
            e.line(),
            e.column(),
            strip_location(&e.to_string())
        )
    })?;
    if doc.version != VERSION {
        return Err(format!(
            "{}: credentials file version {} is not one this axtary reads (it reads {VERSION}); upgrade axtary or move the file aside",
            path.display(),
            doc.version
        ));
    }
    Ok(doc)
}

/// serde_json ends its messages with " at line L column C", which our prefix already says.
fn strip_location(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes the document atomically: new 0600 temp file, fsync, rename, fsync the directory.
fn write_document(path: &Path, doc: &Document) -> Result<(), String> {
    let mut text = serde_json::to_vec_pretty(doc)
        .map_err(|e| format!("cannot encode the credentials file: {e}"))?;
    text.push(b'\n');
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    ensure_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials.json".to_string());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        // create_new: never reuse a stray file whose mode we did not choose.
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn conn(name: &str) -> Connection {
        Connection {
            connector: name.to_string(),
            provider: "linear".to_string(),
            source: Source::Oauth,
            scopes: vec!["read".into()],
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            expires_at: Some(OffsetDateTime::from_unix_timestamp(1_700_003_600).unwrap()),
            storage: Storage::File,
            client_id_env: Some("AXTARY_LINEAR_CLIENT_ID".into()),
            client_secret_env: None,
        }
    }

    fn tokens() -> Tokens {
        Tokens {
            access: Secret::new("access-canary-1234"),
            refresh: Some(Secret::new("refresh-canary-5678")),
        }
    }

    #[test]
    fn file_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::new(
            Home::at(dir.path().join("h")),
            StoreChoice::File,
        ));
        let stored = store
            .lock()
            .unwrap()
            .put(conn("linear"), &tokens())
            .unwrap();
        assert_eq!(stored.storage, Storage::File);
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (c, t) = store.get("linear").unwrap().unwrap();
        assert_eq!(c, stored);
        assert_eq!(t.unwrap(), tokens());
        assert_eq!(store.list().unwrap().len(), 1);
        let json = c.to_json().to_string();
        assert!(!json.contains("canary"), "{json}");
        assert!(store.lock().unwrap().remove("linear").unwrap().is_some());
        assert!(store.get("linear").unwrap().is_none());
    }

    #[test]
    fn refuses_readable_and_reports_unparseable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::new(Home::at(dir.path()), StoreChoice::File));
        std::fs::write(
            store.path(),
            "{\n  \"version\": 1,\n  \"connections\": {,}\n}\n",
        )
        .unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = store.list().unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = store.list().unwrap_err();
        assert!(e.contains("credentials.json:3:"), "{e}");
        assert!(e.contains("will not overwrite"), "{e}");
        let before = std::fs::read(store.path()).unwrap();
        assert!(store
            .lock()
            .unwrap()
            .put(conn("linear"), &tokens())
            .is_err());
        assert_eq!(std::fs::read(store.path()).unwrap(), before);
    }

    #[test]
    fn store_choice_parses() {
        assert_eq!(StoreChoice::parse("").unwrap(), StoreChoice::Auto);
        assert_eq!(StoreChoice::parse("Keyring").unwrap(), StoreChoice::Keyring);
        assert_eq!(StoreChoice::parse("file").unwrap(), StoreChoice::File);
        assert!(StoreChoice::parse("vault").is_err());
    }
}
