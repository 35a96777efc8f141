//! A throwaway certificate authority for the mock providers.
//!
//! Generated fresh in every test, so nothing trusted outside the test ever signs anything. The
//! CA certificate is written as `ca.pem` into a temp dir: that is the file handed to the proxy
//! as `upstream.caFile` and to curl as `--cacert` when a test talks to a mock directly.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// A server certificate chain and its key, ready for a rustls server config.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A CA generated at test time.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    cert_der: CertificateDer<'static>,
    dir: TempDir,
    pem_path: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "axtary test upstream CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = tempfile::Builder::new()
            .prefix("axtary-test-ca")
            .tempdir()
            .expect("temp dir for CA");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write ca.pem");
        TestCa {
            params,
            key,
            cert_der: cert.der().clone(),
            dir,
            pem_path,
        }
    }

    /// Path of the CA certificate in PEM form.
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The directory holding `ca.pem` (removed when the CA is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues an ECDSA P-256 serverAuth leaf for `names`, chained to this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate leaf key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// What every mock TLS server starts from: an acceptor presenting `leaf` with the `alpn`
/// protocols, a two-thread runtime named `name` (dropping it stops the server), and a
/// listener on 127.0.0.1 with its address.
pub fn tls_server(
    leaf: Leaf,
    alpn: &[&[u8]],
    name: &str,
) -> (
    tokio_rustls::TlsAcceptor,
    tokio::runtime::Runtime,
    tokio::net::TcpListener,
    std::net::SocketAddr,
) {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)
        .expect("mock server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("mock runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind mock listener");
    let addr = listener.local_addr().expect("mock local addr");
    (acceptor, runtime, listener, addr)
}

/// Serves one accepted mock connection with the protocol its ALPN chose (HTTP/2 or HTTP/1.1).
pub async fn serve_by_alpn<S, B>(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    svc: S,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
        .await;
}

/// Accepts connections on `listener` for as long as the mock's runtime lives, completes each
/// TLS handshake in its own task and hands the stream to `on_conn`.
pub async fn accept_tls<F, Fut>(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    on_conn: F,
) where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let on_conn = on_conn.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                on_conn(tls).await;
            }
        });
    }
}
