//! The conflist appears only once the node can serve pods: a node that
//! joins a running gossip cluster has no `10-overlay.conflist` in its CNI
//! configuration directory until its own block settles, then has one; a
//! runtime that (like the kubelet) calls ADD only once a network
//! configuration exists never sees an ADD fail; an ADD forced before that
//! gets the specification's "try again later" (code 11). The agent keeps
//! the file when it stops.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use overlay_tests::{
    Netns,
    cluster::{Cluster, CniCall, bin_path, invoke, result_ip},
    cni_clients::LibCni,
    privileged,
};

/// The joining node.
const JOINER: usize = 2;
/// Bound on the joiner settling its block (lab settle 5 s plus joining).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

/// STATUS through the plugin: `Ok` when ready, else the CNI error code.
fn status(c: &Cluster, i: usize) -> Result<(), (i32, String)> {
    let out = invoke(
        &c.lab.nodes[i].ns,
        &CniCall {
            command: "STATUS",
            container_id: "status",
            netns: None,
            ifname: "eth0",
            config: &c.config(i, "1.1.0"),
        },
    );
    if out.code == 0 {
        Ok(())
    } else {
        Err((
            out.json["code"].as_i64().unwrap_or(-1) as i32,
            out.stdout.clone(),
        ))
    }
}

#[test]
fn a_joining_node_gets_its_conflist_only_once_its_block_settles_and_no_add_fails() {
    privileged!("a_joining_node_gets_its_conflist_only_once_its_block_settles_and_no_add_fails");
    let mut c = Cluster::gossip_unstarted(3);
    for i in 0..JOINER {
        c.spawn_agent(i);
    }
    for i in 0..JOINER {
        c.wait_ready(i, Duration::from_secs(40));
    }
    let conflist = c.agents[JOINER].conflist_path();
    assert!(!conflist.exists(), "a conflist before the agent ran");

    let spawned = Instant::now();
    c.spawn_agent(JOINER);
    let node = c.lab.nodes[JOINER].ns.name.clone();

    // The agent answers, not ready (code 50): an ADD forced now gets 11
    // from the agent itself (not from a plugin that found no agent) and
    // leaves nothing behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match status(&c, JOINER) {
            // The agent's own answer (the plugin also says 50 when it
            // finds no agent, with "not running").
            Err((50, msg)) if !msg.contains("not running") => break,
            Err((50 | 11, _)) => {}
            Ok(()) => panic!("ready at once: no window to test\n{}", c.log(JOINER)),
            Err(other) => panic!("STATUS: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the agent never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let early = Netns::new(&c.lab.tag, "early");
    let path = early.path().display().to_string();
    let out = c.cni(
        JOINER,
        &CniCall {
            command: "ADD",
            container_id: "forced-early",
            netns: Some(&path),
            ifname: "eth0",
            config: &c.config(JOINER, "1.0.0"),
        },
    );
    let msg = out.err(11);
    assert!(
        msg.contains("no address block") || msg.contains("no topology applied"),
        "the 11 must come from the agent's readiness: {msg}"
    );
    assert_eq!(c.host_veths(JOINER), Vec::<String>::new(), "veth left");
    assert!(!conflist.exists(), "conflist while not ready");
    println!("forced ADD before ready: code 11 ({msg})");

    // Watch it: a conflist seen before a STATUS that still says "not
    // ready" would be a conflist written too early (readiness only goes
    // from false to true).
    let mut not_ready_samples = 0;
    let mut forced_without_block = false;
    let mut ready_at = None;
    let appeared_at = loop {
        let present = conflist.exists();
        let st = status(&c, JOINER);
        match (&st, present) {
            (Err(e), true) => panic!(
                "conflist present while the agent is not ready ({e:?}) {:?} after start:\n{}",
                spawned.elapsed(),
                c.log(JOINER)
            ),
            (Err((_, msg)), false) => {
                not_ready_samples += 1;
                // Topology applied, block claimed but not settled: the
                // case that used to fail ADD with 101.
                if !forced_without_block && msg.contains("owns no address block") {
                    let ns = Netns::new(&c.lab.tag, "noblock");
                    let path = ns.path().display().to_string();
                    let out = c.cni(
                        JOINER,
                        &CniCall {
                            command: "ADD",
                            container_id: "forced-no-block",
                            netns: Some(&path),
                            ifname: "eth0",
                            config: &c.config(JOINER, "1.0.0"),
                        },
                    );
                    let msg = out.err(11);
                    assert!(msg.contains("no address block"), "{msg}");
                    assert_eq!(c.host_veths(JOINER), Vec::<String>::new(), "veth left");
                    println!("forced ADD with no settled block: code 11 ({msg})");
                    forced_without_block = true;
                }
            }
            (Ok(()), false) => {
                ready_at.get_or_insert_with(Instant::now);
            }
            (Ok(()), true) => break Instant::now(),
        }
        assert!(
            spawned.elapsed() < SETTLE_TIMEOUT,
            "no conflist within {SETTLE_TIMEOUT:?}:\n{}",
            c.log(JOINER)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready_at = ready_at.unwrap_or(appeared_at);
    assert!(
        forced_without_block,
        "never saw the agent answer \"owns no address block\" before it was ready"
    );
    assert!(
        not_ready_samples > 10,
        "only {not_ready_samples} samples before ready: the window was not watched"
    );
    println!(
        "joiner: ready {:?} after start, conflist {:?} after ready ({not_ready_samples} \
         not-ready samples without one)",
        ready_at - spawned,
        appeared_at - ready_at
    );
    assert!(
        appeared_at - ready_at < Duration::from_secs(2),
        "conflist came {:?} after ready",
        appeared_at - ready_at
    );

    // The runtime's view: the conflist exists, so pods come, through
    // libcni with exactly that file. Every ADD succeeds.
    let text = std::fs::read_to_string(&conflist).expect("conflist");
    let list: serde_json::Value = serde_json::from_str(&text).expect("conflist is JSON");
    assert_eq!(list["plugins"][0]["type"], "overlay-cni", "{text}");
    assert_eq!(
        list["plugins"][0]["agentSocket"],
        c.agents[JOINER].socket.display().to_string()
    );
    let plugin_dir = bin_path("overlay-cni");
    let plugin_dir: &Path = plugin_dir.parent().expect("bin dir");
    let cni = LibCni::new(&c.lab.tag, &text, &[plugin_dir]).in_node(&node);
    let mut pods = Vec::new();
    for k in 0..3 {
        let ns = Netns::new(&c.lab.tag, &format!("j{k}"));
        let id = format!("{}-j{k}", c.lab.tag);
        let result = cni
            .add(&id, &ns.path(), "eth0")
            .unwrap_or_else(|e| panic!("ADD {k} after the conflist appeared failed: {e}"));
        pods.push((ns, id, result_ip(&result)));
    }
    let block: ipnet::Ipv4Net = c.status(JOINER)["gossip"]["blocks"]
        .as_array()
        .and_then(|b| b.first())
        .and_then(|b| b["block"].as_str())
        .and_then(|b| b.parse().ok())
        .expect("the joiner's block");
    for (_, _, ip) in &pods {
        assert!(block.contains(ip), "{ip} not in the joiner's block {block}");
    }
    assert!(
        pods[0].0.ping(&pods[1].2.to_string(), 2),
        "pods on the joiner cannot reach each other"
    );
    println!("3 ADDs through libcni with the written conflist: all succeeded");

    for (ns, id, _) in &pods {
        cni.del(id, &ns.path(), "eth0")
            .unwrap_or_else(|e| panic!("DEL {id}: {e}"));
    }

    // Stopping the agent leaves the conflist (pods keep their network; a
    // restarted agent serves them).
    assert!(c.stop_agent(JOINER), "no clean exit:\n{}", c.log(JOINER));
    assert_eq!(
        std::fs::read_to_string(&conflist).expect("conflist kept after stop"),
        text
    );
}
