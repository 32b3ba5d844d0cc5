//! The host end, in the caller's namespace: up and a `/32` route to the pod,
//! so the node reaches the pod (kubelet probes, return traffic of
//! masqueraded egress). Also the host-side public calls: delete and list.

use rtnetlink::Handle;

use super::{
    NetlinkError, PodLinkSpec, check_ifname, links,
    routes::Route,
    session::{self, CALLER_NETNS},
};

/// Configures the host end (index `ifindex`) of a fresh pair.
pub(super) async fn configure(
    host: &Handle,
    spec: &PodLinkSpec<'_>,
    ifindex: u32,
) -> Result<(), NetlinkError> {
    links::set_up(host, ifindex, spec.host_ifname, CALLER_NETNS).await?;
    pod_route(spec, ifindex).add(host, CALLER_NETNS).await
}

/// `pod_ip/32 dev host_ifname scope link`.
pub(super) fn pod_route<'a>(spec: &PodLinkSpec<'a>, ifindex: u32) -> Route<'a> {
    Route::Link {
        dst: spec.pod_ip,
        ifindex,
        ifname: spec.host_ifname,
    }
}

/// Deletes the host veth `host_ifname` in the caller's namespace, which
/// takes its pod end and every route through either with it. Returns
/// whether it existed, so deleting twice is fine.
pub fn delete_pod_link(host_ifname: &str) -> Result<bool, NetlinkError> {
    check_ifname(host_ifname)?;
    session::on_host(
        |host| async move { links::delete_by_name(&host, host_ifname, CALLER_NETNS).await },
    )
}

/// Names of the interfaces in the caller's namespace that start with
/// `prefix`, e.g. to find host veths whose pods are gone.
pub fn host_links_with_prefix(prefix: &str) -> Result<Vec<String>, NetlinkError> {
    let mut names =
        session::on_host(|host| async move { links::names(&host, CALLER_NETNS).await })?;
    names.retain(|n| n.starts_with(prefix));
    names.sort();
    Ok(names)
}
