//! The world's token keys in a server's data directory, and the signed list
//! of them a server hands to relays.
//!
//! `token.key` holds the private token key the server mints world tokens
//! with (a PASERK `k4.secret.…`, made on first start). `token-keys` lists
//! further public keys the world accepts, one PASERK `k4.public.…` a line
//! (`#` starts a comment): a key rotated out but not yet retired, or an
//! account service's own key. Rotating makes a new `token.key` and moves
//! the old public key to `token-keys`; retiring removes a key from it.
//! Every server of a world shares these files, as it shares the world's
//! TLS key.

use std::path::{Path, PathBuf};

use hoard_engine::ServerIdentity;
use hoard_proto::proof::{HeadSigner, HeadVerifier};
use hoard_proto::wire::SignedTokenKeys;
use hoard_proto::world_token::{MAX_TOKEN_KEYS, TokenKey, TokenKeys, TokenSigningKey, token_keys_statement};

use crate::tls::TlsError;

/// The private token key's file.
pub const TOKEN_KEY_FILE: &str = "token.key";
/// The file of further accepted public token keys.
pub const ACCEPTED_KEYS_FILE: &str = "token-keys";

/// A world's token keys as its data directory holds them.
#[derive(Clone, Debug)]
pub struct WorldTokenKeys {
    /// The key tokens are minted with.
    pub signing: TokenSigningKey,
    /// Every key accepted, the signing key's public half first.
    pub accepted: Vec<TokenKey>,
}

impl WorldTokenKeys {
    /// The accepted keys, for `world`.
    pub fn token_keys(&self, world: ServerIdentity) -> TokenKeys {
        TokenKeys::new(world, self.accepted.clone())
    }

    /// Loads the keys from `data_dir`, making the private key on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<WorldTokenKeys, TlsError> {
        let path = data_dir.join(TOKEN_KEY_FILE);
        let signing = match read_text(&path)? {
            Some(text) => TokenSigningKey::from_paserk(&text).map_err(|e| TlsError::Invalid {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            None => {
                let key = TokenSigningKey::generate();
                crate::tls::write_private(&path, format!("{}\n", key.paserk()).as_bytes())?;
                tracing::info!(path = %path.display(), key = %key.public().id(), "generated the world's token key");
                key
            }
        };
        let mut accepted = vec![signing.public().clone()];
        for key in read_accepted(data_dir)? {
            if !accepted.contains(&key) {
                accepted.push(key);
            }
        }
        if accepted.len() > MAX_TOKEN_KEYS {
            return Err(TlsError::Invalid {
                path: data_dir.join(ACCEPTED_KEYS_FILE),
                detail: format!(
                    "{} token keys; a world accepts at most {MAX_TOKEN_KEYS}",
                    accepted.len()
                ),
            });
        }
        Ok(WorldTokenKeys { signing, accepted })
    }

    /// Makes a new private token key; the old one's public half stays
    /// accepted (in `token-keys`) until retired. Returns the new key's id.
    pub fn rotate(data_dir: &Path) -> Result<String, TlsError> {
        let old = WorldTokenKeys::load_or_create(data_dir)?;
        let mut listed = read_accepted(data_dir)?;
        if !listed.contains(old.signing.public()) {
            listed.push(old.signing.public().clone());
        }
        write_accepted(data_dir, &listed)?;
        let new = TokenSigningKey::generate();
        crate::tls::write_private(&data_dir.join(TOKEN_KEY_FILE), format!("{}\n", new.paserk()).as_bytes())?;
        tracing::info!(old = %old.signing.public().id(), new = %new.public().id(), "rotated the world's token key");
        Ok(new.public().id())
    }

    /// Accepts `key` too (an account service's own token key).
    pub fn accept(data_dir: &Path, key: &TokenKey) -> Result<(), TlsError> {
        let mut listed = read_accepted(data_dir)?;
        if !listed.contains(key) {
            listed.push(key.clone());
        }
        write_accepted(data_dir, &listed)?;
        WorldTokenKeys::load_or_create(data_dir).map(|_| ())
    }

    /// Stops accepting the key `id` (a `k4.pid.…`) from `token-keys`; the
    /// current signing key cannot be retired (rotate first). Returns
    /// whether a key was removed.
    pub fn retire(data_dir: &Path, id: &str) -> Result<bool, TlsError> {
        let current = WorldTokenKeys::load_or_create(data_dir)?;
        if current.signing.public().id() == id {
            return Err(TlsError::Invalid {
                path: data_dir.join(TOKEN_KEY_FILE),
                detail: "that is the key tokens are minted with; rotate before retiring it".into(),
            });
        }
        let mut listed = read_accepted(data_dir)?;
        let before = listed.len();
        listed.retain(|k| k.id() != id);
        write_accepted(data_dir, &listed)?;
        Ok(listed.len() != before)
    }
}

/// Longest key file read: 16 keys with comments fit in a few KB.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

fn read_text(path: &Path) -> Result<Option<String>, TlsError> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > MAX_KEY_FILE_BYTES
    {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            detail: format!("{} bytes; a token key file is at most {MAX_KEY_FILE_BYTES}", meta.len()),
        });
    }
    let Some(bytes) = crate::tls::read(path)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|_| TlsError::Invalid {
        path: path.to_owned(),
        detail: "not UTF-8 text (a PASERK key a line)".into(),
    })
}

fn accepted_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ACCEPTED_KEYS_FILE)
}

fn read_accepted(data_dir: &Path) -> Result<Vec<TokenKey>, TlsError> {
    let path = accepted_path(data_dir);
    let Some(text) = read_text(&path)? else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        keys.push(TokenKey::from_paserk(line).map_err(|e| TlsError::Invalid {
            path: path.clone(),
            detail: format!("line {}: {e}", n + 1),
        })?);
    }
    Ok(keys)
}

fn write_accepted(data_dir: &Path, keys: &[TokenKey]) -> Result<(), TlsError> {
    let mut text = String::from("# Public token keys this world accepts besides token.key's (PASERK k4.public).\n");
    for key in keys {
        text.push_str(&format!("{}  # {}\n", key.paserk(), key.id()));
    }
    crate::tls::write_private(&accepted_path(data_dir), text.as_bytes())
}

/// The world's token keys signed with its key, for `Welcome`.
pub fn sign_token_keys(
    world: &ServerIdentity,
    keys: &[TokenKey],
    signer: &dyn HeadSigner,
) -> Result<SignedTokenKeys, String> {
    let raw: Vec<[u8; 32]> = keys.iter().take(MAX_TOKEN_KEYS).map(|k| *k.bytes()).collect();
    let signature = signer.sign(&token_keys_statement(world, &raw))?;
    Ok(SignedTokenKeys {
        keys: raw.into_iter().map(serde_bytes::ByteArray::new).collect(),
        scheme: signer.scheme(),
        signature,
    })
}

/// The keys of a signed list, if the world's key signed it.
pub fn verify_token_keys(
    world: &ServerIdentity,
    signed: &SignedTokenKeys,
    verifier: &dyn HeadVerifier,
) -> Result<TokenKeys, String> {
    if signed.keys.len() > MAX_TOKEN_KEYS {
        return Err(format!(
            "{} token keys; a world has at most {MAX_TOKEN_KEYS}",
            signed.keys.len()
        ));
    }
    let raw: Vec<[u8; 32]> = signed.keys.iter().map(|k| k.into_array()).collect();
    if !verifier.verify(signed.scheme, &token_keys_statement(world, &raw), &signed.signature) {
        return Err("the world's token keys are not signed by the world's key".into());
    }
    Ok(TokenKeys::new(
        *world,
        raw.into_iter().map(TokenKey::from_bytes).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_rotated_and_retired_in_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = WorldTokenKeys::load_or_create(dir.path()).expect("made");
        let again = WorldTokenKeys::load_or_create(dir.path()).expect("read");
        assert_eq!(first.signing.public(), again.signing.public());
        assert_eq!(first.accepted.len(), 1);
        let new_id = WorldTokenKeys::rotate(dir.path()).expect("rotated");
        let rotated = WorldTokenKeys::load_or_create(dir.path()).expect("read");
        assert_eq!(rotated.signing.public().id(), new_id);
        assert_eq!(rotated.accepted.len(), 2, "the old key is still accepted");
        assert!(rotated.accepted.contains(first.signing.public()));
        assert!(
            WorldTokenKeys::retire(dir.path(), &new_id).is_err(),
            "the current key is not retired"
        );
        assert!(WorldTokenKeys::retire(dir.path(), &first.signing.public().id()).expect("retired"));
        let retired = WorldTokenKeys::load_or_create(dir.path()).expect("read");
        assert_eq!(retired.accepted, vec![retired.signing.public().clone()]);
        std::fs::write(dir.path().join(ACCEPTED_KEYS_FILE), "k4.public.nonsense\n").expect("write");
        let err = WorldTokenKeys::load_or_create(dir.path())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        std::fs::write(dir.path().join(ACCEPTED_KEYS_FILE), "#".repeat(70_000)).expect("write");
        let err = WorldTokenKeys::load_or_create(dir.path())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("at most"), "{err}");
        std::fs::write(dir.path().join(TOKEN_KEY_FILE), "k4.secret.garbage").expect("write");
        assert!(
            WorldTokenKeys::load_or_create(dir.path()).is_err(),
            "a damaged token.key is named, not replaced"
        );
    }
}
