//! Signing shard heads with the world's key, and checking them with its
//! public half: the crypto of `hoard_proto::proof`, done by rustls's signer
//! (the server's TLS key, so a world has one key) and webpki's verifier.
//! No signature scheme is implemented here.

use std::sync::Arc;

use hoard_engine::ServerIdentity;
use hoard_proto::proof::{HeadSigner, HeadVerifier};
use rustls::SignatureScheme;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::Signer;

/// Schemes a world key may sign heads with, in order of preference.
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
];

/// Signs heads with a PKCS#8 private key (the world's TLS key).
#[derive(Debug)]
pub struct KeySigner {
    signer: Box<dyn Signer>,
}

impl KeySigner {
    /// A signer for `key`, or why the key cannot sign heads.
    pub fn new(key: &PrivatePkcs8KeyDer<'_>) -> Result<KeySigner, String> {
        let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(key.clone_key()))
            .map_err(|e| format!("the world key cannot sign: {e}"))?;
        let signer = key
            .choose_scheme(&SCHEMES)
            .ok_or_else(|| "the world key is neither Ed25519 nor ECDSA P-256/P-384".to_owned())?;
        Ok(KeySigner { signer })
    }
}

impl HeadSigner for KeySigner {
    fn scheme(&self) -> u16 {
        u16::from(self.signer.scheme())
    }

    fn sign(&self, statement: &[u8]) -> Result<Vec<u8>, String> {
        self.signer.sign(statement).map_err(|e| e.to_string())
    }
}

/// Checks heads against a world's public key (SubjectPublicKeyInfo DER).
#[derive(Debug, Clone)]
pub struct KeyVerifier {
    spki: Arc<[u8]>,
}

impl KeyVerifier {
    /// A verifier for `spki`, which must be the key of `world` (its BLAKE3
    /// is the identity) and parse as a public key.
    pub fn new(world: ServerIdentity, spki: &[u8]) -> Result<KeyVerifier, String> {
        if spki.is_empty() {
            return Err("the server sent no world key (it does not sign heads)".into());
        }
        if ServerIdentity::of_key(spki) != world {
            return Err(format!(
                "the world key sent is {}, not the world {world}",
                ServerIdentity::of_key(spki)
            ));
        }
        let der = SubjectPublicKeyInfoDer::from(spki);
        webpki::RawPublicKeyEntity::try_from(&der).map_err(|e| format!("the world key does not parse: {e:?}"))?;
        Ok(KeyVerifier { spki: spki.into() })
    }
}

impl HeadVerifier for KeyVerifier {
    fn verify(&self, scheme: u16, statement: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match SignatureScheme::from(scheme) {
            SignatureScheme::ED25519 => webpki::ring::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
            _ => return false,
        };
        let der = SubjectPublicKeyInfoDer::from(&self.spki[..]);
        webpki::RawPublicKeyEntity::try_from(&der)
            .and_then(|key| key.verify_signature(alg, statement, signature))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ServerKeys;

    #[test]
    fn a_head_signed_with_the_world_key_verifies_and_a_changed_one_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = ServerKeys::load_or_create(dir.path()).expect("keys");
        let signer = KeySigner::new(&keys.key).expect("signer");
        let spki = keys.world_key().expect("spki");
        let verifier = KeyVerifier::new(keys.identity, &spki).expect("verifier");
        let signature = signer.sign(b"statement").expect("sign");
        assert!(verifier.verify(signer.scheme(), b"statement", &signature));
        assert!(!verifier.verify(signer.scheme(), b"statemenT", &signature));
        let mut flipped = signature.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(!verifier.verify(signer.scheme(), b"statement", &flipped));
        assert!(
            !verifier.verify(0x0804, b"statement", &signature),
            "an RSA scheme is refused"
        );
        assert!(
            KeyVerifier::new(ServerIdentity([7; 32]), &spki).is_err(),
            "a key of another world"
        );
    }
}

/// The worked example of docs/PROTOCOL.md § "Signed shard heads": a world
/// whose key is the Ed25519 key of seed `[1; 32]` (Ed25519 signatures are
/// deterministic, so the example's signature is fixed). Its bytes are those
/// of the golden file `99-head-proof.bin`.
#[cfg(test)]
mod worked_example {
    use super::*;
    use hoard_engine::digest::state_hash;
    use hoard_engine::{Digest, Epoch, ObjectId, Seq, ShardId};
    use hoard_proto::proof::signed_statement;

    /// PKCS#8 v1 of an Ed25519 key: this fixed prefix, then the 32-byte seed.
    const PKCS8_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn signed_head_of_the_protocol_document() {
        let mut pkcs8 = PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&[1u8; 32]);
        let key = PrivatePkcs8KeyDer::from(pkcs8);
        let signing = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(key.clone_key()))
            .expect("ed25519 key");
        let spki = signing.public_key().expect("public key").as_ref().to_vec();
        let world = ServerIdentity::of_key(&spki);
        let signer = KeySigner::new(&key).expect("signer");
        assert_eq!(signer.scheme(), 0x0807);
        // The shard of the `94-snapshot` golden: objects 42 (version 7) and
        // 43 (version 9) of shard 3, epoch 5, seq 11.
        let objects: [(ObjectId, Seq, &[u8]); 2] = [
            (ObjectId(42), Seq(7), &[0x81, 0xa1, b'n', 0xc4, 0x01, 0x05]),
            (ObjectId(43), Seq(9), &[0x81, 0xa1, b'n', 0xc4, 0x01, 0x06]),
        ];
        let mut digest = Digest::EMPTY;
        for (id, version, state) in objects {
            digest.add(id, version, &state_hash(state));
        }
        let root = hoard_engine::set_root::set_root(objects).expect("root");
        let statement = signed_statement(&world, "world", ShardId(3), Epoch(5), Seq(11), &digest, &root);
        let signature = signer.sign(&statement).expect("sign");
        println!("world key (SPKI) {}", hex(&spki));
        println!("world {world}");
        println!("digest {}", hex(&digest.to_bytes()));
        println!("root {}", hex(&root));
        println!("statement {}", hex(&statement));
        println!("signature {}", hex(&signature));
        let verifier = KeyVerifier::new(world, &spki).expect("verifier");
        assert!(verifier.verify(0x0807, &statement, &signature));
        assert_eq!(hex(&spki), EXAMPLE_WORLD_KEY);
        assert_eq!(hex(&signature), EXAMPLE_SIGNATURE);
    }

    const EXAMPLE_WORLD_KEY: &str =
        "302a300506032b65700321008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    const EXAMPLE_SIGNATURE: &str = "a3b0c841d1bb83f04fc28774256b0cae63c672caa887145215b3d384a474a35e29360cba78c750d42915b6892db4c1b9e8b93389ad2573811ea85ee0c725210b";
}
