//! Everything that crosses the kernel/user boundary, defined once.
//!
//! The eBPF programs (`overlay-ebpf`) and the agent (`overlay-agent`) both
//! depend on this crate, so a map layout, a map name or a drop reason can
//! only change in one place. Every map value is `#[repr(C)]`, has its padding
//! written out and its size checked at compile time; a layout change must
//! bump the `_v1` suffix of the map name.
#![no_std]

pub mod consts;
pub mod maps;
pub mod stats;

pub use consts::*;
pub use maps::*;
pub use stats::*;
