//! `banger vm cp SRC... DST`: copies files and directory trees between the host and a
//! VM; one side is `NAME:/path` (see [`crate::cp`]).

use banger_wire::user::GuestUser;

use crate::client::Client;
use crate::cp;
use crate::error::CliError;
use crate::output;

pub async fn run(
    client: &Client,
    paths: &[String],
    user: Option<GuestUser>,
) -> Result<i32, CliError> {
    let plan = cp::parse(paths)?;
    for skipped in cp::copy(client, plan, user).await? {
        output::note(&skipped.to_string());
    }
    Ok(0)
}
