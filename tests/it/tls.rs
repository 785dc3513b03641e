//! gRPC over TLS and mutual TLS, with throwaway certificates from a test CA: a client that
//! trusts the CA is served; with `client_ca` set, a client without a certificate signed by it
//! is turned away and one with such a certificate is served.

use crate::common;

use std::path::Path;

use lote::grpc::pb::{GetInfoRequest, worker_client::WorkerClient};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA, a server certificate for localhost and a client certificate, as PEM files in `dir`.
fn make_certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, names) in [("server", vec!["localhost".to_string()]), ("client", vec![])] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

async fn get_info(port: u16, tls: ClientTlsConfig) -> Result<String, String> {
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let response = WorkerClient::new(channel).get_info(GetInfoRequest {}).await;
    response.map(|r| r.into_inner().version).map_err(|status| format!("{status:?}"))
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[tokio::test]
async fn tls_and_mutual_tls_from_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let trust = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(dir.path(), "ca.pem")))
            .domain_name("localhost")
    };

    let mut settings = common::test_settings();
    settings.server.tls.cert = Some(dir.path().join("server.pem"));
    settings.server.tls.key = Some(dir.path().join("server.key"));
    let mut server = common::TestServer::start(settings.clone()).await;
    let port = server.grpc_addr.port();
    assert_eq!(get_info(port, trust()).await.unwrap(), env!("CARGO_PKG_VERSION"));
    let plaintext = WorkerClient::new(server.channel().await).get_info(GetInfoRequest {}).await;
    assert!(plaintext.is_err(), "plaintext is not served on a TLS port");
    server.stop();

    settings.server.tls.client_ca = Some(dir.path().join("ca.pem"));
    let server = common::TestServer::start(settings).await;
    let port = server.grpc_addr.port();
    let refused = get_info(port, trust()).await;
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    let identity =
        Identity::from_pem(read(dir.path(), "client.pem"), read(dir.path(), "client.key"));
    assert_eq!(
        get_info(port, trust().identity(identity)).await.unwrap(),
        env!("CARGO_PKG_VERSION")
    );
}
