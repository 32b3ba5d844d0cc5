//! The plugin's side of the socket: blocking, no runtime needed.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::{MAX_MESSAGE, Reply, Request};
use crate::cni::{CniError, code};

/// How long the plugin waits for the agent's answer. ADD is normally a few
/// milliseconds; a runtime retries after a timeout.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the agent is not running (yet).
    #[error("the overlay agent is not running: cannot connect to {path}")]
    NotRunning {
        /// Socket path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent accepted but the exchange failed.
    #[error("talking to the overlay agent at {path}")]
    Exchange {
        /// Socket path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent's answer is not a reply.
    #[error("the overlay agent at {path} sent an answer that is not a reply")]
    BadReply {
        /// Socket path.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The CNI error for a failed exchange: try again later (code 11)
    /// unless `code` says otherwise.
    pub fn to_cni(&self, code: u32) -> CniError {
        CniError::new(code, self.to_string()).with_details(crate::cni::error::chain(self))
    }

    /// Whether the agent was not reachable at all.
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

/// Sends one request and waits for the reply.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let path = socket.display().to_string();
    let exchange = |source| ClientError::Exchange {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::NotRunning {
        path: path.clone(),
        source,
    })?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(exchange)?;
    let mut line = serde_json::to_vec(request).expect("requests always serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(exchange)?;
    let mut reply = Vec::new();
    BufReader::new(stream.take(MAX_MESSAGE as u64))
        .read_until(b'\n', &mut reply)
        .map_err(exchange)?;
    if reply.is_empty() {
        return Err(exchange(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection without answering (did it restart?)",
        )));
    }
    serde_json::from_slice(&reply).map_err(|source| ClientError::BadReply { path, source })
}

/// [`call`], with transport failures turned into CNI errors: code 11 (try
/// again later) for ADD, DEL, CHECK and GC.
pub fn call_cni(socket: &Path, request: &Request) -> Result<Reply, CniError> {
    call(socket, request).map_err(|e| e.to_cni(code::TRY_AGAIN_LATER))
}
