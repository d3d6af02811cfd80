//! The user a guest command runs as: `NAME[:UID]` (`--user`, the API's and MCP's
//! `user`). The CLI, the daemon and the guest agent all parse it here, so a name is
//! checked the same way before a VM exists and again in the guest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Diagnostic, ErrorCode};

/// The superuser, whose UID is 0.
pub const ROOT: &str = "root";
/// The highest UID `--user NAME:UID` may ask for.
pub const MAX_UID: u32 = 60_000;
/// Where a user banger creates gets its home.
pub const HOME_BASE: &str = "/home";

const HINT: &str = "give NAME or NAME:UID: a lowercase letter or `_`, then up to 31 \
lowercase letters, digits, `_` or `-`; a UID from 1 to 60000 (0 only for root), e.g. \
--user dev or --user dev:1500";

/// A valid `NAME[:UID]`. It travels as that text; reading it back checks it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GuestUser {
    name: String,
    uid: Option<u32>,
}

/// Why a `--user` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    Name(String),
    Uid(String),
    /// UID 0 for a name other than root, or root with another UID.
    Root {
        name: String,
        uid: u32,
    },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Name(name) => write!(f, "invalid user name {name:?}"),
            UserError::Uid(uid) => write!(f, "invalid UID {uid:?}"),
            UserError::Root { name, uid } => {
                write!(
                    f,
                    "user {name} cannot have UID {uid}: UID 0 is root's alone"
                )
            }
        }
    }
}

impl std::error::Error for UserError {}

impl Diagnostic for UserError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn hint(&self) -> Option<String> {
        Some(HINT.into())
    }
}

impl GuestUser {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UID asked for; `None` takes the existing user's, or the next free one.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    pub fn is_root(&self) -> bool {
        self.name == ROOT
    }

    /// The home banger gives this user when it creates it: `/root` or `/home/NAME`.
    pub fn home(&self) -> String {
        if self.is_root() {
            "/root".into()
        } else {
            format!("{HOME_BASE}/{}", self.name)
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some('a'..='z' | '_'));
    first_ok && name.len() <= 32 && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

impl FromStr for GuestUser {
    type Err = UserError;

    fn from_str(s: &str) -> Result<GuestUser, UserError> {
        let (name, uid) = match s.split_once(':') {
            Some((name, uid)) => (name, Some(uid)),
            None => (s, None),
        };
        if !valid_name(name) {
            return Err(UserError::Name(name.into()));
        }
        let uid = match uid {
            None => None,
            Some(text) => {
                let uid: u32 = Some(text)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse().ok())
                    .filter(|u| *u <= MAX_UID)
                    .ok_or_else(|| UserError::Uid(text.into()))?;
                if (uid == 0) != (name == ROOT) {
                    return Err(UserError::Root {
                        name: name.into(),
                        uid,
                    });
                }
                Some(uid)
            }
        };
        Ok(GuestUser {
            name: name.into(),
            uid,
        })
    }
}

impl fmt::Display for GuestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "{}:{uid}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl TryFrom<String> for GuestUser {
    type Error = UserError;
    fn try_from(s: String) -> Result<GuestUser, UserError> {
        s.parse()
    }
}

impl From<GuestUser> for String {
    fn from(u: GuestUser) -> String {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<GuestUser, UserError> {
        s.parse()
    }

    #[test]
    fn names_and_uids_that_are_accepted() {
        let dev = parse("dev").unwrap();
        let pinned = parse("_ci-runner_2:1500").unwrap();
        let root = parse("root:0").unwrap();

        assert_eq!(
            (dev.name(), dev.uid(), dev.home()),
            ("dev", None, "/home/dev".into())
        );
        assert_eq!((pinned.name(), pinned.uid()), ("_ci-runner_2", Some(1500)));
        assert_eq!((root.uid(), root.home()), (Some(0), "/root".into()));
        assert_eq!(pinned.to_string(), "_ci-runner_2:1500");
        assert!(parse(&format!("a{}", "b".repeat(31))).is_ok());
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "Dev",
            "1dev",
            "-dev",
            "dev.x",
            "dev/x",
            "de v",
            "../x",
            "dév",
            &"a".repeat(33),
        ] {
            assert_eq!(parse(bad), Err(UserError::Name(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn bad_uids_are_refused() {
        for bad in [
            "dev:",
            "dev:x",
            "dev:-1",
            "dev:60001",
            "dev:1:2",
            "dev: 5",
            "dev:+5",
        ] {
            assert!(matches!(parse(bad), Err(UserError::Uid(_))), "{bad:?}");
        }
        assert_eq!(
            parse("dev:0"),
            Err(UserError::Root {
                name: "dev".into(),
                uid: 0
            })
        );
        assert!(matches!(parse("root:5"), Err(UserError::Root { .. })));
    }

    #[test]
    fn the_error_says_what_to_give() {
        let err = parse("Dev").unwrap_err();

        assert_eq!(err.to_string(), "invalid user name \"Dev\"");
        assert!(err.hint().unwrap().contains("--user dev:1500"));
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn it_travels_as_text_and_is_checked_when_read() {
        let json = serde_json::to_string(&parse("dev:1500").unwrap()).unwrap();
        let bad = serde_json::from_str::<GuestUser>("\"Dev\"");
        let bytes = postcard::to_allocvec(&parse("dev").unwrap()).unwrap();

        assert_eq!(json, "\"dev:1500\"");
        assert!(bad.unwrap_err().to_string().contains("invalid user name"));
        assert_eq!(
            postcard::from_bytes::<GuestUser>(&bytes).unwrap(),
            parse("dev").unwrap()
        );
    }
}
