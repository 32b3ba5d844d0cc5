//! Node IPAM: pod addresses from this node's blocks, persisted crash-safely.
