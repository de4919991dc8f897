//! After Join: Docker moves the endpoint's link into the sandbox when the
//! container's namespace is ready (its `SandboxKey` is mounted by the
//! prestart hook, after Join has answered). The kernel drops a link's TC
//! programs on a namespace move, so they are attached once the link is
//! there: a task per joined endpoint watches for the namespace, then
//! adopts the link ([`Manager::adopt_moved`](crate::control::Manager)).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Mutex;

use super::Plugin;
use crate::{control::NetworkError, sys::netns::Netns};

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
    sandbox: PathBuf,
) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if Netns::open(&sandbox).is_ok() {
                let _serial = calls.lock().await;
                let adopted = match plugin.manager().await {
                    Ok(manager) => manager
                        .adopt_moved(&network, &key)
                        .await
                        .map_err(Into::into),
                    Err(e) => Err(e),
                };
                match adopted {
                    Ok(Some(endpoint)) => {
                        tracing::info!(
                            "adopted {} ({}) in {}",
                            endpoint.ifname,
                            key,
                            sandbox.display()
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
                if endpoint.netns.is_none() && !endpoint.netns_path.as_os_str().is_empty() {
                    spawn(
                        self.clone(),
                        calls.clone(),
                        record.name.clone(),
                        key.clone(),
                        endpoint.netns_path.clone(),
                    );
                    resumed += 1;
                }
            }
        }
        Ok(resumed)
    }
}
