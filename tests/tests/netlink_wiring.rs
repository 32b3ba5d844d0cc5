//! Pod wiring over rtnetlink (`overlay_agent::netlink`) between a "node"
//! namespace, where the library runs, and a "pod" namespace; the results
//! are read back with iproute2 and exercised with ping.

use std::{net::Ipv4Addr, path::Path};

use overlay_agent::netlink::{
    NetlinkError, PodLink, PodLinkSpec, check_pod_link, create_pod_link, delete_pod_link,
    host_links_with_prefix,
};
use overlay_tests::{Netns, netns::unique_tag, require_privileges};

/// Host veth name in the node namespace; each test has its own node.
const HOST_IF: &str = "ovlh0";
const HOST_PREFIX: &str = "ovlh";
const POD_IF: &str = "eth0";
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 32, 1, 5);
/// The only address of the node namespace, on `lo`.
const NODE_IP: &str = "172.30.0.1";
const MTU: u32 = 1400;

fn gateway() -> Ipv4Addr {
    Ipv4Addr::from(overlay_common::POD_GATEWAY)
}

fn spec(pod_netns: &Path) -> PodLinkSpec<'_> {
    PodLinkSpec {
        host_ifname: HOST_IF,
        pod_netns,
        pod_ifname: POD_IF,
        pod_ip: POD_IP,
        gateway: gateway(),
        mtu: MTU,
    }
}

/// A node and a pod namespace; the node has `NODE_IP/32` on `lo` and
/// nothing else.
fn node_and_pod() -> (Netns, Netns) {
    let tag = unique_tag();
    let node = Netns::new(&tag, "node");
    node.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]);
    let pod = Netns::new(&tag, "pod");
    (node, pod)
}

/// Runs `f` on a thread inside `node`, as the agent runs in a node's
/// namespace.
fn in_node<T: Send>(node: &Netns, f: impl FnOnce() -> T + Send) -> T {
    overlay_agent::netns::run_in(&node.path(), f)
        .unwrap_or_else(|e| panic!("entering {}: {e}", node.name))
}

fn create(node: &Netns, pod: &Netns) -> PodLink {
    let pod_path = pod.path();
    in_node(node, || create_pod_link(&spec(&pod_path)))
        .unwrap_or_else(|e| panic!("wiring {} from {}: {e:?}", pod.name, node.name))
}

fn host_links(node: &Netns) -> Vec<String> {
    in_node(node, || host_links_with_prefix(HOST_PREFIX))
        .unwrap_or_else(|e| panic!("listing links in {}: {e:?}", node.name))
}

/// Whether one line of `output` starts with `parts[0]` and contains the rest.
fn has_line(output: &str, parts: &[&str]) -> bool {
    output
        .lines()
        .any(|l| l.starts_with(parts[0]) && parts[1..].iter().all(|p| l.contains(p)))
}

fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

#[test]
fn a_wired_pod_has_its_address_routes_gateway_neighbour_and_mtu_and_reaches_the_node() {
    if !require_privileges(
        "a_wired_pod_has_its_address_routes_gateway_neighbour_and_mtu_and_reaches_the_node",
    ) {
        return;
    }
    let (node, pod) = node_and_pod();
    let link = create(&node, &pod);

    assert_eq!(link.host_ifindex, node.ifindex(HOST_IF), "host ifindex");
    assert_eq!(link.pod_ifindex, pod.ifindex(POD_IF), "pod ifindex");
    let pod_link = pod.ip(&["link", "show", "dev", POD_IF]);
    assert!(
        pod_link.contains(&fmt_mac(&link.pod_mac)),
        "pod MAC {} not in {pod_link}",
        fmt_mac(&link.pod_mac)
    );
    assert!(pod_link.contains(&format!("mtu {MTU} ")), "{pod_link}");
    assert!(pod_link.contains(",UP"), "pod end is down: {pod_link}");
    let host_link = node.ip(&["-d", "link", "show", "dev", HOST_IF]);
    assert!(host_link.contains(&fmt_mac(&link.host_mac)), "{host_link}");
    assert!(host_link.contains(&format!("mtu {MTU} ")), "{host_link}");
    assert!(host_link.contains(",UP"), "host end is down: {host_link}");
    assert!(
        host_link.contains("veth"),
        "host end is no veth: {host_link}"
    );

    let addrs = pod.ip(&["-4", "-o", "addr", "show", "dev", POD_IF]);
    assert!(addrs.contains(&format!("inet {POD_IP}/32 ")), "{addrs}");
    let routes = pod.ip(&["-4", "route", "show"]);
    assert!(
        has_line(
            &routes,
            &[&format!("default via {} dev {POD_IF} ", gateway())]
        ),
        "no default route via the gateway:\n{routes}"
    );
    assert!(
        has_line(
            &routes,
            &[&format!("{} dev {POD_IF} ", gateway()), "scope link"]
        ),
        "no link route to the gateway:\n{routes}"
    );
    let neigh = pod.ip(&["neigh", "show", &gateway().to_string(), "dev", POD_IF]);
    assert!(
        neigh.contains(&format!("lladdr {} PERMANENT", fmt_mac(&link.host_mac))),
        "no permanent gateway neighbour with the host MAC: {neigh:?}"
    );
    let host_routes = node.ip(&["-4", "route", "show", &format!("{POD_IP}/32")]);
    assert!(
        host_routes.contains(&format!("{POD_IP} dev {HOST_IF}"))
            && host_routes.contains("scope link"),
        "no host route to the pod: {host_routes:?}"
    );

    assert!(
        pod.ping(NODE_IP, 3),
        "the pod cannot ping the node at {NODE_IP}"
    );
    assert!(
        node.ping(&POD_IP.to_string(), 3),
        "the node cannot ping the pod at {POD_IP}"
    );
    assert_eq!(host_links(&node), [HOST_IF], "host veths in the node");
}

#[test]
fn an_interface_name_taken_in_the_pod_is_refused_and_leaves_no_host_veth() {
    if !require_privileges("an_interface_name_taken_in_the_pod_is_refused_and_leaves_no_host_veth")
    {
        return;
    }
    let (node, pod) = node_and_pod();
    // Not a dummy: this kernel may lack the module; a veth is built in.
    pod.ip(&[
        "link", "add", POD_IF, "type", "veth", "peer", "name", "taken0",
    ]);
    let pod_path = pod.path();

    let e =
        in_node(&node, || create_pod_link(&spec(&pod_path))).expect_err("eth0 is taken in the pod");
    assert!(
        matches!(&e, NetlinkError::PodIfnameTaken { ifname, netns } if ifname == POD_IF && *netns == pod_path),
        "wrong error: {e:?}"
    );
    assert!(host_links(&node).is_empty(), "a host veth was left behind");
    let own = pod.ip(&["link", "show", "dev", POD_IF]);
    assert!(
        own.contains("eth0@taken0"),
        "the pod's own eth0 was touched: {own}"
    );
}

#[test]
fn a_nonexistent_pod_netns_is_reported_and_nothing_is_created() {
    if !require_privileges("a_nonexistent_pod_netns_is_reported_and_nothing_is_created") {
        return;
    }
    let (node, _pod) = node_and_pod();
    let missing = overlay_agent::netns::named(&format!("ovl-{}-missing", unique_tag()));

    let e = in_node(&node, || create_pod_link(&spec(&missing)))
        .expect_err("the pod netns does not exist");
    assert!(
        matches!(&e, NetlinkError::NetnsMissing { path, .. } if *path == missing),
        "wrong error: {e:?}"
    );
    assert!(host_links(&node).is_empty(), "a host veth was created");
}

#[test]
fn a_leftover_host_veth_with_the_same_name_is_replaced() {
    if !require_privileges("a_leftover_host_veth_with_the_same_name_is_replaced") {
        return;
    }
    let (node, pod) = node_and_pod();
    node.ip(&[
        "link",
        "add",
        HOST_IF,
        "type",
        "veth",
        "peer",
        "name",
        "leftover0",
    ]);
    let old = node.ifindex(HOST_IF);

    let link = create(&node, &pod);
    assert_ne!(link.host_ifindex, old, "the leftover was kept");
    assert!(
        !node.try_exec(&["ip", "link", "show", "dev", "leftover0"]),
        "the leftover's peer is still there"
    );
    assert!(
        pod.ping(NODE_IP, 2),
        "the replacement does not carry traffic"
    );
}

#[test]
fn a_leftover_pair_whose_pod_end_holds_the_pod_name_is_replaced() {
    if !require_privileges("a_leftover_pair_whose_pod_end_holds_the_pod_name_is_replaced") {
        return;
    }
    // A crash between creating the pair and configuring it.
    let (node, pod) = node_and_pod();
    Netns::veth_pair(&node, HOST_IF, &pod, POD_IF);
    let (old_host, old_pod) = (node.ifindex(HOST_IF), pod.ifindex(POD_IF));

    let link = create(&node, &pod);
    assert_ne!(
        link.host_ifindex, old_host,
        "the leftover host end was kept"
    );
    assert_ne!(link.pod_ifindex, old_pod, "the leftover pod end was kept");
    assert!(
        pod.ping(NODE_IP, 2),
        "the replacement does not carry traffic"
    );
}

#[test]
fn deleting_twice_reports_true_then_false_and_removes_the_pod_interface() {
    if !require_privileges("deleting_twice_reports_true_then_false_and_removes_the_pod_interface") {
        return;
    }
    let (node, pod) = node_and_pod();
    create(&node, &pod);

    let first = in_node(&node, || delete_pod_link(HOST_IF)).expect("first delete");
    let second = in_node(&node, || delete_pod_link(HOST_IF)).expect("second delete");
    assert!(first, "the first delete found nothing");
    assert!(!second, "the second delete found something");
    assert!(
        !pod.try_exec(&["ip", "link", "show", "dev", POD_IF]),
        "the pod interface survived"
    );
    let routes = node.ip(&["-4", "route", "show", &format!("{POD_IP}/32")]);
    assert!(
        routes.trim().is_empty(),
        "the host route survived: {routes:?}"
    );
    assert!(host_links(&node).is_empty(), "host veths remain");
}

#[test]
fn check_passes_on_a_fresh_pod_and_names_the_missing_address() {
    if !require_privileges("check_passes_on_a_fresh_pod_and_names_the_missing_address") {
        return;
    }
    let (node, pod) = node_and_pod();
    let created = create(&node, &pod);
    let pod_path = pod.path();

    let checked = in_node(&node, || check_pod_link(&spec(&pod_path)))
        .unwrap_or_else(|e| panic!("check of a fresh pod failed: {e}"));
    assert_eq!(checked, created, "check reports other links than create");

    pod.ip(&["addr", "del", &format!("{POD_IP}/32"), "dev", POD_IF]);
    let e =
        in_node(&node, || check_pod_link(&spec(&pod_path))).expect_err("the pod address is gone");
    let want = format!("address {POD_IP}/32 on {POD_IF} in {}", pod_path.display());
    assert!(
        matches!(&e, NetlinkError::Check { what } if what.contains(&want)),
        "check must name {want:?}, got: {e}"
    );
}

#[test]
fn a_failure_after_the_pair_exists_removes_the_pair() {
    if !require_privileges("a_failure_after_the_pair_exists_removes_the_pair") {
        return;
    }
    // A route to the pod IP that is not ours makes the host route, added
    // after the pair, fail.
    let (node, pod) = node_and_pod();
    node.ip(&["route", "add", &format!("{POD_IP}/32"), "dev", "lo"]);
    let pod_path = pod.path();

    let e = in_node(&node, || create_pod_link(&spec(&pod_path)))
        .expect_err("the host route to the pod must clash");
    assert!(
        matches!(&e, NetlinkError::AddRoute { route, .. } if route.starts_with(&format!("{POD_IP}/32"))),
        "wrong error: {e:?}"
    );
    assert!(
        host_links(&node).is_empty(),
        "the host veth was left behind"
    );
    assert!(
        !pod.try_exec(&["ip", "link", "show", "dev", POD_IF]),
        "the pod interface was left behind"
    );
}
