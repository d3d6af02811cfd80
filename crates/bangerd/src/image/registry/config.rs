//! The image config blob: the platform it is built for and what a run of it asks
//! (entrypoint, cmd, env, working directory). Only what banger uses is read.

use banger_wire::agent::ExecSpec;
use banger_wire::api::ImageRunConfig;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RunSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunSection {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
}

/// Reads a config blob; `Err` says why it cannot run here (not JSON, not linux/amd64).
pub fn parse(json: &str) -> Result<ImageRunConfig, String> {
    let file: ConfigFile =
        serde_json::from_str(json).map_err(|e| format!("its config is not valid JSON ({e})"))?;
    if (file.os.as_str(), file.architecture.as_str()) != ("linux", "amd64") {
        return Err(format!(
            "it is built for {}/{}, and banger runs linux/amd64 guests",
            file.os, file.architecture
        ));
    }
    let run = file.config.unwrap_or_default();
    Ok(ImageRunConfig {
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run
            .env
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
            .collect(),
        working_dir: run.working_dir.filter(|d| d.starts_with('/')),
    })
}

/// `spec` with the image's env under the caller's (a key the caller sets wins) and its
/// working directory when the caller gave none.
pub fn exec_defaults(run: &ImageRunConfig, mut spec: ExecSpec) -> ExecSpec {
    let image_env = run
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .filter(|(k, _)| !spec.env.iter().any(|(set, _)| set == k));
    let mut env: Vec<(String, String)> = image_env
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.append(&mut spec.env);
    spec.env = env;
    if spec.cwd.is_none() {
        spec.cwd = run.working_dir.clone();
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_defaults_yield_to_the_caller() {
        let run = ImageRunConfig {
            env: vec!["PATH=/opt/bin".into(), "LANG=C.UTF-8".into()],
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        // From JSON, so fields other branches add to ExecSpec take their defaults.
        let spec: ExecSpec =
            serde_json::from_str(r#"{"argv":["env"],"env":[["LANG","de_DE"]]}"#).unwrap();

        let spec = exec_defaults(&run, spec);

        assert_eq!(
            spec.env,
            [
                ("PATH".into(), "/opt/bin".into()),
                ("LANG".into(), "de_DE".into())
            ]
        );
        assert_eq!(spec.cwd.as_deref(), Some("/srv"));
    }

    #[test]
    fn run_settings_come_from_the_config() {
        let run = parse(
            r#"{"os":"linux","architecture":"amd64","config":{"Entrypoint":["/bin/app"],
               "Cmd":["--serve"],"Env":["PATH=/usr/bin","=bad","NOEQUALS"],"WorkingDir":"/srv"}}"#,
        )
        .unwrap();
        assert_eq!(run.command(), ["/bin/app", "--serve"]);
        assert_eq!(run.env, ["PATH=/usr/bin"]);
        assert_eq!(run.working_dir.as_deref(), Some("/srv"));
    }

    #[test]
    fn other_platforms_are_refused() {
        let err = parse(r#"{"os":"linux","architecture":"arm64"}"#).unwrap_err();
        assert!(err.contains("linux/arm64"), "{err}");
        assert!(parse("not json").is_err());
    }
}
