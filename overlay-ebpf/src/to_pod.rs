//! `to_pod`: attached at TC **egress of each pod's host-side veth**, so it
//! sees what the host stack routes to the pod: from the node itself, from
//! host-network pods and from the outside world. Traffic from other pods
//! never passes here: `from_pod` and `from_uplink` deliver it with
//! `bpf_redirect_peer`, which skips this hook, and decide its ingress
//! themselves.
//!
//! Its only job is the pod's NetworkPolicy ingress. The node's own address
//! is always allowed in (the kubelet's probes, as Kubernetes expects).

use aya_ebpf::{macros::classifier, programs::TcContext};
use overlay_common::Stat;

use crate::{
    maps::config,
    packet::{self, L3},
    policy::{self, Check},
    verdict::{OK, Verdict, finish},
};

/// Entry point: one counter per packet, one exit for drops.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    finish(try_to_pod(&ctx))
}

#[inline(always)]
fn try_to_pod(ctx: &TcContext) -> Verdict {
    let Some(cfg) = config() else {
        return Ok((OK, Stat::NotConfigured));
    };
    if !packet::is_ipv4(ctx, 0)? {
        return Ok((OK, Stat::ToPodPassed));
    }
    let ip = packet::ipv4(ctx, L3)?;
    policy::decide(
        ctx,
        L3,
        &ip,
        &Check {
            egress: None,
            ingress: Some(ip.dst),
            ingress_exempt: ip.src == cfg.node_ip,
        },
    )?;
    Ok((OK, Stat::ToPodPassed))
}
