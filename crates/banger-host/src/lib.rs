//! What the `banger` CLI and the `bangerd` daemon both need on the host, without the
//! daemon's machinery: where things live ([`config::Paths`]), `config.toml`
//! ([`config::Config`]) and the checks on a user's runtime dir ([`private_dir`]).

pub mod config;
pub mod private_dir;
