//! The local CA and the leaf certificates it signs for intercepted hosts (SPEC 2).
//!
//! The CA is made once (ECDSA P-256, 10 years) under `AXTARY_HOME/ca` and reloaded after
//! that. Leaves are minted in memory, one per host, with a random serial and a fresh P-256
//! key, and cached (bounded) so a handshake costs a map lookup. One `ServerConfig` serves
//! every SNI through `LeafResolver`; only clients that send no SNI get a per-host config,
//! and that config is cached too.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::paths::{check_private_file, ensure_private_dir, Home};

/// How long a leaf is valid. Short, because leaves are cheap and live only in memory.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A cached leaf is re-minted this long before it expires.
const LEAF_RENEW_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// Bound on cached leaves; connector hosts are few, so this is only a safety net.
const LEAF_CACHE_CAP: usize = 1024;
/// The CA's lifetime (SPEC 2).
const CA_VALIDITY_DAYS: i64 = 3650;

/// The local certificate authority.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl CertAuthority {
    /// Loads the CA from `home`, creating it first when it does not exist.
    pub fn load_or_create(home: &Home) -> Result<CertAuthority, String> {
        let cert_path = home.ca_cert();
        let key_path = home.ca_key();
        if !cert_path.exists() || !key_path.exists() {
            create(home)?;
        }
        Self::load(&cert_path, &key_path)
    }

    /// Loads an existing CA; refuses a key that group or others can read.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertAuthority, String> {
        check_private_file(key_path)?;
        let key_pem = std::fs::read_to_string(key_path)
            .map_err(|e| format!("cannot read the CA key {}: {e}", key_path.display()))?;
        let cert_pem = std::fs::read_to_string(cert_path).map_err(|e| {
            format!(
                "cannot read the CA certificate {}: {e}",
                cert_path.display()
            )
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            format!(
                "the CA key {} is not a valid PEM private key ({e}): move the ca directory aside and run `axtary ca init`",
                key_path.display()
            )
        })?;
        let cert_der: CertificateDer<'static> = {
            use rustls_pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
                format!(
                    "the CA certificate {} is not valid PEM ({e}): move the ca directory aside and run `axtary ca init`",
                    cert_path.display()
                )
            })?
        };
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| {
            format!(
                "the CA certificate {} cannot be used to sign ({e}): move the ca directory aside and run `axtary ca init`",
                cert_path.display()
            )
        })?;
        Ok(CertAuthority {
            issuer,
            cert_der,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Mints a leaf certificate for `host`: fresh P-256 key, random serial, serverAuth.
    pub fn mint_leaf(&self, host: &str) -> Result<CertifiedKey, String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a leaf key: {e}"))?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|e| format!("`{host}` is not a valid certificate name: {e}"))?,
            ),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        // Backdated an hour so a client whose clock runs a little slow still accepts it.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(LEAF_VALIDITY.as_secs() as i64);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign a leaf for `{host}`: {e}"))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("cannot load the leaf key: {e}"))?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive DER integer: clear the top bit, and keep it non-zero.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Creates the CA files. Serialised across processes by a lock file so two first runs at
/// once agree on one CA.
fn create(home: &Home) -> Result<(), String> {
    let dir = home.ca_dir();
    ensure_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if home.ca_cert().exists() && home.ca_key().exists() {
        return Ok(()); // another process made it while we waited
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate the CA key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Axtary Local CA");
    dn.push(DnType::OrganizationName, "Axtary (this machine only)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot self-sign the CA: {e}"))?;
    // Key first: a reader that finds the certificate can then always find its key.
    write_atomic(&home.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&home.ca_cert(), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Writes a new file with `mode` next to `path`, fsyncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

struct CachedLeaf {
    key: Arc<CertifiedKey>,
    /// A config that always presents this leaf, for clients that send no SNI.
    fixed_config: Option<Arc<ServerConfig>>,
    renew_at: Instant,
}

/// Leaf certificates by host, minted on first use.
pub struct LeafCache {
    ca: CertAuthority,
    leaves: RwLock<HashMap<String, CachedLeaf>>,
}

impl LeafCache {
    pub fn new(ca: CertAuthority) -> LeafCache {
        LeafCache {
            ca,
            leaves: RwLock::new(HashMap::new()),
        }
    }

    pub fn ca(&self) -> &CertAuthority {
        &self.ca
    }

    /// The leaf for `host` (lower-case), minting it on first use or near expiry.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        if let Ok(map) = self.leaves.read() {
            if let Some(hit) = map.get(host) {
                if hit.renew_at > Instant::now() {
                    return Ok(hit.key.clone());
                }
            }
        }
        let key = Arc::new(self.ca.mint_leaf(host)?);
        let mut map = self
            .leaves
            .write()
            .map_err(|_| "leaf cache lock poisoned".to_string())?;
        if map.len() >= LEAF_CACHE_CAP {
            map.clear(); // rare: more distinct hosts than any config has
        }
        map.insert(
            host.to_string(),
            CachedLeaf {
                key: key.clone(),
                fixed_config: None,
                renew_at: Instant::now() + LEAF_VALIDITY - LEAF_RENEW_MARGIN,
            },
        );
        Ok(key)
    }

    /// A server config that presents `host`'s leaf whatever the ClientHello says.
    fn fixed_config(&self, host: &str, base: &ServerConfig) -> Result<Arc<ServerConfig>, String> {
        let key = self.leaf(host)?;
        if let Ok(map) = self.leaves.read() {
            if let Some(cfg) = map.get(host).and_then(|l| l.fixed_config.clone()) {
                return Ok(cfg);
            }
        }
        let mut cfg = base.clone();
        cfg.cert_resolver = Arc::new(FixedResolver(key));
        let cfg = Arc::new(cfg);
        if let Ok(mut map) = self.leaves.write() {
            if let Some(entry) = map.get_mut(host) {
                entry.fixed_config = Some(cfg.clone());
            }
        }
        Ok(cfg)
    }
}

/// Picks the leaf by SNI. Only hosts the proxy already decided to intercept reach a
/// handshake, and the acceptor checks SNI against the CONNECT host before it gets here.
#[derive(Debug)]
struct LeafResolver(Arc<LeafCache>);

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeafCache")
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        match self.0.leaf(&sni.to_ascii_lowercase()) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(host = sni, error = %e, "cannot mint a leaf certificate");
                None
            }
        }
    }
}

#[derive(Debug)]
struct FixedResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS server side of interception: one shared config, ALPN h2 and http/1.1, session
/// tickets on so returning clients skip the full handshake.
pub struct InterceptTls {
    cache: Arc<LeafCache>,
    shared: Arc<ServerConfig>,
}

impl InterceptTls {
    pub fn new(cache: Arc<LeafCache>) -> Result<InterceptTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(LeafResolver(cache.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("TLS ticketer setup failed: {e}"))?;
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        Ok(InterceptTls {
            cache,
            shared: Arc::new(cfg),
        })
    }

    pub fn leaf_cache(&self) -> &Arc<LeafCache> {
        &self.cache
    }

    /// The config for a connection CONNECTed to `host`. With SNI (already checked equal to
    /// `host` by the caller) the shared config; without SNI, a per-host cached config.
    pub fn config_for(&self, host: &str, sni_present: bool) -> Result<Arc<ServerConfig>, String> {
        if sni_present {
            // Mint before the handshake so a minting error is reported here, not as an
            // opaque handshake failure.
            self.cache.leaf(host)?;
            Ok(self.shared.clone())
        } else {
            self.cache.fixed_config(host, &self.shared)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_created_once_with_modes_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let ca = CertAuthority::load_or_create(&home).unwrap();
        let first = ca.cert_der().clone();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.ca_key()), 0o600);
        assert_eq!(mode(&home.ca_cert()), 0o644);
        assert_eq!(mode(&home.ca_dir()), 0o700);
        let again = CertAuthority::load_or_create(&home).unwrap();
        assert_eq!(again.cert_der(), &first, "reloaded, not re-made");
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        CertAuthority::load_or_create(&home).unwrap();
        std::fs::set_permissions(home.ca_key(), std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = CertAuthority::load_or_create(&home).err().unwrap();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn leaves_are_cached_and_serials_differ() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(&Home::at(dir.path())).unwrap();
        let a = ca.mint_leaf("api.github.com").unwrap();
        let b = ca.mint_leaf("api.github.com").unwrap();
        assert_ne!(a.cert[0], b.cert[0], "random serial and key per mint");
        let cache = LeafCache::new(ca);
        let x = cache.leaf("slack.com").unwrap();
        let y = cache.leaf("slack.com").unwrap();
        assert!(Arc::ptr_eq(&x, &y));
    }
}
