//! `banger image …`

use banger_wire::api::{ImageBuildSpec, ImageInfo, Request, Response, StreamEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;

use crate::cli::ImageCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub async fn run(client: &Client, cmd: ImageCommand) -> Result<i32, CliError> {
    match cmd {
        ImageCommand::Build {
            name,
            suite,
            packages,
            size,
            mirror,
            force,
            user,
            sudo,
        } => {
            let size_mib = size.map(|s| parse_size(&s)).transpose()?;
            let spec = ImageBuildSpec {
                name,
                suite,
                packages,
                size_mib,
                mirror,
                agent_path: None,
                force,
                user,
                sudo,
            };
            let bars = Bars::multi();
            let resp = client
                .stream(&Request::ImageBuild { spec }, |ev| bars.event(ev))
                .await;
            let img = bars.image(resp)?;
            output::data(&table(std::slice::from_ref(&img)));
            Ok(0)
        }
        ImageCommand::Import { path, name } => {
            let bars = Bars::multi();
            let resp = crate::transfer::import(client, &path, name, |ev| bars.event(ev)).await;
            let img = bars.image(resp)?;
            output::data(&table(std::slice::from_ref(&img)));
            Ok(0)
        }
        ImageCommand::Pull {
            url,
            name,
            insecure,
            json,
        } if !is_bundle(&url) => {
            let bars = Bars::multi();
            let report =
                crate::registry::pull(client, url, name, insecure, |ev| bars.event(ev)).await;
            bars.finish();
            let report = report?;
            if json {
                return output::json(&report).map(|_| 0);
            }
            let fetched = report.layers.iter().filter(|l| !l.cached).count();
            output::note(&format!(
                "{} layers: {fetched} downloaded, {} cached",
                report.layers.len(),
                report.layers.len() - fetched
            ));
            output::data(&table(std::slice::from_ref(&report.image)));
            Ok(0)
        }
        ImageCommand::Pull { url, name, .. } => {
            let bars = Bars::multi();
            let resp = client
                .stream(&Request::ImagePull { url, name }, |ev| bars.event(ev))
                .await;
            let img = bars.image(resp)?;
            output::data(&table(std::slice::from_ref(&img)));
            Ok(0)
        }
        ImageCommand::Export { name, dir } => {
            let bars = Bars::default();
            let dir =
                crate::transfer::export(client, &name, &dir, |file, bytes| bars.bytes(file, bytes))
                    .await;
            bars.finish();
            output::data(&dir?.display().to_string());
            Ok(0)
        }
        ImageCommand::List { json } => match client.rpc(&Request::ImageList).await? {
            Response::Images(imgs) if json => output::json(&imgs).map(|_| 0),
            Response::Images(imgs) => {
                output::data(&table(&imgs));
                Ok(0)
            }
            other => Err(CliError::unexpected(other)),
        },
        ImageCommand::Show { name, json } => {
            match client.rpc(&Request::ImageShow { name }).await? {
                Response::Image(img) if json => output::json(&img).map(|_| 0),
                Response::Image(img) => {
                    output::data(&format!(
                    "name     {}\ndigest   {}\nsource   {}\ncreated  {}\nrootfs   {} bytes\ndir      {}",
                    img.name, img.digest, img.source, img.created_at, img.rootfs_bytes, img.dir
                ));
                    show_run(&img);
                    Ok(0)
                }
                other => Err(CliError::unexpected(other)),
            }
        }
        ImageCommand::Warm {
            name,
            res,
            backend,
            no_network,
            pool,
            json,
        } => {
            let spec = banger_wire::api::VmCreateSpec {
                image: name,
                vcpu: res.vcpu,
                memory_mib: res.memory,
                disk_size_mib: res.disk_size,
                backend: super::parse_backend(backend)?,
                no_network,
                ..Default::default()
            };
            match client.rpc(&Request::ImageWarm { spec, pool }).await? {
                Response::Snapshot(s) if json => output::json(&s).map(|_| 0),
                Response::Snapshot(s) => {
                    output::data(&format!(
                        "{}  warm snapshot of {} ({} vcpu, {} MiB), paused {} ms",
                        s.name, s.image, s.vcpu, s.memory_mib, s.paused_ms
                    ));
                    Ok(0)
                }
                other => Err(CliError::unexpected(other)),
            }
        }
        ImageCommand::Delete { name } => {
            client
                .rpc(&Request::ImageDelete { name: name.clone() })
                .await?;
            output::data(&name);
            Ok(0)
        }
    }
}

/// `--image REF` of `vm run` and `vm create`: pulls a registry reference on first use,
/// with progress bars (see [`crate::registry::ensure`]).
pub async fn ensure(client: &Client, image: Option<String>) -> Result<Option<String>, CliError> {
    let bars = Bars::multi();
    let image = crate::registry::ensure(client, image, |ev| bars.event(ev)).await;
    bars.finish();
    image
}

/// The container config and the missing pieces of an image, for `image show`.
fn show_run(img: &ImageInfo) {
    let run = &img.run;
    if !run.command().is_empty() {
        output::data(&format!("command  {}", run.command().join(" ")));
    }
    if let Some(dir) = &run.working_dir {
        output::data(&format!("workdir  {dir}"));
    }
    for env in &run.env {
        output::data(&format!("env      {env}"));
    }
    if let Some(size) = img.pool_size {
        output::data(&format!(
            "pool     {size} clones, its own size (`image warm --pool`)"
        ));
    }
    for what in &img.lacks {
        let effect = match what.as_str() {
            "sshd" => "no sshd: `vm ssh` is unavailable (exec, run and cp work)",
            "shell" => "no /bin/sh: `vm run` needs a command; workspaces and `vm cp` need a shell",
            other => other,
        };
        output::data(&format!("lacks    {effect}"));
    }
}

/// A bundle URL (or a path on the daemon's host), not a registry reference.
fn is_bundle(source: &str) -> bool {
    ["http://", "https://", "file://", "/", "."]
        .iter()
        .any(|p| source.starts_with(p))
}

/// Progress bars on stderr, one per phase or file.
#[derive(Default)]
struct Bars {
    multi: Option<MultiProgress>,
    bars: std::cell::RefCell<HashMap<String, ProgressBar>>,
}

impl Bars {
    /// Bars drawn together, for a streamed image request.
    fn multi() -> Bars {
        Bars {
            multi: Some(MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            )),
            ..Default::default()
        }
    }

    /// Finishes the bars and takes the image out of a streamed answer.
    fn image(&self, resp: Result<Response, CliError>) -> Result<ImageInfo, CliError> {
        self.finish();
        match resp? {
            Response::Image(img) => Ok(img),
            other => Err(CliError::unexpected(other)),
        }
    }

    fn bar(&self, phase: &str, total: Option<u64>) -> ProgressBar {
        let mut bars = self.bars.borrow_mut();
        bars.entry(phase.to_string())
            .or_insert_with(|| {
                let b = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                };
                let b = match &self.multi {
                    Some(m) => m.add(b),
                    None => b,
                };
                let style = if phase.starts_with("layer ") {
                    ProgressStyle::with_template(
                        "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {msg}",
                    )
                } else if total.is_some() {
                    ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                } else {
                    ProgressStyle::with_template("{prefix:>10} {spinner} {msg}")
                };
                if let Ok(s) = style {
                    b.set_style(s.progress_chars("=> "));
                }
                b.set_prefix(phase.to_string());
                b
            })
            .clone()
    }

    fn event(&self, ev: StreamEvent) {
        if let StreamEvent::Progress {
            phase,
            done,
            total,
            message,
        } = ev
        {
            let bar = self.bar(&phase, total);
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
            if let Some(m) = message {
                bar.set_message(m);
            }
            if total.is_some_and(|t| done >= t) {
                bar.finish();
            } else {
                bar.tick();
            }
        }
    }

    /// `bytes` of `file` written so far.
    fn bytes(&self, file: &str, bytes: u64) {
        let bar = self.bar(file, None);
        bar.set_message(format!("{} MiB", bytes >> 20));
        bar.tick();
    }

    fn finish(&self) {
        for b in self.bars.borrow().values() {
            b.finish();
        }
    }
}

fn parse_size(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| CliError::usage(format!("invalid size {s:?}"), Some("use e.g. 4G or 4096")))
}

fn table(imgs: &[ImageInfo]) -> String {
    let rows: Vec<Vec<String>> = imgs
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.digest.chars().take(19).collect(),
                format!("{} MiB", i.rootfs_bytes >> 20),
                i.source.clone(),
                i.created_at.clone(),
            ]
        })
        .collect();
    output::table(&["NAME", "DIGEST", "SIZE", "SOURCE", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_told_from_registry_references() {
        assert!(is_bundle("https://example.com/bundle"));
        assert!(is_bundle("/srv/bundle") && is_bundle("./bundle"));
        assert!(!is_bundle("localhost:5000/x:1"));
        assert!(!is_bundle("python:3.12"));
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4G").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn size_past_64_bits_is_refused_not_wrapped() {
        let err = parse_size("18014398509481984G").unwrap_err();
        assert!(err.to_string().contains("invalid size"), "{err}");
    }
}
