//! The members a node knew, kept across its restarts.
//!
//! Gossip tells a restarted agent who its peers are within a round trip or
//! two, as long as they speak its protocol. When they do not (a rolling
//! upgrade from the previous release's chitchat to SWIM) or cannot be
//! reached yet (the agent restarts inside a partition), a node that
//! remembered nothing would see itself alone: it would withdraw its routes
//! to the peers' blocks, and the claim rule would count a quorum of one
//! and take blocks that other nodes own.
//!
//! So every node keeps the last view's members in `members.json` under its
//! state directory, and on start adds them to its view as members that are
//! not alive, until gossip brings a record of that name. Not alive, they
//! count against the quorum and their claims stay reserved, exactly as a
//! member gossip holds dead; their nodes stay routed while their datapaths
//! answer probes. A forget record voids them as it voids any member.

use std::{io::Write as _, net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::view::{Member, Record, Seen};

/// File under the state directory that lists the members a node knew.
pub const MEMBERS_FILE: &str = "members.json";

/// One member as remembered: who, which generation, where it gossips and
/// what it published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Node name.
    pub name: String,
    /// Its generation.
    pub generation: u64,
    /// Its gossip address.
    pub gossip_addr: SocketAddr,
    /// Its record (claims voided by a forget already removed).
    pub record: Record,
}

impl Remembered {
    /// What to remember of a member of the view.
    pub fn of(m: &Member) -> Self {
        Self {
            name: m.name.clone(),
            generation: m.generation,
            gossip_addr: m.gossip_addr,
            record: m.record.clone(),
        }
    }
}

/// Remembered members, ready to add to a view.
#[derive(Debug, Default)]
pub struct Memory(Vec<Remembered>);

impl Memory {
    /// Members of `members`.
    pub fn new(members: Vec<Remembered>) -> Self {
        Self(members)
    }

    /// The remembered members gossip has no record of (`known` says which
    /// names it has), as view input, never alive.
    pub fn seen<'a>(&'a self, known: impl Fn(&str) -> bool) -> impl Iterator<Item = Seen<'a>> {
        self.0
            .iter()
            .filter(move |m| !known(&m.name))
            .map(|m| Seen {
                name: &m.name,
                generation: m.generation,
                gossip_addr: m.gossip_addr,
                live: false,
                record: &m.record,
            })
    }

    /// Number of members remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct MembersFile {
    node: String,
    members: Vec<Remembered>,
}

/// The members `node` remembered in `path`. The file is a memory, not a
/// source of truth: missing, damaged or another node's, it is ignored
/// (with a warning for the last two) and gossip alone is believed.
pub fn load(path: &Path, node: &str) -> Vec<Remembered> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "reading the remembered members: ignored");
            return Vec::new();
        }
    };
    match serde_json::from_str::<MembersFile>(&text) {
        Ok(f) if f.node == node => f.members,
        Ok(f) => {
            warn!(
                path = %path.display(), file_node = f.node, node,
                "the remembered members are another node name's: ignored"
            );
            Vec::new()
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the remembered members are damaged: ignored");
            Vec::new()
        }
    }
}

/// Writes `members` as `node`'s memory, atomically.
pub fn save(path: &Path, node: &str, members: &[Remembered]) -> std::io::Result<()> {
    let body = serde_json::to_vec(&MembersFile {
        node: node.to_owned(),
        members: members.to_vec(),
    })
    .expect("plain data serialises");
    write_atomically(path, &body)
}

/// Replaces `path` with `body` so that a crash leaves the old file or the
/// new one: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::view::{Claim, ClaimState, View};

    fn member(name: &str, generation: u64, block: &str) -> Remembered {
        Remembered {
            name: name.into(),
            generation,
            gossip_addr: "172.31.0.2:6783".parse().unwrap(),
            record: Record {
                ip: Some("172.31.0.2".parse().unwrap()),
                vxlan_port: Some(4789),
                version: Some("0.1.0".into()),
                claims: [(
                    block.parse().unwrap(),
                    Claim {
                        state: ClaimState::Settled,
                        origin: generation,
                    },
                )]
                .into(),
                ..Record::default()
            },
        }
    }

    #[test]
    fn members_round_trip_and_a_damaged_or_foreign_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MEMBERS_FILE);
        assert!(load(&p, "n1").is_empty());
        let ms = vec![
            member("n2", 5, "10.32.2.0/24"),
            member("n3", 6, "10.32.3.0/24"),
        ];
        save(&p, "n1", &ms).unwrap();
        assert_eq!(load(&p, "n1"), ms);
        assert!(load(&p, "n9").is_empty(), "another node's memory was used");
        std::fs::write(&p, "{\"node\":").unwrap();
        assert!(load(&p, "n1").is_empty());
    }

    #[test]
    fn remembered_members_join_the_view_dead_until_gossip_has_them() {
        let memory = Memory::new(vec![
            member("n2", 5, "10.32.2.0/24"),
            member("n3", 6, "10.32.3.0/24"),
        ]);
        // Gossip knows n3 (a newer generation, alive, another block).
        let n3 = member("n3", 9, "10.32.4.0/24").record;
        let gossip = [Seen {
            name: "n3",
            generation: 9,
            gossip_addr: "172.31.0.3:6783".parse().unwrap(),
            live: true,
            record: &n3,
        }];
        let view = View::build(gossip.into_iter().chain(memory.seen(|n| n == "n3")));
        let n2 = &view.members["n2"];
        assert!(!n2.live, "a remembered member is never alive");
        assert_eq!(view.members["n3"].generation, 9, "gossip's record wins");
        let owned: Vec<String> = view.claims.keys().map(|b| b.to_string()).collect();
        assert_eq!(owned, ["10.32.2.0/24", "10.32.4.0/24"]);
        assert_eq!(view.owner("10.32.2.0/24".parse().unwrap()).unwrap().0, "n2");
    }
}
