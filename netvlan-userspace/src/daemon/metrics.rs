//! `/metrics`: Prometheus exposition rendered from the maps at scrape time.

use std::sync::Arc;

use super::Shared;

/// The routes this module serves.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
}
