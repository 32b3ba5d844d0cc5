//! The worker that drives rtnetlink for one API call: a dedicated OS thread
//! with a current-thread tokio runtime and one netlink socket per namespace.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, for its whole life. The worker thread starts in the caller's
//! namespace (a new thread inherits its creator's, which is what the caller
//! means by "here", even inside [`crate::netns::run_in`]), opens the host
//! socket, enters the pod namespace just long enough to open the pod
//! socket, and goes back. A thread of its own also keeps the runtime away
//! from a caller that may itself be a tokio worker, where `block_on` would
//! panic.

use std::{fs::File, future::Future, path::Path, thread};

use futures_util::{Stream, TryStreamExt as _};
use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;
use tokio::runtime::Runtime;

use super::NetlinkError;

/// How errors name the caller's namespace.
pub(super) const CALLER_NETNS: &str = "the caller's netns";

/// A pod namespace opened by the caller; the open file keeps it alive and
/// serves as the `IFLA_NET_NS_FD` of the veth peer.
pub(super) struct PodNetns<'a> {
    /// Its path, for errors.
    pub path: &'a Path,
    /// The open namespace file.
    pub file: File,
}

impl<'a> PodNetns<'a> {
    /// Opens the namespace at `path`; a missing path is
    /// [`NetlinkError::NetnsMissing`].
    pub fn open(path: &'a Path) -> Result<Self, NetlinkError> {
        let file = File::open(path).map_err(|source| NetlinkError::NetnsMissing {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { path, file })
    }

    /// The namespace path as errors print it.
    pub fn label(&self) -> String {
        self.path.display().to_string()
    }
}

/// Runs `work` on a worker thread with a socket in the caller's namespace.
pub(super) fn on_host<T, F, Fut>(work: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    worker(CALLER_NETNS.to_owned(), |runtime| {
        let host = connect(CALLER_NETNS)?;
        runtime.block_on(work(host))
    })
}

/// Runs `work` on a worker thread with a socket in the caller's namespace
/// and one in `pod`'s, in that order.
pub(super) fn with_pod<T, F, Fut>(pod: &PodNetns<'_>, work: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce(Handle, Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    worker(pod.label(), |runtime| {
        let host = connect(CALLER_NETNS)?;
        let pod = connect_in(pod)?;
        runtime.block_on(work(host, pod))
    })
}

/// Runs `body` on a fresh thread inside a current-thread runtime's context.
/// Panics in `body` propagate.
fn worker<T, F>(netns: String, body: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce(&Runtime) -> Result<T, NetlinkError> + Send,
{
    thread::scope(|s| {
        let spawned = thread::Builder::new()
            .name("overlay-netlink".into())
            .spawn_scoped(s, || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|source| NetlinkError::Worker {
                        step: "building the tokio runtime",
                        netns: netns.clone(),
                        source,
                    })?;
                // Sockets register with the runtime's reactor when created.
                let _context = runtime.enter();
                body(&runtime)
            });
        match spawned {
            Ok(worker) => worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(source) => Err(NetlinkError::Worker {
                step: "spawning the worker thread",
                netns: netns.clone(),
                source,
            }),
        }
    })
}

/// Opens a socket inside `pod` and returns to the caller's namespace.
fn connect_in(pod: &PodNetns<'_>) -> Result<Handle, NetlinkError> {
    let guard = NetnsGuard::enter(pod)?;
    let handle = connect(&pod.label());
    guard.leave()?;
    handle
}

/// Opens an rtnetlink socket in the current thread's namespace and spawns
/// its connection task on the current runtime.
fn connect(netns: &str) -> Result<Handle, NetlinkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| NetlinkError::Worker {
            step: "opening a netlink socket",
            netns: netns.to_owned(),
            source,
        })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The current thread inside a pod namespace; going back to the caller's
/// namespace on [`NetnsGuard::leave`] or, best effort, on drop.
struct NetnsGuard<'a> {
    caller: Option<File>,
    pod: &'a Path,
}

impl<'a> NetnsGuard<'a> {
    fn enter(pod: &'a PodNetns<'_>) -> Result<Self, NetlinkError> {
        // `thread-self`, not `self`: the process's main thread may be in
        // another namespace than this worker.
        let caller =
            File::open("/proc/thread-self/ns/net").map_err(|source| NetlinkError::Worker {
                step: "opening the caller's namespace",
                netns: CALLER_NETNS.to_owned(),
                source,
            })?;
        setns(&pod.file, CloneFlags::CLONE_NEWNET).map_err(|source| NetlinkError::EnterNetns {
            path: pod.path.to_owned(),
            source,
        })?;
        Ok(Self {
            caller: Some(caller),
            pod: pod.path,
        })
    }

    fn leave(mut self) -> Result<(), NetlinkError> {
        match self.caller.take() {
            Some(caller) => {
                setns(caller, CloneFlags::CLONE_NEWNET).map_err(|source| NetlinkError::LeaveNetns {
                    path: self.pod.to_owned(),
                    source,
                })
            }
            None => Ok(()),
        }
    }
}

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        if let Some(caller) = self.caller.take() {
            // The worker thread ends with the call, so a failure here can
            // only affect sockets this call would open later, and it opens
            // none after leaving.
            let _ = setns(caller, CloneFlags::CLONE_NEWNET);
        }
    }
}

/// Collects a netlink dump (links, addresses, routes, neighbours) into a
/// list; a failure names the table and the namespace.
pub(super) async fn collect<T>(
    what: &'static str,
    netns: &str,
    dump: impl Stream<Item = Result<T, rtnetlink::Error>>,
) -> Result<Vec<T>, NetlinkError> {
    dump.try_collect()
        .await
        .map_err(|source| NetlinkError::Dump {
            what,
            netns: netns.to_owned(),
            source: Box::new(source),
        })
}
