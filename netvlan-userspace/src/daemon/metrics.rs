//! `/metrics`: Prometheus exposition rendered from the maps at scrape time.
//!
//! Nothing is counted per packet here: every scrape reads the pinned maps
//! (the same [`crate::control::report::report`] `netvlan stats --json`
//! prints) and the store, builds a fresh registry and encodes it in the
//! Prometheus text format (0.0.4) with `prometheus-client`. A series
//! exists only while what it describes does, so an endpoint's series go
//! with the endpoint, and cardinality is bounded by endpoints and VLANs.
//!
//! - [`snapshot`]: what one scrape reads (counters, store, map fill),
//!   keeping what it could when a part fails.
//! - [`exposition`]: the metric names and labels, and their encoding.
//!
//! The names are an interface dashboards are built on; the README's
//! "Metrics" section lists them and `dashboards/grafana-netvlan.json`
//! reads them.

pub mod exposition;
pub mod snapshot;

use std::{
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
    time::Instant,
};

use axum::{extract::State, http::header, response::IntoResponse, routing::get};

use super::Shared;

/// The exporter's own state across scrapes.
#[derive(Debug, Default)]
pub struct ScrapeState {
    /// Parts of scrapes that could not be read, since the daemon started.
    errors: AtomicU64,
}

/// The routes this module serves.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new().route("/metrics", get(scrape))
}

/// One scrape: read, build, encode. Whatever could not be read is
/// counted in `netvlan_scrape_errors_total` and left out; the rest is
/// served.
async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = render(&shared).await;
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
}

/// The exposition text of one scrape of `shared`'s datapath and store.
pub async fn render(shared: &Shared) -> String {
    let started = Instant::now();
    let snapshot = snapshot::take(shared).await;
    let errors = shared
        .metrics
        .errors
        .fetch_add(snapshot.errors, Ordering::Relaxed)
        + snapshot.errors;
    exposition::encode(snapshot, errors, started)
}
