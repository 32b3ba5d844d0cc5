//! The `overlay-cni` plugin and `overlay-agent run`, end to end: pods made
//! through the plugin binary exactly as a CNI runtime calls it, on nodes
//! running real agents.

use std::{collections::BTreeSet, net::Ipv4Addr};

use overlay_tests::{
    cluster::{CniCall, Cluster},
    require_privileges,
};

#[test]
fn pods_added_through_the_plugin_reach_each_other_across_nodes_and_on_one_node() {
    if !require_privileges("pods_added_through_the_plugin_reach_each_other") {
        return;
    }
    let mut c = Cluster::new(2);
    let a = c.add_pod(0);
    let b = c.add_pod(0);
    let d = c.add_pod(1);
    assert!(c.lab.nodes[0].block.contains(&a.ip), "{}", a.result);
    assert!(c.lab.nodes[1].block.contains(&d.ip), "{}", d.result);
    let ips: BTreeSet<Ipv4Addr> = [a.ip, b.ip, d.ip].into();
    assert_eq!(ips.len(), 3, "addresses are unique");
    for (from, to) in [(&a, &b), (&a, &d), (&d, &b), (&b, &a)] {
        assert!(
            from.ns.ping(&to.ip.to_string(), 2),
            "{} cannot reach {}; agent log:\n{}",
            from.ip,
            to.ip,
            c.log(from.node)
        );
    }
    // What the pod sees: eth0 with the address, MTU of uplink - 50.
    let addr = a.ns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{}/32", a.ip)), "{addr}");
    let link = a.ns.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    for p in [&a, &b, &d] {
        c.del_pod(p);
    }
    assert!(c.host_veths(0).is_empty() && c.host_veths(1).is_empty());
    assert!(c.allocated(0).is_empty() && c.allocated(1).is_empty());
    assert!(c.endpoints(0).is_empty() && c.endpoints(1).is_empty());
    let _ = CniCall {
        command: "DEL",
        container_id: "x",
        netns: None,
        ifname: "eth0",
        config: "",
    };
}
