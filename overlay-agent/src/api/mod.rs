//! The agent's local API: what `overlay-cni` asks the agent over the unix
//! socket (`/run/overlay/agent.sock`), one JSON request and one JSON reply
//! per connection, each on one line.

pub mod client;
pub mod http;
pub mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::{AddResult, Attachment, CniError, PodRef};

/// Largest request or reply accepted, in bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// One request from the plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Wire a pod up.
    Add(PodRequest),
    /// Undo [`Request::Add`]; idempotent.
    Del(DelRequest),
    /// Verify what ADD made.
    Check(CheckRequest),
    /// Remove every attachment not listed.
    Gc {
        /// Attachments to keep.
        valid: Vec<Attachment>,
    },
    /// Is the agent ready to serve ADD?
    Status,
}

/// ADD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Kubernetes identity from `CNI_ARGS`.
    pub pod: Option<PodRef>,
    /// `dns` of the network configuration, echoed in the result.
    pub dns: Option<Value>,
}

/// DEL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`, which may be empty (the pod's namespace is gone).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Kubernetes identity from `CNI_ARGS`.
    pub pod: Option<PodRef>,
}

/// CHECK.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The result ADD returned, as the runtime remembers it.
    pub prev_result: AddResult,
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success, with the result for ADD.
    Ok(Option<AddResult>),
    /// Failure, as a CNI error.
    Err(CniError),
}

impl From<Result<Option<AddResult>, CniError>> for Reply {
    fn from(r: Result<Option<AddResult>, CniError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

/// What serves requests: the agent, or a fake in tests.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request; runs on a blocking thread.
    fn handle(&self, request: Request) -> Reply;
}
