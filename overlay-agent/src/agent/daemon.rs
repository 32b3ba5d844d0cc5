//! `overlay-agent run`: start the agent, serve the socket, follow the
//! topology, stop on SIGTERM/SIGINT without touching the datapath.

use std::{io, path::PathBuf, sync::Arc};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{Instrument as _, error, info, info_span};

use super::{Agent, AgentError};
use crate::{api::server, config::AgentConfig, topology::Topology};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The agent could not start.
    #[error("starting the agent")]
    Start(#[source] AgentError),
    /// The socket could not be bound.
    #[error("listening on {path}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
    /// A blocking task panicked.
    #[error("agent task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Runs the agent until SIGTERM or SIGINT. `topology` is the seam where the
/// cluster's shape comes in (a static file today, gossip later); every new
/// value is applied by diff. On shutdown the socket is removed and the
/// pinned datapath is left in place, so pods keep their connectivity while
/// no agent runs.
pub async fn run(
    config: AgentConfig,
    mut topology: watch::Receiver<Topology>,
) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let socket = config.socket.clone();
    let agent = tokio::task::spawn_blocking(move || Agent::start(config))
        .await
        .map_err(DaemonError::Join)?
        .map_err(DaemonError::Start)?;
    let agent = Arc::new(agent);

    let first = topology.borrow_and_update().clone();
    apply(&agent, first).await?;

    let listener = server::bind(&socket).map_err(|source| DaemonError::Listen {
        path: socket.clone(),
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = tokio::spawn(
        server::serve(listener, agent.clone(), stop_rx).instrument(info_span!("socket")),
    );
    info!(socket = %socket.display(), "serving overlay-cni");

    // A static source closes its channel after the one value; then only
    // signals are waited for.
    let mut source_open = true;
    loop {
        tokio::select! {
            changed = topology.changed(), if source_open => {
                if changed.is_err() {
                    source_open = false;
                    continue;
                }
                let t = topology.borrow_and_update().clone();
                apply(&agent, t).await?;
            }
            _ = sigterm.recv() => { info!("SIGTERM: stopping, datapath stays in place"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping, datapath stays in place"); break; }
        }
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn apply(agent: &Arc<Agent>, topology: Topology) -> Result<(), DaemonError> {
    let agent = agent.clone();
    let applied = tokio::task::spawn_blocking(move || agent.apply_topology(&topology))
        .await
        .map_err(DaemonError::Join)?;
    if let Err(e) = applied {
        // Keep serving: pods already wired keep working, and the next
        // topology may apply.
        error!(error = %crate::cni::error::chain(&e), "applying the topology");
    }
    Ok(())
}
