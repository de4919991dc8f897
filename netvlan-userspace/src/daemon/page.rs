//! The live page at `/`: networks, endpoints, VLANs, drops and the latest
//! trace events, updated by server push.

use std::sync::Arc;

use super::Shared;

/// The routes this module serves.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
}
