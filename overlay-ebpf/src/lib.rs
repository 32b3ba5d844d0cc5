//! Empty library target: lets `overlay-agent` name this crate as a build
//! dependency so cargo rebuilds the agent when the programs change. The
//! programs themselves are the `overlay` binary target.
#![no_std]
