//! What a long wait waits for, on stderr: a spinner with the phase and its elapsed time
//! while `vm create` and `vm run` start a VM, ship a workspace or bring changes back,
//! cleared when the phase ends. Only on a terminal, and never under `--quiet` or
//! `--json`. The phases are the CLI's own steps: a create is one daemon request, so
//! booting and waiting for the agent show as one phase.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner and its clock redraw.
const TICK: Duration = Duration::from_millis(120);

/// Whether waits are shown: stderr is a terminal, and neither `--quiet` nor `--json`
/// asked for quiet.
pub fn shown(stderr_tty: bool, quiet: bool, json: bool) -> bool {
    stderr_tty && !quiet && !json
}

/// Shows phases on stderr, or nothing.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    shown: bool,
}

impl Waits {
    /// For this process: see [`shown`]; `json` is whether the verb prints JSON.
    pub fn stderr(json: bool) -> Waits {
        Waits {
            shown: shown(
                std::io::stderr().is_terminal(),
                crate::output::quiet(),
                json,
            ),
        }
    }

    /// A phase, shown until the returned guard drops.
    pub fn phase(self, what: impl Into<Cow<'static, str>>) -> Phase {
        if !self.shown {
            return Phase(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(what);
        bar.enable_steady_tick(TICK);
        Phase(Some(bar))
    }
}

/// A phase on screen; dropping it clears its line.
#[must_use = "the phase is cleared when this drops"]
pub struct Phase(Option<ProgressBar>);

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_show_only_on_a_terminal_unless_quiet_or_json() {
        assert!(shown(true, false, false));
        assert!(!shown(false, false, false), "not a terminal");
        assert!(!shown(true, true, false), "--quiet");
        assert!(!shown(true, false, true), "--json");
    }

    #[test]
    fn a_hidden_wait_draws_nothing() {
        let phase = Waits { shown: false }.phase("booting VM");

        assert!(phase.0.is_none());
    }
}
