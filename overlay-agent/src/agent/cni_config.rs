//! The node's conflist, written by the agent once it can serve ADD.
//!
//! A container runtime reports its node NotReady while it has no network
//! configuration, so no pod is scheduled there before the agent holds a
//! settled address block; and the conflist's existence is what a kubelet
//! waits for before it calls ADD. Once written it stays: an agent stop,
//! restart or upgrade leaves it (and the pinned datapath) in place for the
//! pods that are there, so it is written at most once per agent start and
//! never removed here (`overlay-agent uninstall` removes it).

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{Instrument as _, error, info, info_span};

use super::Agent;
use crate::{
    config::AgentConfig,
    install::{ConflistOptions, install_conflist},
};

/// How often readiness is looked at until the conflist is written.
const POLL: Duration = Duration::from_millis(250);

/// How long to wait before trying again after a failed write.
const RETRY: Duration = Duration::from_secs(5);

/// What the agent's flags say the conflist holds and where it goes.
pub fn conflist_options(config: &AgentConfig) -> ConflistOptions {
    ConflistOptions {
        conf_dir: config.cni_conf_dir.clone(),
        bin_dir: config.cni_bin_dir.clone(),
        socket: config.socket.clone(),
        cni_version: config.cni_version,
        portmap: config.portmap,
    }
}

/// Spawns the task that writes the conflist the first time the agent is
/// ready; it ends then, or when `stop` turns true.
pub fn spawn(
    agent: Arc<Agent>,
    config: &AgentConfig,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let opts = conflist_options(config);
    tokio::spawn(write_when_ready(agent, opts, stop).instrument(info_span!("cni_config")))
}

async fn write_when_ready(
    agent: Arc<Agent>,
    opts: ConflistOptions,
    mut stop: watch::Receiver<bool>,
) {
    info!(
        conf_dir = %opts.conf_dir.display(),
        "the conflist is written once this node can serve pods (a settled address block)"
    );
    loop {
        let a = agent.clone();
        let ready = tokio::task::spawn_blocking(move || a.is_ready())
            .await
            .unwrap_or(false);
        let wait = if ready {
            let o = opts.clone();
            match tokio::task::spawn_blocking(move || install_conflist(&o)).await {
                Ok(Ok(report)) => {
                    info!(
                        path = %report.path.display(), change = ?report.change,
                        portmap = report.portmap,
                        "ready: the node's pod network is configured"
                    );
                    return;
                }
                Ok(Err(e)) => {
                    error!(error = %crate::cni::error::chain(&e), retry_in = ?RETRY,
                        "writing the conflist failed");
                    RETRY
                }
                Err(e) => {
                    error!(error = %e, retry_in = ?RETRY, "writing the conflist failed");
                    RETRY
                }
            }
        } else {
            POLL
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
