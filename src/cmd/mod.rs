//! The subcommands: each long-running one turns flags and a config file into a running part;
//! `admin`, `import` and `verify` are clients.

pub mod admin;
pub mod coordinator;
pub mod dev;
pub mod gateway;
pub mod import;
pub mod node;
pub mod verify;

use std::path::Path;

/// Reads a TOML config file (if given) and lays `overrides` (the flags that were set) over
/// it, so a flag always wins over the file and the file over the defaults.
pub fn merge_config<T: serde::de::DeserializeOwned>(
    file: Option<&Path>,
    overrides: &impl serde::Serialize,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<toml::Table>(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    let flags = toml::Table::try_from(overrides).context("flags do not form a config")?;
    table.extend(flags);
    let config = toml::Value::Table(table)
        .try_into()
        .map_err(|err: toml::de::Error| {
            anyhow::anyhow!("invalid configuration: {}", err.message())
        })?;
    Ok(config)
}

/// Waits for Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
