//! The overlay's kernel datapath.
//!
//! One module per attach point, each a thin `#[classifier]` entry around a
//! `try_*` body that returns a [`Verdict`] or the drop reason ([`Stat`]); the
//! entry bumps exactly one counter per packet; `probe` answers datapath
//! liveness probes for `from_uplink`; `direct` sends to and accepts from
//! on-link nodes without encapsulation; `from_wireguard` delivers what
//! the WireGuard device decrypted; `to_pod` (TC egress of a pod's
//! veth) and `policy` + `conntrack` + `flow` enforce NetworkPolicy. Shared helpers: `maps` (the
//! map definitions), `packet` (header parsing), `vxlan` (building and
//! checking the outer headers).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod direct;
#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod from_pod;
#[cfg(target_arch = "bpf")]
mod from_uplink;
#[cfg(target_arch = "bpf")]
mod from_wireguard;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod probe;
#[cfg(target_arch = "bpf")]
mod to_pod;
#[cfg(target_arch = "bpf")]
mod verdict;
mod vxlan;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

/// Host builds (`cargo check`, clippy, unit tests of `vxlan`) need a `main`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
