//! `banger doctor`: runs in the CLI process, so it works when the daemon cannot start.

use banger_host::config::{Config, Paths};

use crate::error::CliError;
use crate::output;

pub fn run(paths: &Paths, json: bool) -> Result<i32, CliError> {
    let config = Config::load(paths).unwrap_or_default();
    let report = bangerd::doctor::run(paths, &config);
    if json {
        output::json(&report)?;
    } else {
        output::data(&bangerd::doctor::render_table(
            &report,
            output::color_stdout(),
        ));
    }
    Ok(if report.has_failures() { 1 } else { 0 })
}
