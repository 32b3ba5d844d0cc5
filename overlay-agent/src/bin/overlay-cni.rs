//! `overlay-cni`: the CNI plugin kubelet (through containerd or CRI-O) runs
//! for every pod. Stateless: it validates its input, asks the node's
//! overlay agent over its unix socket, and prints the answer as the CNI
//! specification wants it (0.3.1, 0.4.0, 1.0.0, 1.1.0).
//!
//! Input: `CNI_*` environment variables and the network configuration on
//! stdin. Output: the result (ADD) or nothing (DEL, CHECK, STATUS, GC) on
//! stdout and exit 0, or a CNI error object on stdout and exit 1.

use std::{
    io::{Read as _, Write as _},
    process::ExitCode,
};

use overlay_agent::{api::client, cni::plugin};

const HELP: &str = "\
overlay-cni: the overlay network's CNI plugin (CNI 0.3.1, 0.4.0, 1.0.0, 1.1.0).

Run by the container runtime, not by hand: the command comes in CNI_COMMAND
(ADD, DEL, CHECK, VERSION, STATUS, GC), the pod in CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME and CNI_ARGS, and the network configuration as JSON on
stdin, e.g. from /etc/cni/net.d/10-overlay.conflist:

  {\"cniVersion\": \"1.1.0\", \"name\": \"overlay\",
   \"plugins\": [{\"type\": \"overlay-cni\"}, {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}

Optional configuration field: \"agentSocket\" (default /run/overlay/agent.sock).
The plugin asks the node's overlay-agent over that socket; if the agent is not
running it fails with CNI error 11 (try again later).
";

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none()
        && std::env::args()
            .skip(1)
            .any(|a| a == "--help" || a == "-h" || a == "help")
    {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    if std::env::var("CNI_COMMAND").as_deref() != Ok("VERSION") || !atty_stdin() {
        // A read error leaves the input empty, which is reported as
        // undecodable configuration.
        let _ = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    }
    let out = plugin::run(std::env::vars(), &stdin, client::call);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(out.exit)
}

/// Whether stdin is a terminal (VERSION by hand: do not wait for input).
fn atty_stdin() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(0) == 1 }
}
