//! `netvlan daemon`: a service beside the datapath, never in its way.
//!
//! The daemon owns nothing the datapath needs: programs and maps stay
//! pinned, so killing it loses no packet, filter or count. It reads the
//! maps when asked (Prometheus scrapes, the live page, the local API) and
//! forwards trace events from the ring buffers to whoever subscribed.
//!
//! - [`metrics`]: `/metrics`, rendered from the maps at scrape time.
//! - [`page`]: the live page at `/` and its server-push stream.

pub mod metrics;
pub mod page;

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::datapath::Datapath;

/// What every request handler of the daemon shares.
pub struct Shared {
    /// The datapath of the daemon's network namespace.
    pub datapath: Datapath,
    /// Where networks and endpoints are stored (read for names, IPAM).
    pub state_dir: PathBuf,
    /// Trace events as they leave the ring buffers: one ring record each
    /// (`netvlan_common::trace::TraceHeader` + frame bytes), shared by
    /// every subscriber without copies.
    pub traces: broadcast::Sender<Bytes>,
}

/// The HTTP side of the daemon on its metrics address: `/metrics` and the
/// live page.
pub fn http_router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .merge(metrics::routes())
        .merge(page::routes())
        .with_state(shared)
}
