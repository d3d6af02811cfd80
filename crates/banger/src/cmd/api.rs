//! `banger api openapi`: the public API's OpenAPI document, fetched from the daemon.

use banger_wire::public::OPENAPI_PATH;

use crate::cli::ApiCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub async fn run(client: &Client, cmd: ApiCommand) -> Result<i32, CliError> {
    match cmd {
        ApiCommand::Openapi => {
            let doc = client.get(OPENAPI_PATH).await?;
            output::data(&String::from_utf8_lossy(&doc));
            Ok(0)
        }
    }
}
