//! The PostgreSQL store over TLS, against a PostgreSQL of the test's own that
//! takes TLS connections only, with a certificate for `db.example` issued by
//! a certificate authority the test makes: `verify-ca` (and `require`) with
//! that authority connects and the store works; `verify-full` refuses the
//! certificate (it names another host than 127.0.0.1); another authority is
//! refused; plain TCP is rejected by the server; `prefer` is refused before
//! connecting.

use hoard_engine::store::{PgOptions, PgStore, ShardSpec, WorldStore};
use hoard_engine::{ShardId, ZoneId};

use super::private_pg::{PrivatePostgres, ServerTls};

/// A certificate authority: its certificate (PEM) and its issuer.
fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn open(url: &str) -> Result<PgStore, String> {
    let mut options = PgOptions::new(url);
    options.op_timeout = std::time::Duration::from_secs(10);
    PgStore::open(&options).map_err(|e| e.to_string())
}

#[test]
fn the_postgres_store_connects_over_tls_only_to_a_certificate_it_can_verify() {
    let (ca_pem, ca) = authority("hoard test CA");
    let (other_pem, _) = authority("another CA");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["db.example".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("signed");
    let pg = PrivatePostgres::start_tls(&ServerTls {
        cert_pem: server.pem(),
        key_pem: server_key.serialize_pem(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, &ca_pem).expect("ca.pem");
    std::fs::write(&other_file, &other_pem).expect("other.pem");
    let with =
        |mode: &str, root: &std::path::Path| format!("{}?sslmode={mode}&sslrootcert={}", pg.url(), root.display());

    // The chain verified: the store opens and works.
    let store = open(&with("verify-ca", &ca_file)).expect("verify-ca with the right authority connects");
    let zone = ZoneId::new("meadow").expect("zone");
    store
        .create_zone(&zone, &[ShardSpec::shared(ShardId(1))])
        .expect("a write over TLS");
    assert_eq!(store.zones().expect("a read over TLS"), vec![zone]);
    drop(store);
    open(&with("require", &ca_file)).expect("require checks the chain too, and connects");

    // The host name checked: the certificate is db.example's, not 127.0.0.1's.
    let e = open(&with("verify-full", &ca_file)).expect_err("verify-full refuses another host's certificate");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // Another authority: refused.
    let e = open(&with("verify-ca", &other_file)).expect_err("another authority is refused");
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // Plain TCP: the server takes TLS only.
    let e = open(&pg.url()).expect_err("plain TCP is rejected");
    assert!(e.contains("no pg_hba.conf entry") || e.contains("rejects"), "{e}");

    // An sslmode that could fall back to no verification: refused up front.
    let e = open(&format!("{}?sslmode=prefer", pg.url())).expect_err("prefer is refused");
    assert!(e.contains("verify-full"), "{e}");
}
