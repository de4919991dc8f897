//! The wires' debug records (aya-log, `netvlan datapath debug PARENT on`)
//! forwarded into the daemon's `tracing` log, with the parent as a field.
//!
//! The wire is loaded and pinned by the CLI, so its log ring is found
//! through the pinned program (`aya_log::EbpfLogger::init_from_id`); the
//! attachments are looked at again every [`POLL`], so a wire attached or
//! upgraded (a new program, a new ring) after the daemon started is
//! followed too. A wire that is not being debugged writes nothing, and its
//! ring costs the daemon an empty read.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aya_log::EbpfLogger;

use super::Shared;

/// How often the rings are read and the attachments looked at again.
const POLL: Duration = Duration::from_millis(200);

/// Writes one wire's records to `tracing`, at info: they exist only
/// because someone switched them on.
struct Forward {
    parent: String,
}

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::info!(
            target: "netvlan::wire",
            parent = %self.parent,
            level = %record.level(),
            "{}",
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Forwards every wire's records until the daemon stops.
pub async fn forward(shared: Arc<Shared>) {
    // By parent: the program id the logger reads for, and the logger (none
    // for a program without a log ring: not asked again until it changes).
    let mut loggers: HashMap<String, (u32, Option<EbpfLogger<Forward>>)> = HashMap::new();
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let attachments = match shared.datapath.attachments(None).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!("cannot list the attachments for their debug records: {e}");
                continue;
            }
        };
        loggers.retain(|parent, (prog_id, _)| {
            attachments
                .iter()
                .any(|(a, _)| &a.ifname == parent && a.prog_id == *prog_id)
        });
        for (attachment, _) in &attachments {
            if loggers.contains_key(&attachment.ifname) {
                continue;
            }
            let forward = Forward {
                parent: attachment.ifname.clone(),
            };
            let logger = EbpfLogger::init_from_id_with_logger(attachment.prog_id, forward)
                .inspect_err(|e| {
                    // A wire built before the debug records has no log ring.
                    tracing::debug!(
                        parent = %attachment.ifname,
                        prog_id = attachment.prog_id,
                        "no debug records from this wire: {e}"
                    )
                })
                .ok();
            loggers.insert(attachment.ifname.clone(), (attachment.prog_id, logger));
        }
        for logger in loggers.values_mut().filter_map(|(_, l)| l.as_mut()) {
            logger.flush();
        }
    }
}
