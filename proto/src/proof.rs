//! Signed shard heads: what an origin signs so that clients can take a
//! shard from an untrusted relay and still know it is the origin's.
//!
//! The statement signed binds the world, the service, the shard and its
//! head — epoch, seq, digest with count, and the set root
//! ([`hoard_engine::set_root`]), which binds the exact live set (the
//! additive digest alone does not resist a relay that crafts objects). A
//! client checks the signature with the world's key (whose BLAKE3 is the
//! world identity it pinned), then that its own copy after the answer has
//! that head and that root. The signing and verifying themselves are the
//! driver's (`hoard-net` uses rustls's and webpki's); this module only
//! fixes the bytes and the checks around them.

use std::fmt;
use std::sync::Arc;

use hoard_engine::shard::CachedShard;
use hoard_engine::store::ShardSnapshot;
use hoard_engine::{Digest, Epoch, Seq, ServerIdentity, ShardId};

use crate::wire::{HeadProof, MAX_SIGNATURE_BYTES};

/// The prefix of every signed statement.
pub const STATEMENT_CONTEXT: &[u8] = b"hoard-signed-head-v1";

/// The bytes an origin signs for one shard head:
/// `"hoard-signed-head-v1" ‖ world (32) ‖ u8(len(service)) ‖ service ‖
/// u64le(shard) ‖ u64le(epoch) ‖ u64le(seq) ‖ digest (40) ‖ root (32)`.
pub fn signed_statement(
    world: &ServerIdentity,
    service: &str,
    shard: ShardId,
    epoch: Epoch,
    seq: Seq,
    digest: &Digest,
    root: &[u8; 32],
) -> Vec<u8> {
    let service = &service.as_bytes()[..service.len().min(255)];
    let mut out = Vec::with_capacity(STATEMENT_CONTEXT.len() + 32 + 1 + service.len() + 24 + 40 + 32);
    out.extend_from_slice(STATEMENT_CONTEXT);
    out.extend_from_slice(&world.0);
    out.push(service.len() as u8);
    out.extend_from_slice(service);
    out.extend_from_slice(&shard.0.to_le_bytes());
    out.extend_from_slice(&epoch.0.to_le_bytes());
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&digest.to_bytes());
    out.extend_from_slice(root);
    out
}

/// Makes signatures with the world's private key.
pub trait HeadSigner: Send + Sync + fmt::Debug {
    /// The TLS `SignatureScheme` code of the signatures.
    fn scheme(&self) -> u16;
    /// Signs `statement`.
    fn sign(&self, statement: &[u8]) -> Result<Vec<u8>, String>;
}

/// Checks signatures against the world's public key.
pub trait HeadVerifier: Send + Sync + fmt::Debug {
    /// Whether `signature` (of `scheme`) signs `statement`.
    fn verify(&self, scheme: u16, statement: &[u8], signature: &[u8]) -> bool;
}

/// Where a server's proofs come from: an origin signs each head itself; a
/// relay hands on the origin's proof of the head it holds.
pub trait ProofSource: Send + Sync + fmt::Debug {
    /// The proof of `snap`'s head, whose objects are the shard's exact
    /// live set at it.
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String>;

    /// The proof of `shard` at `seq` if it is at hand without reading the
    /// shard (a relay's, received with the change); `None` otherwise.
    fn held(&self, _shard: ShardId, _seq: Seq) -> Option<HeadProof> {
        None
    }

    /// Signs `head` with the set root `root` the caller computed (an
    /// origin's hub keeps each followed shard's leaves, so a delta's head is
    /// signed without reading the shard); `None` from a source that cannot
    /// sign (a relay's).
    fn sign_root(&self, _head: &hoard_engine::store::ShardHead, _root: [u8; 32]) -> Option<Result<HeadProof, String>> {
        None
    }
}

/// An origin's [`ProofSource`]: the set root of the snapshot, signed.
#[derive(Debug, Clone)]
pub struct OriginProofs {
    world: ServerIdentity,
    service: String,
    signer: Arc<dyn HeadSigner>,
}

impl OriginProofs {
    /// Signs heads of `service` of `world` with `signer`.
    pub fn new(world: ServerIdentity, service: &str, signer: Arc<dyn HeadSigner>) -> OriginProofs {
        OriginProofs {
            world,
            service: service.to_owned(),
            signer,
        }
    }
}

impl ProofSource for OriginProofs {
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String> {
        let root = hoard_engine::set_root::set_root(snap.objects.iter().map(|o| (o.id, o.version, o.state.as_bytes())))
            .ok_or_else(|| format!("shard {}: the store gave objects out of id order", snap.head.shard))?;
        self.sign_head(&snap.head, root)
    }

    fn sign_root(&self, head: &hoard_engine::store::ShardHead, root: [u8; 32]) -> Option<Result<HeadProof, String>> {
        Some(self.sign_head(head, root))
    }
}

impl OriginProofs {
    fn sign_head(&self, head: &hoard_engine::store::ShardHead, root: [u8; 32]) -> Result<HeadProof, String> {
        let statement = signed_statement(
            &self.world,
            &self.service,
            head.shard,
            head.epoch,
            head.seq,
            &head.digest,
            &root,
        );
        Ok(HeadProof {
            shard: head.shard,
            epoch: head.epoch,
            seq: head.seq,
            digest: head.digest,
            root,
            scheme: self.signer.scheme(),
            signature: self.signer.sign(&statement)?,
        })
    }
}

/// Why a shard from the server is not the origin's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No proof came for a shard that needs one.
    #[error("shard {0}: no signed head came with it")]
    Missing(ShardId),
    /// The signature does not verify with the world's key.
    #[error("shard {0}: the head's signature does not verify with the world's key")]
    BadSignature(ShardId),
    /// The copy after the answer does not have the signed head.
    #[error("shard {shard}: the copy is at {got}, the signed head says {signed}")]
    OtherHead {
        /// The shard.
        shard: ShardId,
        /// What the copy has (epoch/seq/count).
        got: String,
        /// What the signature covers.
        signed: String,
    },
    /// The copy's objects are not the set the origin signed.
    #[error("shard {0}: the objects are not the set the origin signed (set root differs)")]
    OtherSet(ShardId),
    /// A signed head older than one already held: a replay.
    #[error("shard {shard}: a signed head at seq {seq} after one at {held} (an old head replayed)")]
    Rollback {
        /// The shard.
        shard: ShardId,
        /// The replayed seq.
        seq: Seq,
        /// The seq already held.
        held: Seq,
    },
}

fn describe(epoch: Epoch, seq: Seq, digest: &Digest) -> String {
    let sum: String = digest.to_bytes()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("epoch {epoch} seq {seq} count {} digest {sum}…", digest.count())
}

/// Checks proofs for one world and service.
#[derive(Debug, Clone)]
pub struct ProofChecker {
    world: ServerIdentity,
    service: String,
    verifier: Arc<dyn HeadVerifier>,
}

impl ProofChecker {
    /// Checks with `verifier`, the key of `world`.
    pub fn new(world: ServerIdentity, service: &str, verifier: Arc<dyn HeadVerifier>) -> ProofChecker {
        ProofChecker {
            world,
            service: service.to_owned(),
            verifier,
        }
    }

    /// Whether `proof` is signed by the world.
    pub fn check_signature(&self, proof: &HeadProof) -> Result<(), ProofError> {
        if proof.signature.len() > MAX_SIGNATURE_BYTES {
            return Err(ProofError::BadSignature(proof.shard));
        }
        let statement = signed_statement(
            &self.world,
            &self.service,
            proof.shard,
            proof.epoch,
            proof.seq,
            &proof.digest,
            &proof.root,
        );
        if self.verifier.verify(proof.scheme, &statement, &proof.signature) {
            Ok(())
        } else {
            Err(ProofError::BadSignature(proof.shard))
        }
    }

    /// Whether `copy` is exactly the shard `proof` signs (whose signature
    /// was checked): same head, same set root.
    pub fn check_copy(&self, proof: &HeadProof, copy: &CachedShard) -> Result<(), ProofError> {
        let h = &copy.header;
        let shard = proof.shard;
        if h.key.shard != shard || h.epoch != proof.epoch || h.hwm != proof.seq || h.digest != proof.digest {
            return Err(ProofError::OtherHead {
                shard,
                got: describe(h.epoch, h.hwm, &h.digest),
                signed: describe(proof.epoch, proof.seq, &proof.digest),
            });
        }
        let root = hoard_engine::set_root::set_root(copy.objects.iter().map(|o| (o.id, o.version, o.state.as_bytes())));
        if root != Some(proof.root) {
            return Err(ProofError::OtherSet(shard));
        }
        Ok(())
    }
}

/// A shared store's proofs, read under its lock (a relay's store, which its
/// driver changes while sessions read it).
impl<S: ProofSource> ProofSource for hoard_engine::store::Locked<S> {
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String> {
        self.read().prove(snap)
    }

    fn held(&self, shard: ShardId, seq: Seq) -> Option<HeadProof> {
        self.read().held(shard, seq)
    }

    fn sign_root(&self, head: &hoard_engine::store::ShardHead, root: [u8; 32]) -> Option<Result<HeadProof, String>> {
        self.read().sign_root(head, root)
    }
}
