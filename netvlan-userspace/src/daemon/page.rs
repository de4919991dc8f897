//! The live page at `/`: networks, endpoints, VLANs, drops and the latest
//! trace events, updated by server push.
//!
//! - `GET /`: the page, with the snapshot of the moment embedded, so it
//!   shows the numbers as soon as it is parsed (no external assets).
//! - `GET /api/snapshot`: that snapshot as JSON; its `stats` is exactly
//!   what `netvlan stats --json` prints.
//! - `GET /api/events`: server-sent events, one `snapshot` per second; the
//!   page computes rates from consecutive ones.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Response,
    },
    routing::get,
};
use bytes::Bytes;
use futures_util::Stream;
use netvlan_common::{
    decision::DropReason,
    trace::{TraceHeader, TracePoint, TRACE_DROP},
};
use serde::Serialize;

use super::Shared;
use crate::datapath::counters::StatsReport;

const INDEX_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/page.js");
const PAGE_CSS: &str = include_str!("page/page.css");

/// Where the page's snapshot goes in `index.html`.
const SNAPSHOT_PLACEHOLDER: &str = "{{SNAPSHOT}}";

/// Trace events the page shows (the newest).
pub const RECENT_TRACES: usize = 50;

/// How often the page is sent a new snapshot.
const PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the snapshot waits for the state lock (names, networks).
const STATE_PATIENCE: Duration = Duration::from_millis(500);

/// The routes this module serves.
pub fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/", get(index))
        .route("/page.js", get(|| asset("text/javascript", PAGE_JS)))
        .route("/page.css", get(|| asset("text/css", PAGE_CSS)))
        .route("/api/snapshot", get(snapshot_json))
        .route("/api/events", get(events))
}

/// The newest trace records, as they left the ring buffer (shared, not
/// copied).
#[derive(Default)]
pub struct RecentTraces(Mutex<VecDeque<Bytes>>);

impl RecentTraces {
    pub fn push(&self, record: Bytes) {
        let mut recent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_TRACES {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The newest first, decoded.
    pub fn views(&self) -> Vec<TraceView> {
        let recent = self.0.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter_map(|r| TraceView::of(r))
            .collect()
    }
}

/// Keeps the newest trace events for the page, from the daemon's trace
/// stream, until the daemon stops.
pub async fn collect_traces(shared: Arc<Shared>) {
    let mut events = shared.traces.subscribe();
    loop {
        match events.recv().await {
            Ok(record) => shared.recent_traces.push(record),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "the page's trace panel skipped events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One trace event as the page shows it: what its header says, and the
/// MACs and EtherType of the captured frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceView {
    pub time_ns: u64,
    pub ifindex: u32,
    pub point: &'static str,
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub vlan: u16,
    pub orig_len: u32,
    pub cap_len: u16,
    pub packets: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<String>,
}

impl TraceView {
    pub fn of(record: &[u8]) -> Option<TraceView> {
        let header = TraceHeader::parse(record)?;
        let frame = header.frame(record);
        let mac = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let dropped = header.verdict == TRACE_DROP;
        Some(TraceView {
            time_ns: header.time_ns,
            ifindex: header.ifindex,
            point: match TracePoint::from_u8(header.point) {
                Some(TracePoint::WireXdp) => "wire_xdp",
                Some(TracePoint::WireTc) => "wire_tc",
                Some(TracePoint::EndpointEgress) => "endpoint_egress",
                Some(TracePoint::EndpointIngress) => "endpoint_ingress",
                None => "unknown",
            },
            verdict: if dropped { "drop" } else { "pass" },
            reason: dropped
                .then(|| {
                    DropReason::ALL
                        .into_iter()
                        .find(|r| *r as u8 == header.reason)
                        .map(DropReason::name)
                })
                .flatten(),
            vlan: header.vlan,
            orig_len: header.orig_len,
            cap_len: header.cap_len,
            packets: header.packets,
            dst: frame.get(0..6).map(mac),
            src: frame.get(6..12).map(mac),
            ethertype: frame
                .get(12..14)
                .map(|t| format!("0x{:02x}{:02x}", t[0], t[1])),
        })
    }
}

/// A network as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkView {
    pub name: String,
    pub driver: String,
    pub parent: String,
    pub subnets: Vec<String>,
    pub endpoints: usize,
}

/// Everything the page shows at one instant.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// When it was taken, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub networks: Vec<NetworkView>,
    /// Exactly the report of `netvlan stats --json`.
    pub stats: StatsReport,
    /// The newest trace events first.
    pub traces: Vec<TraceView>,
    /// Why `stats` is empty, if it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn networks(shared: &Shared) -> Vec<NetworkView> {
    let records = match shared.networks.read(&shared.state_dir, STATE_PATIENCE) {
        Ok(super::stored::Stored::Networks { networks, .. }) => Ok(networks),
        Ok(super::stored::Stored::Absent | super::stored::Stored::Busy) => return Vec::new(),
        Err(e) => Err(e),
    };
    match records {
        Ok(records) => records
            .iter()
            .map(|r| NetworkView {
                name: r.name.clone(),
                driver: r.options.driver.to_string(),
                parent: r.parent.link.clone(),
                subnets: r
                    .ipam
                    .config()
                    .subnets()
                    .iter()
                    .map(|s| s.subnet.to_string())
                    .collect(),
                endpoints: r.endpoints.len(),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the page cannot read the networks");
            Vec::new()
        }
    }
}

/// The snapshot of this instant.
pub async fn snapshot(shared: &Shared) -> Snapshot {
    let (stats, error) = match super::stats_report(shared, None).await {
        Ok(stats) => (stats, None),
        Err(e) => {
            tracing::warn!(error = %e, "the page cannot read the counters");
            (StatsReport::default(), Some(e.report().line()))
        }
    };
    Snapshot {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        networks: networks(shared),
        stats,
        traces: shared.recent_traces.views(),
        error,
    }
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn snapshot_json(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(snapshot(&shared).await).into_response()
}

/// JSON safe inside a `<script>` element: no `<` that could close it.
fn script_json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(value)?.replace('<', "\\u003c"))
}

async fn index(State(shared): State<Arc<Shared>>) -> Response {
    match script_json(&snapshot(&shared).await) {
        Ok(json) => Html(INDEX_HTML.replace(SNAPSHOT_PLACEHOLDER, &json)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialising the snapshot: {e}"),
        )
            .into_response(),
    }
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(PUSH_INTERVAL);
    let stream = futures_util::stream::unfold((shared, ticks), |(shared, mut ticks)| async {
        ticks.tick().await;
        let event = match serde_json::to_string(&snapshot(&shared).await) {
            Ok(json) => Event::default().event("snapshot").data(json),
            Err(e) => Event::default()
                .event("error")
                .data(format!("serialising the snapshot: {e}")),
        };
        Some((Ok(event), (shared, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netvlan_common::trace::{TRACE_PASS, TRACE_SNAPLEN};

    fn record(header: TraceHeader, frame: &[u8]) -> Bytes {
        let mut bytes = vec![0u8; std::mem::size_of::<TraceHeader>()];
        // SAFETY: the buffer holds exactly one header; plain integers.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<TraceHeader>(), header) };
        bytes.extend_from_slice(frame);
        Bytes::from(bytes)
    }

    #[test]
    fn the_trace_panel_shows_the_newest_events_decoded_from_their_header() {
        let recent = RecentTraces::default();
        let frame: Vec<u8> = [[0x02, 0, 0, 0, 0, 0x77], [0x02, 0, 0, 0, 0, 0x11]]
            .concat()
            .into_iter()
            .chain([0x88, 0xb5])
            .chain(std::iter::repeat_n(0, 50))
            .collect();
        for i in 0..(RECENT_TRACES as u64 + 3) {
            recent.push(record(
                TraceHeader {
                    time_ns: i,
                    ifindex: 2,
                    orig_len: 64,
                    slot: u32::MAX,
                    packets: 1,
                    cap_len: frame.len() as u16,
                    vlan: 10,
                    point: TracePoint::WireXdp as u8,
                    verdict: if i % 2 == 0 { TRACE_DROP } else { TRACE_PASS },
                    reason: DropReason::UnknownDst as u8,
                    _pad: 0,
                },
                &frame,
            ));
        }
        let views = recent.views();
        assert_eq!(views.len(), RECENT_TRACES, "only the newest are kept");
        assert_eq!(views[0].time_ns, RECENT_TRACES as u64 + 2, "newest first");
        assert_eq!(views.last().unwrap().time_ns, 3);
        let newest = &views[0];
        assert_eq!(
            (newest.verdict, newest.reason, newest.point, newest.vlan),
            ("drop", Some("unknown_dst"), "wire_xdp", 10)
        );
        assert_eq!(newest.dst.as_deref(), Some("02:00:00:00:00:77"));
        assert_eq!(newest.src.as_deref(), Some("02:00:00:00:00:11"));
        assert_eq!(newest.ethertype.as_deref(), Some("0x88b5"));
        assert_eq!((views[1].verdict, views[1].reason), ("pass", None));
        assert!(frame.len() <= TRACE_SNAPLEN);
    }

    #[test]
    fn the_embedded_snapshot_cannot_close_its_script_element() {
        let json = script_json(&serde_json::json!({ "name": "</script><b>" })).unwrap();
        assert!(!json.contains('<'), "{json}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["name"],
            "</script><b>"
        );
    }
}
