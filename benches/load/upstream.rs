//! The stand-in for api.github.com: a certificate authority made at start-up, and a fast TLS
//! server on 127.0.0.1 that answers every request with a small JSON body.
//!
//! The body carries the SHA-256 of the `Authorization` header the server received rather than
//! the header itself, because the proxy scrubs its credential from response bodies: the hash
//! survives the scrubber and still proves which credential arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The JSON key under which the upstream reports the hash of the credential it received.
pub const AUTH_HASH_KEY: &str = "authSha256";

/// A CA that exists only for this run, so nothing it signs is trusted anywhere else.
pub struct BenchCa {
    params: CertificateParams,
    key: KeyPair,
    cert_der: CertificateDer<'static>,
    pem: String,
}

impl BenchCa {
    pub fn new() -> BenchCa {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate the bench CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("bench CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "axtary load bench upstream CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the bench CA");
        BenchCa {
            pem: cert.pem(),
            cert_der: cert.der().clone(),
            params,
            key,
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// An ECDSA P-256 serverAuth leaf for `host`; the chain includes the CA like a real
    /// server's would, so the client does the same verification work as against GitHub.
    fn issue(&self, host: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate a leaf key");
        let mut params = CertificateParams::new(vec![host.to_string()]).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign the leaf");
        (
            vec![cert.der().clone(), self.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// The running upstream; its accept loop stops when this is dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts the upstream for `host` on an ephemeral loopback port, on the current runtime.
pub async fn start(ca: &BenchCa, host: &str) -> Upstream {
    let (chain, key) = ca.issue(host);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("upstream TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("upstream certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Tickets (TLS 1.3 and 1.2) so the resumption scenario can resume against the direct
    // path as well; a real API front end offers them too.
    config.ticketer = rustls::crypto::ring::Ticketer::new().expect("upstream ticketer");
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream listener");
    let addr = listener.local_addr().expect("upstream local address");
    let accept = tokio::spawn(accept_loop(listener, acceptor));
    Upstream { addr, accept }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor) {
    let builder = ConnBuilder::new(TokioExecutor::new());
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors is the likely cause; back off rather than spin.
                eprintln!("load: upstream accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = builder
                .serve_connection(TokioIo::new(tls), service_fn(answer))
                .await;
        });
    }
}

/// About 100 bytes of JSON, shaped loosely like a GitHub list answer.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let digest = hex::encode(Sha256::digest(auth));
    let body =
        format!(r#"{{"ok":true,"repo":"acme/widgets","pulls":[],"{AUTH_HASH_KEY}":"{digest}"}}"#);
    let resp = Response::builder()
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid");
    Ok(resp)
}
