//! `netvlan check`: drift between the store and the kernel.

use super::error::{CliError, Result};

use super::{output::print_json, Output};
use crate::control::Manager;

pub(super) async fn run(manager: &Manager, output: Output) -> Result<()> {
    let drifts = manager.check().await?;
    if output.json {
        print_json(&serde_json::json!({ "drifts": drifts }))?;
    } else if drifts.is_empty() {
        println!("the kernel matches the stored networks; no drift");
    } else {
        for d in &drifts {
            println!(
                "{}: {} [{}]; repair: {}",
                d.network, d.problem, d.kind, d.repair
            );
        }
    }
    if !drifts.is_empty() {
        return Err(CliError::Drifts {
            count: drifts.len(),
        });
    }
    Ok(())
}
