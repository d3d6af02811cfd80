//! The answer of a streaming verb: newline-delimited JSON [`StreamEvent`]s.

use banger_wire::api::StreamEvent;
use tokio::sync::mpsc;

/// Where a streaming verb sends its event lines.
pub(crate) type Tx = mpsc::Sender<Result<String, std::io::Error>>;

/// One event as one line of the answer.
pub(crate) fn event_line(ev: &StreamEvent) -> String {
    let mut s = serde_json::to_string(ev).unwrap_or_default();
    s.push('\n');
    s
}
