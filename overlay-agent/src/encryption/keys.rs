//! This node's WireGuard key pair, kept under the state directory.
//!
//! The file holds the private key as `wg genkey` writes it (32 bytes in
//! standard base64 and a newline), mode 0600. It is created on first start
//! and read on every later one; a key readable by anyone else is refused,
//! as ssh refuses such a key, rather than silently used.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use boringtun::x25519::{PublicKey, StaticSecret};

/// Why the key pair could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, writing or renaming the file failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// The file is not a base64 32-byte key.
    #[error(
        "{path} does not hold a WireGuard private key (32 bytes in base64, as `wg genkey` writes)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read the file.
    #[error(
        "{path} is readable by others (mode {mode:o}); `chmod 600` it, or delete it to have a new key generated"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A WireGuard (x25519) key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The private half.
    pub secret: StaticSecret,
    /// The public half, published in gossip.
    pub public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half, not even in a debug log.
        f.debug_struct("KeyPair")
            .field("public", &encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new random key pair (from the operating system's generator).
    pub fn generate() -> Self {
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        Self::from_secret(secret)
    }

    /// The pair of a private key.
    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key in base64, as `wg pubkey` prints it.
    pub fn public_base64(&self) -> String {
        encode(self.public.as_bytes())
    }
}

/// Standard base64 of a key.
pub fn encode(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// A key from its base64 form, or `None`.
pub fn decode(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// Reads the key pair at `path`, or creates one there (mode 0600, written
/// whole and renamed into place) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<KeyPair, KeyError> {
    let io_err = |what, source| KeyError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
            let text = fs::read_to_string(path).map_err(|e| io_err("reading", e))?;
            let key = decode(&text).ok_or_else(|| KeyError::Malformed {
                path: path.to_owned(),
            })?;
            Ok(KeyPair::from_secret(StaticSecret::from(key)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let pair = KeyPair::generate();
            store(path, &pair).map_err(|e| io_err("writing", e))?;
            Ok(pair)
        }
        Err(e) => Err(io_err("reading", e)),
    }
}

/// Writes `pair`'s private key to `path` (0600), replacing what is there.
pub fn store(path: &Path, pair: &KeyPair) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{}", encode(&pair.secret.to_bytes()))?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/wireguard.key");
        let a = load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public.as_bytes(), b.public.as_bytes());
        assert_eq!(a.public_base64().len(), 44);
        assert!(!format!("{a:?}").contains(&encode(&a.secret.to_bytes())));
    }

    #[test]
    fn an_exposed_or_garbled_key_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("readable by others") && e.contains("chmod 600"),
            "{e}"
        );
        fs::write(&path, "not a key\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("does not hold a WireGuard private key"), "{e}");
        // Nothing was overwritten: the operator's file is as they left it.
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key\n");
    }
}
