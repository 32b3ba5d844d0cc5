//! The bench's (b'x) scenario attaches an XDP program that passes every
//! frame to the `wire` underlay ([`overlay_tests::xdp_pass`]). What it
//! measures is only the hook's cost if the program is really attached in
//! native mode, passes everything, and goes away with its guard.

use std::time::Duration;

use overlay_tests::{
    Lab, LabOptions, Mode, Netns, Underlay,
    lab::UPLINK,
    privileged,
    traffic::{Payload, send_file},
    xdp_pass,
};

/// The `prog/xdp` line of `dev` in `ns` (`ip -d link`), if one is attached.
fn xdp_line(ns: &Netns, dev: &str) -> Option<String> {
    ns.ip(&["-d", "link", "show", "dev", dev])
        .lines()
        .find(|l| l.contains("prog/xdp"))
        .map(str::to_owned)
}

#[test]
fn an_xdp_pass_program_on_the_wire_passes_everything_and_detaches_with_its_guard() {
    privileged!("an_xdp_pass_program_on_the_wire_passes_everything_and_detaches_with_its_guard");
    let lab = Lab::new(&LabOptions::uniform(Mode::PlainRouting, 2, 1).on(Underlay::Wire));
    let guards: Vec<_> = lab
        .nodes
        .iter()
        .map(|n| xdp_pass::attach(&n.ns, UPLINK).expect("attach"))
        .collect();
    for n in &lab.nodes {
        let line = xdp_line(&n.ns, UPLINK);
        assert!(line.is_some(), "{}: no XDP program on {UPLINK}", n.ns.name);
        // Native mode shows as `xdp` (generic would be `xdpgeneric`).
        let flags = n.ns.ip(&["link", "show", "dev", UPLINK]);
        assert!(
            flags.contains(" xdp ") && !flags.contains("xdpgeneric"),
            "{}: not attached in native mode: {flags}",
            n.ns.name
        );
    }

    // 16 MiB each way arrive whole through both programs.
    let payload = Payload::random(16 << 20);
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    for (src, dst) in [(a, b), (b, a)] {
        let t = send_file(&src.ns, &dst.ns, dst.ip, &payload, Duration::from_secs(60));
        assert_eq!(t.received, 16 << 20, "{} -> {}: bytes lost", src.ip, dst.ip);
        assert_eq!(
            t.sha256, payload.sha256,
            "{} -> {}: content changed",
            src.ip, dst.ip
        );
    }

    drop(guards);
    for n in &lab.nodes {
        assert_eq!(
            xdp_line(&n.ns, UPLINK),
            None,
            "{}: the program stayed attached after its guard was dropped",
            n.ns.name
        );
    }
    let err = xdp_pass::attach(&lab.nodes[0].ns, "nosuchdev")
        .err()
        .expect("attaching to a missing device must fail");
    assert!(
        format!("{err:#}").contains("no device \"nosuchdev\""),
        "unclear error: {err:#}"
    );
}
