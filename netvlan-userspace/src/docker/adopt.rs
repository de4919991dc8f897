//! After Join: Docker moves the endpoint's link into the sandbox when the
//! container's namespace is ready (its `SandboxKey` is mounted by the
//! prestart hook, after Join has answered). A task per joined endpoint
//! watches for the namespace, then adopts the link
//! ([`Manager::adopt_moved`](crate::control::Manager)): on TCX kernels the
//! programs attached at CreateEndpoint came with it and only their pins
//! move; older kernels drop a link's clsact filters on the move, so
//! there they are attached now.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Mutex;

use super::Plugin;
use crate::{
    control::{link_alias, NetworkError},
    datapath::endpoint_hooks,
    sys::{netlink::Netlink, netns::Netns},
};

/// Whether the link tagged `alias` is in the namespace at `sandbox`
/// under a name other than `staged_name` (Docker renames it there).
async fn moved(sandbox: &std::path::Path, alias: &str, staged_name: &str) -> bool {
    let Ok(netns) = Netns::open(sandbox) else {
        return false;
    };
    let Ok(netlink) = Netlink::connect_in(&netns) else {
        return false;
    };
    netlink.links().await.is_ok_and(|links| {
        links
            .iter()
            .any(|l| l.alias.as_deref() == Some(alias) && l.name != staged_name)
    })
}

/// How often the task looks for the moved link: the window in which the
/// link may be up in the sandbox without its endpoint programs.
const POLL: Duration = Duration::from_millis(2);
/// How long it waits for Docker to move the link.
const PATIENCE: Duration = Duration::from_secs(120);

/// Starts watching for `key`'s link in `sandbox`. `calls` serialises the
/// plugin's uses of the state.
pub(super) fn spawn(
    plugin: Plugin,
    calls: Arc<Mutex<()>>,
    network: String,
    key: String,
    id: String,
    sandbox: PathBuf,
) {
    tokio::spawn(async move {
        let joined = tokio::time::Instant::now();
        let deadline = joined + PATIENCE;
        // Loaded while Docker starts the container: attaching is then
        // only the kernel's part.
        let mut loading = Some(endpoint_hooks::Loading::start());
        let alias = link_alias(&id);
        let staged_name = super::link_name(&id);
        let mut arrived = None;
        while tokio::time::Instant::now() < deadline {
            // Cheap first: the tagged link, renamed, in the sandbox.
            if arrived.is_some() || moved(&sandbox, &alias, &staged_name).await {
                let arrived = *arrived.get_or_insert_with(tokio::time::Instant::now);
                let _serial = calls.lock().await;
                let adopted = match plugin.manager().await {
                    Ok(manager) => manager
                        .adopt_moved(&network, &key, &mut loading)
                        .await
                        .map_err(Into::into),
                    Err(e) => Err(e),
                };
                match adopted {
                    Ok(Some(endpoint)) => {
                        tracing::info!(
                            "adopted {} ({}) in {}: {:?} after Join, {:?} after the link arrived there",
                            endpoint.ifname,
                            key,
                            sandbox.display(),
                            joined.elapsed(),
                            arrived.elapsed(),
                        );
                        return;
                    }
                    Ok(None) => {}
                    Err(super::DockerError::Network(e))
                        if matches!(
                            *e,
                            NetworkError::NotConnected { .. } | NetworkError::UnknownNetwork(_)
                        ) =>
                    {
                        // Left or deleted before it arrived.
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("adopting {key} in {}: {}", sandbox.display(), e.message())
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(
            "{key}: Docker did not move its link into {} within {PATIENCE:?}; `netvlan restore` attaches its programs",
            sandbox.display()
        );
    });
}

impl Plugin {
    /// On start: watches again for the links of endpoints that joined but
    /// were not adopted when the last plugin stopped.
    pub(super) async fn resume(&self, calls: Arc<Mutex<()>>) -> Result<usize, super::DockerError> {
        let manager = self.manager().await?;
        let mut resumed = 0;
        for record in manager.networks()? {
            if !record.labels.contains_key(super::NETWORK_LABEL) {
                continue;
            }
            for (key, endpoint) in &record.endpoints {
                if endpoint.staged && !endpoint.netns_path.as_os_str().is_empty() {
                    spawn(
                        self.clone(),
                        calls.clone(),
                        record.name.clone(),
                        key.clone(),
                        endpoint.id.clone(),
                        endpoint.netns_path.clone(),
                    );
                    resumed += 1;
                }
            }
        }
        Ok(resumed)
    }
}
