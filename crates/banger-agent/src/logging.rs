//! Console logging. The agent's stderr is the guest console (or the journal under
//! systemd), so logs are plain text without colours. `BANGER_AGENT_LOG` sets the level
//! (`error`, `warn`, `info`, `debug`, `trace`; default `info`).

use std::error::Error;
use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

pub fn init() {
    let level = std::env::var("BANGER_AGENT_LOG")
        .ok()
        .and_then(|v| LevelFilter::from_str(&v).ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
}

/// Renders an error with its causes: `top: cause: cause`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
