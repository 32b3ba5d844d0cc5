//! NetworkPolicy at scale, unit level: compile Pods, Namespaces and
//! NetworkPolicies of a large synthetic cluster for one node, and write the
//! result into real policy maps (a datapath loaded in a pin directory of
//! its own) by diff, timing each step and counting map entries.
//!
//! The cluster: `namespaces` namespaces (label `team`), each with `apps`
//! apps of equal size (labels `app`, `tier`, a named port `http`), for
//! `pods` pods in all; `policies` policies spread over the namespaces,
//! each selecting one app and allowing, in turn: another app of its
//! namespace on `http`; every app of a tier in namespaces of a team on a
//! port range; an ipBlock with an except (egress). The node holds
//! `local` pods picked evenly across the cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use overlay_agent::policy::{
    Compiled, Identities, Inputs, PolicyMaps, compile,
    types::{Namespace, NetworkPolicy, Pod},
};
use serde_json::json;

use crate::lab::Underlay;

/// Sizes of the synthetic cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Pods in the cluster.
    pub pods: usize,
    /// NetworkPolicies.
    pub policies: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// Apps (label identities) per namespace.
    pub apps: usize,
    /// Pods on the node compiled for.
    pub local: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            pods: 100_000,
            policies: 1_000,
            namespaces: 100,
            apps: 20,
            local: 110,
        }
    }
}

/// One measured step.
#[derive(Clone, Debug)]
pub struct Step {
    /// What was done.
    pub what: String,
    /// Compile time.
    pub compile: Duration,
    /// Map update time (`None` without maps).
    pub update: Option<Duration>,
    /// Entries written and removed by the update.
    pub changed: Option<(usize, usize)>,
}

/// What the bench found.
#[derive(Clone, Debug)]
pub struct Results {
    /// The sizes.
    pub sizes: Sizes,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Entries of the compiled maps after the first step.
    pub identities: usize,
    /// Distinct label identities among them.
    pub distinct_identities: usize,
    /// See `identities`.
    pub rules: usize,
    /// See `identities`.
    pub cidrs: usize,
    /// Isolated local pods.
    pub isolated: usize,
    /// Why the kernel maps part was left out, if it was.
    pub maps_skipped: Option<String>,
}

fn pod_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i).expect("pod index fits") + (10 << 24) + (32 << 16);
    Ipv4Addr::from(n)
}

struct World {
    pods: BTreeMap<String, Pod>,
    namespaces: BTreeMap<String, Namespace>,
    policies: BTreeMap<String, NetworkPolicy>,
    local: BTreeSet<Ipv4Addr>,
}

fn pod(ns: usize, app: usize, i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": format!("ns{ns}"),
                     "labels": {"app": format!("app{app}"), "tier": format!("t{}", app % 3)}},
        "spec": {"nodeName": "n", "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8000 + (app % 7) as u16, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": pod_ip(i).to_string()},
    }))
    .expect("pod JSON")
}

fn policy(s: &Sizes, k: usize) -> NetworkPolicy {
    let ns = k % s.namespaces;
    let app = (k / s.namespaces) % s.apps;
    let spec = match k % 3 {
        0 => json!({
            "podSelector": {"matchLabels": {"app": format!("app{app}")}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app{}", (app + 1) % s.apps)}}}],
                         "ports": [{"port": "http"}]}],
        }),
        1 => json!({
            "podSelector": {"matchLabels": {"app": format!("app{app}")}},
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                             {"key": "team", "operator": "In", "values": [format!("team{}", ns % 10)]}]},
                          "podSelector": {"matchLabels": {"tier": format!("t{}", app % 3)}}}],
                         "ports": [{"port": 9000, "endPort": 9100}, {"port": 53, "protocol": "UDP"}]}],
        }),
        _ => json!({
            "podSelector": {"matchLabels": {"app": format!("app{app}")}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": format!("192.168.{}.0/24", k % 256),
                                            "except": [format!("192.168.{}.128/25", k % 256)]}},
                               {"namespaceSelector": {"matchLabels": {"team": format!("team{}", ns % 10)}}}],
                        "ports": [{"port": 443}]}],
        }),
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("pol{k}"), "namespace": format!("ns{ns}")},
        "spec": spec,
    }))
    .expect("policy JSON")
}

fn world(s: &Sizes) -> World {
    let mut w = World {
        pods: BTreeMap::new(),
        namespaces: BTreeMap::new(),
        policies: BTreeMap::new(),
        local: BTreeSet::new(),
    };
    for ns in 0..s.namespaces {
        let n: Namespace = serde_json::from_value(json!({
            "metadata": {"name": format!("ns{ns}"), "labels": {"team": format!("team{}", ns % 10)}}
        }))
        .expect("namespace JSON");
        w.namespaces.insert(n.metadata.name.clone(), n);
    }
    let per_app = s.pods.div_ceil(s.namespaces * s.apps);
    for i in 0..s.pods {
        let group = i / per_app;
        let p = pod(group % s.namespaces, (group / s.namespaces) % s.apps, i);
        w.pods.insert(p.key(), p);
    }
    let stride = (s.pods / s.local.max(1)).max(1);
    w.local = (0..s.local)
        .map(|j| pod_ip((j * stride) % s.pods))
        .collect();
    for k in 0..s.policies {
        let p = policy(s, k);
        w.policies.insert(p.key(), p);
    }
    w
}

fn run_compile(w: &World, ids: &mut Identities) -> (Compiled, Duration) {
    let t = Instant::now();
    let c = compile(
        &Inputs {
            pods: &w.pods,
            namespaces: &w.namespaces,
            policies: &w.policies,
            local: &w.local,
        },
        ids,
    );
    (c, t.elapsed())
}

/// Runs the bench; `maps` are real policy maps to write into, if any.
pub fn run(sizes: Sizes, mut maps: Option<PolicyMaps>, maps_skipped: Option<String>) -> Results {
    let mut w = world(&sizes);
    let mut ids = Identities::default();
    let mut steps = Vec::new();
    let mut applied = Compiled::default();
    let mut step = |what: &str, w: &World, ids: &mut Identities, applied: &mut Compiled| {
        let (c, compile) = run_compile(w, ids);
        let (update, changed) = match maps.as_mut() {
            Some(m) => {
                let t = Instant::now();
                let r = m.update(applied, &c).expect("updating the policy maps");
                (Some(t.elapsed()), Some((r.written, r.removed)))
            }
            None => (None, None),
        };
        steps.push(Step {
            what: what.to_owned(),
            compile,
            update,
            changed,
        });
        *applied = c;
    };
    step("first compile, empty maps", &w, &mut ids, &mut applied);
    let first = applied.clone();
    step("nothing changed", &w, &mut ids, &mut applied);
    // A pod of a selected app changes labels (moves to another app).
    let key = w.pods.keys().nth(sizes.pods / 2).cloned().expect("a pod");
    if let Some(p) = w.pods.get_mut(&key) {
        p.metadata.labels.insert("app".into(), "app-moved".into());
    }
    step("one remote pod relabelled", &w, &mut ids, &mut applied);
    let extra = policy(&sizes, sizes.policies);
    w.policies.insert(extra.key(), extra);
    step("one policy added", &w, &mut ids, &mut applied);
    for i in 0..1000 {
        let p = pod(i % sizes.namespaces, i % sizes.apps, sizes.pods + i);
        w.pods.insert(p.key(), p);
    }
    step("1,000 pods added", &w, &mut ids, &mut applied);
    w.policies.clear();
    step("every policy deleted", &w, &mut ids, &mut applied);
    Results {
        sizes,
        steps,
        identities: first.identities.len(),
        distinct_identities: first.identities.values().collect::<BTreeSet<_>>().len(),
        rules: first.rules.len(),
        cidrs: first.cidrs.len(),
        isolated: first.endpoints.len(),
        maps_skipped,
    }
}

/// The results as Markdown.
pub fn report(r: &Results) -> String {
    let s = &r.sizes;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n## NetworkPolicy compile and map update, {} pods, {} policies, {} namespaces x {} \
         apps, {} local pods\n",
        s.pods, s.policies, s.namespaces, s.apps, s.local
    );
    let _ = writeln!(
        o,
        "Compiled for this node: {} pod addresses with {} distinct identities \
         (ovl_identities_v1, 8 B per entry), {} rules (ovl_policy_v1, 20 B), {} ipBlock regions \
         (ovl_policy_cidrs_v1, 16 B), {} isolated local pods. Every step recompiles \
         everything (O(pods + policies x identities)) and writes only the difference.\n",
        r.identities, r.distinct_identities, r.rules, r.cidrs, r.isolated
    );
    o.push_str("| step | compile ms | map update ms | entries written | removed |\n");
    o.push_str("|---|---:|---:|---:|---:|\n");
    for st in &r.steps {
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} | {} | {} |",
            st.what,
            st.compile.as_secs_f64() * 1e3,
            st.update
                .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3)),
            st.changed.map_or("-".into(), |c| c.0.to_string()),
            st.changed.map_or("-".into(), |c| c.1.to_string()),
        );
    }
    if let Some(why) = &r.maps_skipped {
        let _ = writeln!(o, "\nMap updates not measured: {why}.");
    }
    o
}

/// Loads a datapath in a pin directory of its own under bpffs (removed
/// on drop) and hands out its policy maps.
pub struct BenchMaps {
    pin: std::path::PathBuf,
    _dp: overlay_agent::datapath::Datapath,
}

impl BenchMaps {
    /// Loads it; an error says why not (not root, no bpffs).
    pub fn load() -> Result<(Self, PolicyMaps), String> {
        let pin = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/ovl-policy-bench-{}",
            std::process::id()
        ));
        let dp = overlay_agent::datapath::Datapath::load(&pin)
            .map_err(|e| format!("loading a datapath: {e}"))?;
        let maps = PolicyMaps::open(&pin).map_err(|e| format!("opening its maps: {e}"))?;
        Ok((Self { pin, _dp: dp }, maps))
    }
}

impl Drop for BenchMaps {
    fn drop(&mut self) {
        let _ = overlay_agent::datapath::uninstall(&self.pin);
    }
}

/// What `overlay-bench --policy-only` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The compile/update sizes.
    pub sizes: Sizes,
    /// Repetitions of the datapath comparison (0: none).
    pub datapath_reps: u32,
    /// Seconds of each iperf3 run.
    pub datapath_secs: u32,
    /// The underlay of the two-node lab: [`Underlay::Wire`] (the target's,
    /// the default) or [`Underlay::Veth`].
    pub datapath_underlay: Underlay,
}

/// `overlay-bench --policy-only`'s flags: `--policy-pods N`,
/// `--policy-count N`, `--policy-local N`, `--policy-datapath-reps N`
/// (default 3, 0 for none), `--policy-datapath-secs S` (default 10),
/// `--policy-datapath-underlay wire|veth` (default wire: MTU-sized frames,
/// GRO on receive, the agent's GRO tunnel device, as on a physical NIC).
pub fn parse(args: &[String]) -> Result<Plan, String> {
    let mut s = Sizes::default();
    let (mut reps, mut secs, mut underlay) = (3, 10, Underlay::Wire);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |min: usize, max: usize| -> Result<usize, String> {
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            let n: usize = v
                .parse()
                .map_err(|_| format!("{a}: {v:?} is not a number"))?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{a}: {n} is out of range {min}..={max}"))
            }
        };
        match a.as_str() {
            "--policy-only" => {}
            "--policy-datapath-underlay" => {
                underlay = match it.next().map(String::as_str) {
                    Some("wire") => Underlay::Wire,
                    Some("veth") => Underlay::Veth,
                    Some(v) => return Err(format!("{a}: {v:?} is neither wire nor veth")),
                    None => return Err(format!("{a} needs a value (wire or veth)")),
                }
            }
            "--policy-pods" => s.pods = num(100, 250_000)?,
            "--policy-count" => s.policies = num(1, 100_000)?,
            "--policy-local" => s.local = num(1, 4096)?,
            "--policy-datapath-reps" => reps = num(0, 100)? as u32,
            "--policy-datapath-secs" => secs = num(1, 600)? as u32,
            other => return Err(format!("unexpected argument {other:?} with --policy-only")),
        }
    }
    s.local = s.local.min(s.pods);
    Ok(Plan {
        sizes: s,
        datapath_reps: reps,
        datapath_secs: secs,
        datapath_underlay: underlay,
    })
}

/// The hook of `overlay-bench`: with `--policy-only` among `args`, runs
/// this bench alone and returns its exit code.
pub fn main_if_asked(args: &[String]) -> Option<std::process::ExitCode> {
    if !args.iter().any(|a| a == "--policy-only") {
        return None;
    }
    let plan = match parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("overlay-bench: error: {e}");
            return Some(std::process::ExitCode::from(64));
        }
    };
    let code = run_and_print(plan.sizes);
    if plan.datapath_reps > 0 {
        print!(
            "{}",
            datapath::run(
                plan.datapath_reps,
                plan.datapath_secs,
                plan.datapath_underlay
            )
        );
    }
    Some(code)
}

/// Runs with `sizes`, into real maps when possible, and prints the report.
pub fn run_and_print(sizes: Sizes) -> std::process::ExitCode {
    eprintln!(
        "[policy] compiling {} pods and {} policies for a node of {} pods",
        sizes.pods, sizes.policies, sizes.local
    );
    let loaded = BenchMaps::load();
    let (guard, maps, skipped) = match loaded {
        Ok((g, m)) => (Some(g), Some(m), None),
        Err(why) => (None, None, Some(why)),
    };
    let r = run(sizes, maps, skipped);
    drop(guard);
    print!("{}", report(&r));
    // The table above goes to stdout; keep the closing newline there.
    println!();
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_world_compiles_isolates_and_is_opened_again_by_deleting_every_policy() {
        let sizes = Sizes {
            pods: 2_000,
            policies: 30,
            namespaces: 10,
            apps: 5,
            local: 50,
        };
        let r = run(sizes, None, Some("unit test".into()));
        assert_eq!(r.identities, 2_000);
        assert!(r.isolated > 0 && r.rules > 0 && r.cidrs > 0, "{r:?}");
        assert_eq!(r.steps.len(), 6);
        assert!(report(&r).contains("one policy added"));
    }
}

/// Throughput and latency with a 20-rule policy on both pods against no
/// policy, in one run.
pub mod datapath {
    use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, time::Duration};

    use overlay_agent::policy::{Compiled, Identities, Inputs, PolicyMaps, compile};
    use serde_json::json;

    use crate::{
        lab::{Lab, LabOptions, Mode, Underlay},
        netns::Netns,
    };

    const IPERF_PORT: u16 = 5201;
    const SOCKPERF_PORT: u16 = 11111;

    /// One repetition of one configuration.
    #[derive(Clone, Copy, Debug)]
    pub struct Sample {
        /// iperf3 TCP, one stream, Gbit/s.
        pub gbps: f64,
        /// sockperf TCP ping-pong 64 B, average full round trip, µs.
        pub rtt_us: f64,
    }

    /// Median of `v`.
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// The policy of each pod: 10 ingress and 10 egress rules, each
    /// allowing another port; one of each matches the measured traffic
    /// (iperf3 and sockperf ports, and their replies through conntrack).
    fn policy(ns: &str) -> serde_json::Value {
        let rule = |i: u16, to: bool| {
            let port = if i == 0 {
                json!([{"port": IPERF_PORT}, {"port": SOCKPERF_PORT}])
            } else {
                json!([{"port": 20000 + i, "endPort": 20100 + i}])
            };
            let peer = json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": format!("r{i}")}}},
                              {"ipBlock": {"cidr": format!("10.{i}.0.0/16"), "except": [format!("10.{i}.1.0/24")]}}]);
            let peer = if i == 0 {
                json!([{"namespaceSelector": {}}])
            } else {
                peer
            };
            if to {
                json!({"to": peer, "ports": port})
            } else {
                json!({"from": peer, "ports": port})
            }
        };
        json!({
            "metadata": {"name": "twenty-rules", "namespace": ns},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": (0..10).map(|i| rule(i, false)).collect::<Vec<_>>(),
                "egress": (0..10).map(|i| rule(i, true)).collect::<Vec<_>>(),
            }
        })
    }

    /// The compiled maps of node `i` (its one pod local), with the policy
    /// or without.
    fn compiled(lab: &Lab, i: usize, with_policy: bool) -> Compiled {
        let mut pods = BTreeMap::new();
        for (n, node) in lab.nodes.iter().enumerate() {
            let p: overlay_agent::policy::types::Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("p{n}"), "namespace": "bench", "labels": {"app": "bench"}},
                "status": {"phase": "Running", "podIP": node.pods[0].ip.to_string()},
            }))
            .expect("pod JSON");
            pods.insert(p.key(), p);
        }
        let mut policies = BTreeMap::new();
        if with_policy {
            let p: overlay_agent::policy::types::NetworkPolicy =
                serde_json::from_value(policy("bench")).expect("policy JSON");
            policies.insert(p.key(), p);
        }
        let local = [lab.nodes[i].pods[0].ip].into_iter().collect();
        compile(
            &Inputs {
                pods: &pods,
                namespaces: &BTreeMap::new(),
                policies: &policies,
                local: &local,
            },
            &mut Identities::default(),
        )
    }

    fn set_policy(lab: &Lab, maps: &mut [(PolicyMaps, Compiled)], with_policy: bool) {
        for (i, (m, applied)) in maps.iter_mut().enumerate() {
            let next = compiled(lab, i, with_policy);
            assert!(next.problems.is_empty(), "{:?}", next.problems);
            m.update(applied, &next).expect("updating the policy maps");
            *applied = next;
        }
    }

    fn iperf(client: &Netns, server: &Netns, dst: Ipv4Addr, secs: u32) -> f64 {
        let port = IPERF_PORT.to_string();
        let mut srv = server.spawn(&["taskset", "-c", "0", "iperf3", "-s", "-1", "-p", &port]);
        std::thread::sleep(Duration::from_millis(300));
        let out = client.exec(&[
            "taskset",
            "-c",
            "0",
            "iperf3",
            "-c",
            &dst.to_string(),
            "-p",
            &port,
            "-t",
            &secs.to_string(),
            "-O",
            "1",
            "-C",
            "cubic",
            "-J",
        ]);
        srv.wait_timeout(Duration::from_secs(5));
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("iperf3 throughput")
            / 1e9
    }

    fn sockperf(client: &Netns, server: &Netns, dst: Ipv4Addr, secs: u32) -> f64 {
        let port = SOCKPERF_PORT.to_string();
        let mut srv = server.spawn(&[
            "taskset",
            "-c",
            "0",
            "sockperf",
            "sr",
            "--tcp",
            "-i",
            &dst.to_string(),
            "-p",
            &port,
        ]);
        std::thread::sleep(Duration::from_millis(500));
        let out = client.exec(&[
            "taskset",
            "-c",
            "0",
            "sockperf",
            "pp",
            "--tcp",
            "-i",
            &dst.to_string(),
            "-p",
            &port,
            "-m",
            "64",
            "-t",
            &secs.to_string(),
            "--full-rtt",
        ]);
        srv.signal(libc::SIGTERM);
        srv.wait_timeout(Duration::from_secs(5));
        crate::traffic::parse_sockperf(&out)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    /// Runs `reps` interleaved repetitions of both configurations on a
    /// two-node overlay over `underlay` (the lab's, so a `wire` has
    /// MTU-sized frames, GRO on receive and the GRO tunnel device), and
    /// reports medians and ratios.
    pub fn run(reps: u32, secs: u32, underlay: Underlay) -> String {
        let lab = Lab::new(&LabOptions::uniform(Mode::Overlay, 2, 1).on(underlay));
        let underlay = match underlay {
            Underlay::Wire => {
                "`wire` underlay (MTU-sized frames, GRO on receive, GRO tunnel device)"
            }
            Underlay::Veth => "`veth` underlay (GSO packets whole)",
        };
        let mut maps: Vec<(PolicyMaps, Compiled)> = lab
            .nodes
            .iter()
            .map(|n| {
                (
                    PolicyMaps::open(&n.pin_dir).expect("policy maps"),
                    Compiled::default(),
                )
            })
            .collect();
        let (a, b) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
        let mut results: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for rep in 1..=reps {
            for (k, with_policy) in [(0, false), (1, true)] {
                eprintln!(
                    "[policy datapath rep {rep}/{reps}] {}",
                    if with_policy {
                        "20-rule policy"
                    } else {
                        "no policy"
                    }
                );
                set_policy(&lab, &mut maps, with_policy);
                let gbps = iperf(&a.ns, &b.ns, b.ip, secs);
                let rtt_us = sockperf(&a.ns, &b.ns, b.ip, secs.min(5));
                results[k].push(Sample { gbps, rtt_us });
            }
        }
        let rules: usize = lab
            .nodes
            .iter()
            .enumerate()
            .map(|(i, _)| compiled(&lab, i, true).rules.len())
            .sum();
        let med = |k: usize| {
            (
                median(results[k].iter().map(|s| s.gbps).collect()),
                median(results[k].iter().map(|s| s.rtt_us).collect()),
            )
        };
        let (g0, r0) = med(0);
        let (g1, r1) = med(1);
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\n## NetworkPolicy on the datapath: 20-rule policy on both pods vs none\n\n\
             Two nodes, one pod each, eBPF overlay, {underlay}, client and server on CPU 0, {reps} interleaved repetitions, medians. The policy: \
             10 ingress and 10 egress rules on each pod ({rules} trie entries on the two nodes), \
             every packet of the measured flows goes through the policy lookup or conntrack.\n"
        );
        o.push_str(
            "| config | iperf3 TCP 1 stream Gbit/s | ratio | sockperf 64 B RTT µs | added |\n",
        );
        o.push_str("|---|---:|---:|---:|---:|\n");
        let _ = writeln!(o, "| no policy | {g0:.2} | 1.000 | {r0:.2} | - |");
        let _ = writeln!(
            o,
            "| 20-rule policy | {g1:.2} | {:.3} | {r1:.2} | {:+.2} µs |",
            g1 / g0,
            r1 - r0
        );
        // Each repetition's pair, so that a reader can see whether the
        // difference of the medians stands out of the spread.
        let _ = writeln!(
            o,
            "\nPer repetition (no policy / policy): {}",
            results[0]
                .iter()
                .zip(&results[1])
                .map(|(a, b)| format!(
                    "{:.2}/{:.2} Gbit/s {:.2}/{:.2} µs",
                    a.gbps, b.gbps, a.rtt_us, b.rtt_us
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        o
    }
}
