//! `overlay-cni` driven by real CNI clients, not only our own harness:
//! containerd's `ctr run --rm --cni` (libcni inside ctr) on two nodes of the
//! namespace lab, and libcni through our Go driver running the chain
//! `overlay-cni` → `portmap` → `loopback` from Debian's reference plugins.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use overlay_tests::{
    Netns,
    cluster::{Cluster, bin_path, result_ip},
    cni_clients::{Containerd, CtrRun, LibCni, ScratchDir},
    require_privileges,
    traffic::{tcp_fetch, tcp_fetch_retry},
};
use serde_json::json;

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A plugin directory holding only `overlay-cni` (the reference plugins
/// come from `/usr/lib/cni`, which ctr and our driver also search).
fn plugin_dir(scratch: &ScratchDir) -> PathBuf {
    let dir = scratch.path().join("bin");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    symlink(bin_path("overlay-cni"), dir.join("overlay-cni")).expect("link overlay-cni");
    dir
}

#[test]
fn ctr_run_containers_on_two_nodes_get_overlay_addresses_reach_each_other_and_release_them() {
    if !require_privileges(
        "ctr_run_containers_on_two_nodes_get_overlay_addresses_reach_each_other_and_release_them",
    ) {
        return;
    }
    let c = Cluster::new(2);
    let scratch = ScratchDir::new("ovlbin", &c.lab.tag);
    let bin = plugin_dir(&scratch);
    let ctrd = Containerd::start(&c.lab.tag);
    let loopback = json!({"type": "loopback"});
    let run = |i: usize, name: &str| {
        let conflist = c.conflist(i, "1.0.0", std::slice::from_ref(&loopback));
        ctrd.run(&CtrRun::new(&c.lab.nodes[i].ns.name, name, &conflist, &bin))
    };
    let c1 = run(0, "web");
    let c2 = run(1, "db");
    let (ip1, ip2) = (c1.ipv4("eth0"), c2.ipv4("eth0"));
    assert!(
        c.lab.nodes[0].block.contains(&ip1),
        "{ip1} not from node 1's block"
    );
    assert!(
        c.lab.nodes[1].block.contains(&ip2),
        "{ip2} not from node 2's block"
    );
    assert_eq!(c.allocated(0), vec![ip1]);
    assert_eq!(c.allocated(1), vec![ip2]);
    c1.exec_ok(&["ping", "-c", "2", "-W", "2", &ip2.to_string()]);
    c2.exec_ok(&["ping", "-c", "2", "-W", "2", &ip1.to_string()]);
    // The chained loopback plugin ran too.
    c1.exec_ok(&["ping", "-c", "1", "-W", "2", "127.0.0.1"]);
    let route = c1.exec_ok(&["ip", "route"]);
    assert!(route.contains("default via 169.254.1.1"), "{route}");

    // --rm: ctr sends DEL (empty CNI_NETNS, cached prevResult) on exit.
    let exit = c1.stop();
    assert!(
        !exit.stderr.contains("failed"),
        "ctr reported a failed DEL: {}",
        exit.stderr
    );
    assert!(c.allocated(0).is_empty(), "--rm did not release {ip1}");
    assert!(c.host_veths(0).is_empty(), "--rm left the host veth");
    assert!(c.endpoints(0).is_empty());
    c2.stop();
    assert!(c.allocated(1).is_empty(), "--rm did not release {ip2}");
    assert!(c.host_veths(1).is_empty());
    assert!(ctrd.containers().is_empty());
}

#[test]
fn libcni_chain_with_portmap_gives_a_working_host_port_and_loopback() {
    if !require_privileges("libcni_chain_with_portmap_gives_a_working_host_port_and_loopback") {
        return;
    }
    let mut c = Cluster::new(2);
    let scratch = ScratchDir::new("ovlbin", &c.lab.tag);
    let bin = plugin_dir(&scratch);
    // An outside client attached to node 1 only.
    let client = Netns::outside_host(
        &c.lab.nodes[0].ns,
        "to-client",
        "192.168.77.1/24",
        &c.lab.tag,
        "client",
        "192.168.77.2/24",
    );

    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true});
    let conflist = c.conflist(0, "1.0.0", &[portmap, json!({"type": "loopback"})]);
    let pod = c.new_pod_ns(0);
    let id = format!("sandbox-{}", c.lab.tag);
    let cni = LibCni::new(
        &c.lab.tag,
        &conflist,
        &[bin.as_path(), Path::new(REFERENCE_PLUGINS)],
    )
    .in_node(&c.lab.nodes[0].ns.name)
    .k8s_pod("default", "web", &id, "0000-web")
    .capability_args(json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    }));
    let versions = cni.versions().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        versions["overlay-cni"].to_string().contains("1.1.0"),
        "{versions}"
    );

    let result = cni
        .add(&id, &pod.path(), "eth0")
        .unwrap_or_else(|e| panic!("{e}"));
    let pod_ip = result_ip(&result);
    assert!(c.lab.nodes[0].block.contains(&pod_ip), "{result}");
    let lo = pod.ip(&["-o", "link", "show", "lo"]);
    assert!(
        lo.contains("UP"),
        "loopback plugin did not bring lo up: {lo}"
    );

    let _server = pod.spawn(&[
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        "SYSTEM:echo hello-from-pod",
    ]);
    let reply = tcp_fetch_retry(&client, "192.168.77.1", 8080, 20);
    assert_eq!(
        reply.as_deref(),
        Some("hello-from-pod"),
        "the outside client did not reach the pod through node:8080"
    );
    // The hostPort also works from a pod on the other node, across the
    // overlay to the node's underlay address.
    let other = c.add_pod(1);
    let node_ip = c.lab.nodes[0].ip.to_string();
    assert_eq!(
        tcp_fetch(&other.ns, &node_ip, 8080).as_deref(),
        Some("hello-from-pod")
    );

    match cni.check(&id, &pod.path(), "eth0") {
        Ok(()) => {}
        // portmap 1.1.1 checks IPv6 DNAT even when it made none
        // (containernetworking/plugins#819); our plugin ran before it.
        Err(e) if e.message.contains("could not check ipv6 dnat") => {}
        Err(e) => panic!("CHECK: {e}"),
    }

    cni.del(&id, &pod.path(), "eth0")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tcp_fetch(&client, "192.168.77.1", 8080),
        None,
        "port still published"
    );
    assert!(c.allocated(0).is_empty(), "DEL did not release {pod_ip}");
    assert!(c.host_veths(0).is_empty());
    cni.del(&id, Path::new(""), "eth0")
        .unwrap_or_else(|e| panic!("second DEL: {e}"));
}
