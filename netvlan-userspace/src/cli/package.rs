//! `netvlan completions` and `netvlan man`: what a package installs
//! beside the binary, generated from the clap tree so it never drifts
//! from what is parsed. Neither needs privileges.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use super::{
    error::{CliError, Result},
    output::{out, print_json},
    Output,
};

/// Prints the completion script for `shell` on stdout (with --json:
/// `{"shell", "script"}`).
pub(super) fn completions(shell: Shell, output: Output) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::command(), "netvlan", &mut script);
    let script = String::from_utf8_lossy(&script);
    if output.json {
        return print_json(&serde_json::json!({ "shell": shell.to_string(), "script": script }));
    }
    out!("{}", script.trim_end());
    Ok(())
}

/// With a directory: writes `netvlan.1` and one page per subcommand
/// (`netvlan-network-create.1`, ...) there and prints their paths.
/// Without: prints `netvlan.1` on stdout. With --json: `{"pages": [...]}`
/// or `{"page": "..."}`.
pub(super) fn man(dir: Option<&Path>, output: Output) -> Result<()> {
    // As clap_mangen::generate_to: no `help` pseudo-command, and every
    // subcommand built with its full name (`netvlan-network-create`).
    let mut command = super::command().disable_help_subcommand(true);
    command.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(CliError::Man)?;
        let page = String::from_utf8_lossy(&page);
        if output.json {
            return print_json(&serde_json::json!({ "page": page }));
        }
        out!("{}", page.trim_end());
        return Ok(());
    };
    let failed = |source| CliError::ManDir {
        dir: dir.into(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut written = Vec::new();
    write_pages(command, dir, &mut written).map_err(failed)?;
    if output.json {
        return print_json(&serde_json::json!({ "pages": written }));
    }
    for path in written {
        out!("{}", path.display());
    }
    Ok(())
}

fn write_pages(
    command: clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    written.push(clap_mangen::Man::new(command).generate_to(dir)?);
    Ok(())
}
