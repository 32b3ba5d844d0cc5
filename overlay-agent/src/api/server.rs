//! The agent's side of the socket.

use std::{io, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{Instrument as _, debug, info_span, warn};

use super::{Handler, MAX_MESSAGE, Reply, Request};
use crate::cni::{CniError, code};

/// Binds the socket at `path`, replacing a stale one left by a previous
/// agent, readable and writable by root only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until `shutdown` turns true. Each request runs on a
/// blocking thread; requests are handled concurrently, the handler
/// serialises what must be.
pub async fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(
                        async move {
                            if let Err(e) = connection(stream, handler).await {
                                debug!(error = %e, "connection ended early");
                            }
                        }
                        .instrument(info_span!("api")),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "accepting on the agent socket");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(stream: UnixStream, handler: Arc<dyn Handler>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_MESSAGE as u64))
        .read_until(b'\n', &mut line)
        .await?;
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => tokio::task::spawn_blocking(move || handler.handle(request))
            .await
            .unwrap_or_else(|e| {
                Reply::Err(CniError::new(
                    code::INTERNAL,
                    format!("the agent failed while handling the request: {e}"),
                ))
            }),
        Err(e) => Reply::Err(CniError::new(
            code::DECODING_FAILURE,
            format!("the agent could not decode the request: {e}"),
        )),
    };
    let mut out = serde_json::to_vec(&reply).expect("replies always serialize");
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
