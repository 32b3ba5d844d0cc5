//! Times and logs every CNI operation the agent serves.

use std::{sync::Arc, time::Instant};

use tracing::{debug, warn};

use super::Metrics;
use crate::api::{Handler, Reply, Request};

/// A [`Handler`] that records each request's command, result and latency,
/// and logs it with the pod it was for (from `CNI_ARGS`).
pub struct Instrumented {
    inner: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Handler>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

/// The command, container and pod of a request, for labels and logs.
fn describe(r: &Request) -> (&'static str, Option<String>, Option<String>) {
    match r {
        Request::Add(p) => (
            "ADD",
            Some(p.container_id.clone()),
            p.pod.as_ref().map(ToString::to_string),
        ),
        Request::Del(d) => (
            "DEL",
            Some(d.container_id.clone()),
            d.pod.as_ref().map(ToString::to_string),
        ),
        Request::Check(c) => ("CHECK", Some(c.container_id.clone()), None),
        Request::Gc { .. } => ("GC", None, None),
        Request::Status => ("STATUS", None, None),
    }
}

impl Handler for Instrumented {
    fn handle(&self, request: Request) -> Reply {
        let (command, container, pod) = describe(&request);
        let started = Instant::now();
        let reply = self.inner.handle(request);
        let took = started.elapsed();
        let ok = matches!(reply, Reply::Ok(_));
        self.metrics.observe_cni(command, ok, took);
        let container = container.as_deref().unwrap_or("-");
        let pod = pod.as_deref().unwrap_or("-");
        let ms = took.as_secs_f64() * 1000.0;
        match &reply {
            Reply::Ok(_) => debug!(
                command,
                pod,
                container_id = container,
                ms,
                "CNI operation done"
            ),
            Reply::Err(e) => warn!(
                command, pod, container_id = container, ms,
                code = e.code, error = %e.msg, details = %e.details,
                "CNI operation failed"
            ),
        }
        reply
    }
}
