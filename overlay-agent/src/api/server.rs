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

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::{
        api::{DelRequest, client},
        cni::AddResult,
    };

    /// Answers STATUS with success and everything else with an error that
    /// names the request.
    struct Fake;

    impl Handler for Fake {
        fn handle(&self, request: Request) -> Reply {
            match request {
                Request::Status => Reply::Ok(Some(AddResult::default())),
                other => Reply::Err(CniError::new(code::INTERNAL, format!("{other:?}"))),
            }
        }
    }

    #[test]
    fn requests_and_replies_cross_the_socket_and_garbage_gets_a_decoding_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let listener = rt.block_on(async { bind(&path) }).unwrap();
        let server = rt.spawn(serve(listener, Arc::new(Fake), stop_rx));
        let handle = std::thread::spawn({
            let path = path.clone();
            move || {
                let ok = client::call(&path, &Request::Status).unwrap();
                let del = client::call(
                    &path,
                    &Request::Del(DelRequest {
                        container_id: "c1".into(),
                        netns: None,
                        ifname: "eth0".into(),
                        pod: None,
                    }),
                )
                .unwrap();
                let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
                raw.write_all(b"{\"op\":\"nonsense\"}\n").unwrap();
                let mut answer = String::new();
                raw.read_to_string(&mut answer).unwrap();
                (ok, del, answer)
            }
        });
        let (ok, del, garbage) = rt.block_on(async {
            loop {
                if handle.is_finished() {
                    break handle.join().unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        assert_eq!(ok, Reply::Ok(Some(AddResult::default())));
        let Reply::Err(e) = del else {
            panic!("{del:?}")
        };
        assert!(e.msg.contains("c1"), "{}", e.msg);
        let garbage: Reply = serde_json::from_str(&garbage).unwrap();
        let Reply::Err(e) = garbage else {
            panic!("{garbage:?}")
        };
        assert_eq!(e.code, code::DECODING_FAILURE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "socket is root-only");
        stop.send(true).unwrap();
        rt.block_on(server).unwrap();
        // Nothing listens any more: the plugin's "not running" case.
        drop(rt);
        let _ = std::fs::remove_file(&path);
        let e = client::call(&path, &Request::Status).unwrap_err();
        assert!(e.is_not_running(), "{e}");
        assert!(e.to_string().contains("not running"), "{e}");
    }
}
