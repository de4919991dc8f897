//! `netvlan restore`: recreate what the stored networks need.

use super::error::{CliError, Result};

use super::{
    output::{out, print_json},
    Output,
};
use crate::control::Manager;

pub(super) async fn run(manager: &Manager, output: Output) -> Result<()> {
    let actions = manager.restore().await?;
    let failed = actions.iter().filter(|a| a.error.is_some()).count();
    if output.json {
        print_json(&serde_json::json!({ "actions": actions }))?;
    } else if actions.is_empty() {
        out!("everything is in place; nothing to restore");
    } else {
        for a in &actions {
            match &a.error {
                None => out!("{}: {}", a.network, a.action),
                Some(e) => out!("{}: {} FAILED: {e}", a.network, a.action),
            }
        }
    }
    if failed > 0 {
        return Err(CliError::RestoreFailed { failed });
    }
    Ok(())
}
