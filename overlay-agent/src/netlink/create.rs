//! `create_pod_link`: the order of the steps and the rollback.

use rtnetlink::Handle;

use super::{
    NetlinkError, PodLink, PodLinkSpec, host, links, pod,
    session::{self, CALLER_NETNS, PodNetns},
    veth,
};

/// Wires a pod: a veth pair with `spec.host_ifname` in the caller's
/// namespace and `spec.pod_ifname` in `spec.pod_netns`, the pod's address,
/// routes and gateway neighbour, and the host's route to the pod.
///
/// A host veth left under the same name by an earlier, crashed attempt is
/// deleted first (taking its pod end with it). Fails with
/// [`NetlinkError::NetnsMissing`] or [`NetlinkError::PodIfnameTaken`]
/// before creating anything; any failure after the pair exists deletes it
/// again, so nothing half-made is left.
pub fn create_pod_link(spec: &PodLinkSpec<'_>) -> Result<PodLink, NetlinkError> {
    spec.validate()?;
    let netns = &PodNetns::open(spec.pod_netns)?;
    session::with_pod(netns, |host, pod| async move {
        let label = netns.label();
        // The leftover goes first: if the crash came after the pair was
        // made, its pod end holds `pod_ifname` and would otherwise make
        // every retry fail with `PodIfnameTaken`.
        if links::delete_by_name(&host, spec.host_ifname, CALLER_NETNS).await? {
            tracing::info!(ifname = spec.host_ifname, "deleted a leftover host veth");
        }
        if links::by_name(&pod, spec.pod_ifname, &label)
            .await?
            .is_some()
        {
            return Err(NetlinkError::PodIfnameTaken {
                ifname: spec.pod_ifname.to_owned(),
                netns: spec.pod_netns.to_owned(),
            });
        }
        veth::create(&host, spec, netns).await?;
        match configure(&host, &pod, spec, &label).await {
            Ok(link) => Ok(link),
            Err(e) => {
                if let Err(rollback) =
                    links::delete_by_name(&host, spec.host_ifname, CALLER_NETNS).await
                {
                    tracing::warn!(
                        ifname = spec.host_ifname,
                        error = %rollback,
                        "deleting a half-wired host veth failed"
                    );
                }
                Err(e)
            }
        }
    })
}

/// Everything after the pair exists.
async fn configure(
    host: &Handle,
    pod: &Handle,
    spec: &PodLinkSpec<'_>,
    netns: &str,
) -> Result<PodLink, NetlinkError> {
    let host_link = links::expect_by_name(host, spec.host_ifname, CALLER_NETNS).await?;
    let pod_link = links::expect_by_name(pod, spec.pod_ifname, netns).await?;
    let link = PodLink {
        host_ifindex: host_link.header.index,
        host_mac: links::expect_mac(&host_link, spec.host_ifname, CALLER_NETNS)?,
        pod_ifindex: pod_link.header.index,
        pod_mac: links::expect_mac(&pod_link, spec.pod_ifname, netns)?,
    };
    host::configure(host, spec, link.host_ifindex).await?;
    pod::configure(pod, spec, link.pod_ifindex, link.host_mac, netns).await?;
    Ok(link)
}
