//! `netvlan datapath ...`: attach, detach, status, prune, upgrade, debug.

use super::error::Result;
use clap::Subcommand;

use super::{
    keyword_parser,
    output::{out, print_json},
    Output,
};
use crate::control::Manager;
use crate::datapath::{
    upgrade::{EndpointUpgradeOutcome, UpgradeOutcome},
    AttachMode, AttachOutcome, AttachmentStatus, Datapath, Hook,
};

#[derive(Subcommand)]
pub(super) enum DatapathCommand {
    /// Load the wire program on IFACE and pin it so it keeps running.
    ///
    /// At XDP, or at TC ingress where native XDP costs the driver its
    /// receive offloads (--hook auto: veth, virtio_net). Attaching where
    /// netvlan already runs is a no-op. Example:
    ///   netvlan datapath attach eth0 --mode auto
    ///   netvlan datapath attach eth0 --hook tc
    #[command(verbatim_doc_comment)]
    Attach {
        /// Interface in the current network namespace.
        iface: String,
        /// auto tries native (driver) XDP and falls back to generic.
        #[arg(long, value_parser = keyword_parser::<AttachMode>(), default_value_t = AttachMode::Auto)]
        mode: AttachMode,
        /// auto: tc on veth and virtio_net, xdp elsewhere.
        #[arg(long, value_parser = keyword_parser::<Hook>(), default_value_t = Hook::Auto)]
        hook: Hook,
        #[command(flatten)]
        output: Output,
    },
    /// Detach the wire program from IFACE and remove its pins and counters.
    ///
    /// Refused while networks use IFACE (nothing would enforce their
    /// policy) unless --force.
    Detach {
        /// Interface in the current network namespace.
        iface: String,
        /// Detach even though networks use IFACE.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
    /// List the interfaces netvlan is attached to, as the kernel sees them.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// Remove the pins of attachments whose interface or program is gone.
    Prune {
        #[command(flatten)]
        output: Output,
    },
    /// Switch the wire program's debug records on IFACE on or off.
    ///
    /// On, the program writes one record per frame it judges (point, VLAN,
    /// MACs, verdict and drop reason); `netvlan daemon` forwards them into
    /// its log with the parent as a field. Off by default; off costs the
    /// program one flag test. Kept across upgrades and daemon restarts.
    /// Example:
    ///   netvlan datapath debug eth0 on
    #[command(verbatim_doc_comment)]
    Debug {
        /// Interface in the current network namespace.
        iface: String,
        /// on: write a record per judged frame; off: none (the default).
        #[arg(value_enum)]
        switch: DebugSwitch,
        #[command(flatten)]
        output: Output,
    },
    /// Swap the running programs for this binary's build, in place.
    ///
    /// One atomic BPF_LINK_UPDATE per interface: frames never meet a
    /// missing program, and the pinned maps (counters, policy, learned
    /// MACs) carry over. Without IFACE, every endpoint's TC programs are
    /// swapped too (TCX link update, or clsact filter replace), keeping
    /// its counters and anti-spoofing. Programs already running this build
    /// are left alone unless --force. Run it after installing a new
    /// netvlan. Example:
    ///   netvlan datapath upgrade            # every attachment and endpoint
    ///   netvlan datapath upgrade eth0 --force   # that interface only
    #[command(verbatim_doc_comment)]
    Upgrade {
        /// Only this interface (default: every attachment).
        iface: Option<String>,
        /// Replace the program even if it is this build already.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
}

/// `netvlan datapath debug IFACE on|off`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum DebugSwitch {
    On,
    Off,
}

/// Runs a datapath command; `manager` (when there is state) refuses to
/// detach under networks.
pub(super) async fn run(
    datapath: &Datapath,
    manager: Option<&Manager>,
    cmd: DatapathCommand,
) -> Result<()> {
    match cmd {
        DatapathCommand::Attach {
            iface,
            mode,
            hook,
            output,
        } => {
            let outcome = datapath.attach_at(&iface, mode, hook).await?;
            let (attachment, changed, fallback) = match &outcome {
                AttachOutcome::Attached {
                    attachment,
                    native_refused,
                } => (attachment, true, native_refused.clone()),
                AttachOutcome::AlreadyAttached(a) => (a, false, None),
            };
            if output.json {
                print_json(&serde_json::json!({
                    "changed": changed,
                    "attachment": attachment,
                    "native_refused": fallback,
                }))?;
            } else if changed {
                out!(
                    "attached to {} (ifindex {}) at the {} hook in {} mode, program id {}; pinned at {}",
                    attachment.ifname,
                    attachment.ifindex,
                    attachment.hook,
                    attachment.mode,
                    attachment.prog_id,
                    attachment.pin_dir.display()
                );
                if let Some(reason) = fallback {
                    out!("note: native XDP was refused ({reason}); generic mode is slower but sees the same frames");
                }
            } else {
                out!(
                    "already attached to {} at the {} hook in {} mode (program id {}); nothing to do",
                    attachment.ifname,
                    attachment.hook,
                    attachment.mode,
                    attachment.prog_id
                );
            }
        }
        DatapathCommand::Detach {
            iface,
            force,
            output,
        } => {
            let attachment = match manager {
                Some(manager) => manager.detach(&iface, force).await?,
                None => datapath.detach(&iface).await?,
            };
            if output.json {
                print_json(&serde_json::json!({ "detached": attachment }))?;
            } else {
                out!(
                    "detached from {} (program id {}); its counters are gone",
                    attachment.ifname,
                    attachment.prog_id
                );
            }
        }
        DatapathCommand::Debug {
            iface,
            switch,
            output,
        } => {
            let on = matches!(switch, DebugSwitch::On);
            let attachment = datapath.set_debug(&iface, on).await?;
            if output.json {
                print_json(&serde_json::json!({ "attachment": attachment }))?;
            } else {
                out!(
                    "debug records on {} (program id {}): {}",
                    attachment.ifname,
                    attachment.prog_id,
                    if on {
                        "on; `netvlan daemon` logs them"
                    } else {
                        "off"
                    }
                );
            }
        }
        DatapathCommand::Status { output } => {
            let statuses = datapath.status().await?;
            if output.json {
                print_json(&serde_json::json!({ "attachments": statuses }))?;
            } else {
                print_status(&statuses);
            }
        }
        DatapathCommand::Upgrade {
            iface,
            force,
            output,
        } => {
            let outcomes = datapath.upgrade(iface.as_deref(), force).await?;
            let endpoints = match iface {
                Some(_) => Vec::new(),
                None => datapath.upgrade_endpoints(force).await?,
            };
            if output.json {
                print_json(&serde_json::json!({ "upgrades": outcomes, "endpoints": endpoints }))?;
            } else if outcomes.is_empty() && endpoints.is_empty() {
                out!("no interface has netvlan's datapath attached; nothing to upgrade");
            }
            for outcome in outcomes.iter().filter(|_| !output.json) {
                match outcome {
                    UpgradeOutcome::Current { ifname, prog_id } => out!(
                        "{ifname}: already runs this build (program id {prog_id}); nothing to do"
                    ),
                    UpgradeOutcome::Replaced {
                        ifname,
                        old_prog_id,
                        new_prog_id,
                        new_maps,
                    } => {
                        out!(
                            "{ifname}: program {old_prog_id} replaced by {new_prog_id} in place; counters and policy kept"
                        );
                        if !new_maps.is_empty() {
                            out!("  new maps, starting empty: {}", new_maps.join(", "));
                        }
                    }
                }
            }
            for outcome in endpoints.iter().filter(|_| !output.json) {
                print_endpoint_upgrade(outcome);
            }
        }
        DatapathCommand::Prune { output } => {
            let removed = datapath.prune().await?;
            if output.json {
                print_json(&serde_json::json!({ "removed": removed }))?;
            } else if removed.is_empty() {
                out!("nothing stale to remove");
            } else {
                for status in &removed {
                    if let AttachmentStatus::Stale {
                        ifindex, pin_dir, ..
                    } = status
                    {
                        out!(
                            "removed stale pins of ifindex {ifindex}: {}",
                            pin_dir.display()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_endpoint_upgrade(outcome: &EndpointUpgradeOutcome) {
    match outcome {
        EndpointUpgradeOutcome::Current {
            ifname,
            pin_dir,
            egress_prog_id,
            ingress_prog_id,
        } => out!(
            "endpoint {ifname} ({}): already runs this build (programs {egress_prog_id}, {ingress_prog_id}); nothing to do",
            pin_dir.display()
        ),
        EndpointUpgradeOutcome::Replaced {
            ifname,
            pin_dir,
            mode,
            egress,
            ingress,
            new_maps,
        } => {
            out!(
                "endpoint {ifname} ({}, {}): egress {} -> {}, ingress {} -> {} in place; counters and spoofcheck kept",
                pin_dir.display(),
                mode.name(),
                egress.old_prog_id,
                egress.new_prog_id,
                ingress.old_prog_id,
                ingress.new_prog_id
            );
            if !new_maps.is_empty() {
                out!("  new maps, starting empty: {}", new_maps.join(", "));
            }
        }
    }
}

fn print_status(statuses: &[AttachmentStatus]) {
    if statuses.is_empty() {
        out!("netvlan's datapath is not attached to any interface in this network namespace.");
        out!("Attach it with: netvlan datapath attach IFACE");
        return;
    }
    out!(
        "{:<16} {:>7} {:<4} {:<8} {:>7}  PINS",
        "INTERFACE",
        "IFINDEX",
        "HOOK",
        "MODE",
        "PROG"
    );
    for status in statuses {
        match status {
            AttachmentStatus::Attached(a) => {
                out!(
                    "{:<16} {:>7} {:<4} {:<8} {:>7}  {}",
                    a.ifname,
                    a.ifindex,
                    a.hook.to_string(),
                    a.mode.to_string(),
                    a.prog_id,
                    a.pin_dir.display()
                );
                if a.debug == Some(true) {
                    out!("  debug records: on (`netvlan datapath debug {} off`)", a.ifname);
                }
                if let Some(h) = &a.hairpin {
                    out!(
                        "  hairpin (host access): TC egress, {}, program {}{}",
                        h.mode,
                        h.prog_id,
                        if h.current {
                            ""
                        } else {
                            " (reads replaced wire maps; `netvlan restore` re-attaches it)"
                        }
                    );
                }
            }
            AttachmentStatus::Stale {
                ifindex,
                ifname,
                reason,
                pin_dir,
            } => out!(
                "{:<16} {:>7} {:<4} {:<8} {:>7}  {} (stale: {reason}; `netvlan datapath prune` removes it)",
                ifname.as_deref().unwrap_or("-"),
                ifindex,
                "-",
                "stale",
                "-",
                pin_dir.display()
            ),
        }
    }
}
