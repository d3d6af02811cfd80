//! `image pull REF` on the CLI side: the caller's registry login and the pull on first
//! use of `--image REF`.
//!
//! Credentials come from the caller's own files, read by the CLI as the caller (the
//! daemon reads no user's files): `REGISTRY_AUTH_FILE` when set, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, their `auths` entry for
//! the reference's registry (`auth`, base64 of `user:password`, or `username` and
//! `password`). They go to the daemon in the request and are never printed. Docker
//! credential helpers (`credsStore`, `credHelpers`) are not run.

use std::path::PathBuf;

use banger_wire::api::{ImageInfo, RegistryCredentials, RegistryPullReport, RegistryPullSpec};
use banger_wire::api::{Request, Response};
use banger_wire::Diagnostic;
use base64::Engine;
use serde::Deserialize;

use crate::client::Client;
use crate::error::CliError;

/// Docker Hub's registry, as references without one name it and logins record it.
const DOCKER_HUB: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
];

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The registry host of a reference: its first component when that has a `.` or `:`
/// or is `localhost`, else Docker Hub.
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The file logins are read from, per the environment.
fn auth_file() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(f.into());
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The caller's login for the registry of `reference`, if any.
pub fn credentials(reference: &str) -> Result<Option<RegistryCredentials>, CliError> {
    let Some(path) = auth_file() else {
        return Ok(None);
    };
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file: AuthFile = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(
            format!("{} is not a valid registry auth file: {e}", path.display()),
            Some("fix it, or point REGISTRY_AUTH_FILE at a valid one"),
        )
    })?;
    lookup(&file, registry_of(reference)).map_err(|reason| {
        CliError::usage(
            format!(
                "the login for {} in {}: {reason}",
                registry_of(reference),
                path.display()
            ),
            Some("log in again (`docker login`, `skopeo login`)"),
        )
    })
}

fn lookup(file: &AuthFile, registry: &str) -> Result<Option<RegistryCredentials>, &'static str> {
    let hub = DOCKER_HUB.contains(&registry);
    let entry = file.auths.iter().find(|(key, _)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        host == registry || (hub && DOCKER_HUB.contains(&host))
    });
    let Some((_, entry)) = entry else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryCredentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "its auth is not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "its auth is not UTF-8")?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or("its auth is not user:password")?;
    Ok(Some(RegistryCredentials {
        username: username.into(),
        password: password.into(),
    }))
}

/// Pulls `reference` through the daemon, `on_event` getting its progress.
pub async fn pull(
    client: &Client,
    reference: String,
    name: Option<String>,
    insecure: bool,
    on_event: impl FnMut(banger_wire::api::StreamEvent),
) -> Result<RegistryPullReport, CliError> {
    let spec = RegistryPullSpec {
        credentials: credentials(&reference)?,
        reference,
        name,
        insecure,
    };
    match client
        .stream(&Request::ImagePullRegistry { spec }, on_event)
        .await?
    {
        Response::Pulled(report) => Ok(report),
        other => Err(CliError::unexpected(other)),
    }
}

/// For `--image REF`: the local image `image` stands for, pulled first when it is a
/// registry reference and no image of its local name exists.
pub async fn ensure(
    client: &Client,
    image: Option<String>,
    on_event: impl FnMut(banger_wire::api::StreamEvent),
) -> Result<Option<String>, CliError> {
    let image = match image {
        Some(i) if banger_wire::reference::is_reference(&i) => i,
        other => return Ok(other),
    };
    let name = banger_wire::reference::local_name(&image);
    if show(client, &name).await?.is_some() {
        return Ok(Some(name));
    }
    crate::output::note(&format!("pulling {image} as image {name}"));
    let report = pull(client, image, Some(name), false, on_event).await?;
    Ok(Some(report.image.name))
}

/// The image `name`, or `None` when there is none.
pub async fn show(client: &Client, name: &str) -> Result<Option<ImageInfo>, CliError> {
    match client
        .rpc(&Request::ImageShow {
            name: name.to_string(),
        })
        .await
    {
        Ok(Response::Image(img)) => Ok(Some(img)),
        Ok(other) => Err(CliError::unexpected(other)),
        Err(e) if e.code() == banger_wire::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> AuthFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn registries_come_from_the_first_component() {
        assert_eq!(registry_of("localhost:5000/x:1"), "localhost:5000");
        assert_eq!(registry_of("ghcr.io/org/img"), "ghcr.io");
        assert_eq!(registry_of("library/debian:12"), "docker.io");
        assert_eq!(registry_of("python:3.12"), "docker.io");
    }

    #[test]
    fn logins_are_found_by_registry() {
        let f = file(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
               "ghcr.io":{"username":"me","password":"tok"}}}"#,
        );
        let hub = lookup(&f, "docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("u", "p"));
        assert_eq!(lookup(&f, "ghcr.io").unwrap().unwrap().password, "tok");
        assert!(lookup(&f, "quay.io").unwrap().is_none());
        assert!(lookup(&file(r#"{"auths":{"q.io":{"auth":"!!"}}}"#), "q.io").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = RegistryCredentials {
            username: "me".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
