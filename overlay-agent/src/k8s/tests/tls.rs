//! The client over TLS: the CA bundle is the only trust root.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ServerConfig, ServerConnection, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

use super::server::{ReadWrite, Reply, TestServer};
use crate::k8s::client::{KubeClient, KubeError, KubeSettings};

/// `testdata/tls/NAME`: a throwaway CA, a server certificate it signed for
/// 127.0.0.1 (valid until 2126) with its key, and an unrelated CA. Test
/// material only, made with openssl.
fn tls_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/k8s/testdata/tls")
        .join(name)
}

/// An HTTPS API server on 127.0.0.1 with the test server certificate.
fn https_server() -> TestServer {
    let certs = CertificateDer::pem_file_iter(tls_file("server.pem"))
        .expect("reading server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem parses");
    let key = PrivateKeyDer::from_pem_file(tls_file("server-key.pem")).expect("server-key.pem");
    let config = Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the server certificate and key match"),
    );
    TestServer::start_wrapped(
        Box::new(move |tcp: TcpStream| {
            let conn = ServerConnection::new(config.clone()).ok()?;
            Some(Box::new(StreamOwned::new(conn, tcp)) as Box<dyn ReadWrite>)
        }),
        |_| Reply::fixture(200, "nodes.json"),
    )
}

fn client(server: &TestServer, ca: Option<PathBuf>) -> KubeClient {
    KubeClient::new(KubeSettings {
        api_server: format!("https://{}", server.addr()),
        token_file: None,
        ca_file: ca,
        timeout: Duration::from_secs(5),
    })
    .expect("a client")
}

#[test]
fn the_ca_file_is_trusted() {
    let server = https_server();
    let nodes = client(&server, Some(tls_file("ca.pem")))
        .list_nodes()
        .expect("listing over TLS with the right CA");
    assert_eq!(nodes.items.len(), 3);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn every_certificate_of_the_bundle_is_a_root() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bundle = dir.path().join("bundle.pem");
    let read = |n: &str| std::fs::read_to_string(tls_file(n)).expect("reading a PEM");
    std::fs::write(&bundle, read("other-ca.pem") + &read("ca.pem")).expect("writing");
    let server = https_server();
    client(&server, Some(bundle))
        .list_nodes()
        .expect("the second certificate of the bundle signs the server's");
}

#[test]
fn a_server_signed_by_another_ca_is_refused() {
    let server = https_server();
    for ca in [Some(tls_file("other-ca.pem")), None] {
        let err = client(&server, ca.clone())
            .list_nodes()
            .expect_err("the server's CA is not trusted");
        assert!(
            matches!(err, KubeError::Transport { .. }),
            "{ca:?}: {err:?}"
        );
        let text = crate::cni::error::chain(&err).to_lowercase();
        assert!(text.contains("certificate"), "{ca:?}: {text}");
    }
    assert!(server.requests().is_empty(), "no request got through");
}
