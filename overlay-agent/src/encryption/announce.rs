//! What a node tells the cluster about its WireGuard device: its public
//! key and the port its socket listens on (the address is the node's
//! own). Gossip carries it, authenticated with the cluster password.
//!
//! It travels as an attribute of the agent version string
//! (`0.1.0 wireguard=<key>:<port>`): every earlier build stores and
//! relays that string verbatim in both its record encodings (the
//! postcard record of SWIM, the key-value state of chitchat), whereas a
//! new field in the postcard record would break their decoding of the
//! push-pull exchange, where records follow one another in a list. An
//! earlier build shows the attribute as part of the version and ignores
//! it; this one splits it off ([`split`]).

use serde::{Deserialize, Serialize};

use super::keys;

/// Attribute name in the version string.
const ATTRIBUTE: &str = "wireguard=";

/// A node's WireGuard key and port, as gossip publishes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Announce {
    /// The public key (base64, 32 bytes once decoded).
    pub public_key: String,
    /// UDP port of the node's WireGuard socket.
    pub port: u16,
}

impl Announce {
    /// The version string a node with this announce publishes.
    pub fn version_string(version: &str, announce: Option<&Announce>) -> String {
        match announce {
            Some(a) => format!("{version} {ATTRIBUTE}{}:{}", a.public_key, a.port),
            None => version.to_owned(),
        }
    }
}

/// Splits a published version string into the version and the WireGuard
/// announce, if it carries a well-formed one (a malformed attribute is as
/// good as none: that node gets no session, so no pod traffic from here).
pub fn split(published: &str) -> (String, Option<Announce>) {
    let mut words = published.split_whitespace();
    let version = words.next().unwrap_or_default().to_owned();
    let announce = words.find_map(|w| {
        let value = w.strip_prefix(ATTRIBUTE)?;
        let (key, port) = value.rsplit_once(':')?;
        keys::decode(key)?;
        Some(Announce {
            public_key: key.to_owned(),
            port: port.parse().ok().filter(|p| *p != 0)?,
        })
    });
    (version, announce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::keys::KeyPair;

    #[test]
    fn an_announce_round_trips_through_the_version_string_and_garbage_is_none() {
        let a = Announce {
            public_key: KeyPair::generate().public_base64(),
            port: 51820,
        };
        let s = Announce::version_string("0.1.0", Some(&a));
        assert_eq!(split(&s), ("0.1.0".to_owned(), Some(a.clone())));
        assert_eq!(split("0.1.0"), ("0.1.0".to_owned(), None));
        assert_eq!(Announce::version_string("0.1.0", None), "0.1.0");
        for bad in [
            "0.1.0 wireguard=notakey:51820",
            &format!("0.1.0 wireguard={}", a.public_key),
            &format!("0.1.0 wireguard={}:0", a.public_key),
            &format!("0.1.0 wireguard={}:99999", a.public_key),
            &format!("0.1.0 wireguard={}:51820", &a.public_key[..20]),
        ] {
            assert_eq!(split(bad).1, None, "{bad}");
            assert_eq!(split(bad).0, "0.1.0");
        }
        // Later attributes are skipped, not fatal.
        let s = format!("0.2.0 other=1 wireguard={}:7", a.public_key);
        assert_eq!(split(&s).1.map(|a| a.port), Some(7));
    }
}
