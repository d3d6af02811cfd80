//! Which Debian mirror a build downloads from: the one given, else the host's apt
//! sources, else deb.debian.org.

use std::path::Path;

/// Used when neither the request nor the host names a usable mirror.
pub const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// One `deb` line of an apt source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// The mirror for a build: `requested`, else the host's main archive under `root`
/// (normally `/`), else [`FALLBACK_MIRROR`].
pub fn resolve(requested: Option<&str>, root: &Path) -> String {
    if let Some(m) = requested.map(str::trim).filter(|m| !m.is_empty()) {
        return m.trim_end_matches('/').to_string();
    }
    pick(&host_sources(root)).unwrap_or_else(|| FALLBACK_MIRROR.to_string())
}

/// Reads `etc/apt/sources.list` and `etc/apt/sources.list.d/*.{list,sources}` under `root`.
/// Unreadable files are skipped: the fallback mirror still works.
pub fn host_sources(root: &Path) -> Vec<Source> {
    let apt = root.join("etc/apt");
    let mut sources = fs_err::read_to_string(apt.join("sources.list"))
        .map(|t| parse_one_line(&t))
        .unwrap_or_default();
    let mut files: Vec<_> = fs_err::read_dir(apt.join("sources.list.d"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let Ok(text) = fs_err::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line(&text)),
            Some("sources") => sources.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    sources
}

/// The first source that looks like a Debian main archive: http(s) or file, a plain
/// suite (not `-updates`/`-security`/`-backports`), the `main` component, not a
/// security or Ubuntu archive.
pub fn pick(sources: &[Source]) -> Option<String> {
    sources
        .iter()
        .find(|s| {
            let scheme_ok = ["http://", "https://", "file:/"]
                .iter()
                .any(|p| s.uri.starts_with(p));
            let plain_suite = s
                .suites
                .iter()
                .any(|x| !x.contains('-') && !x.contains('/'));
            scheme_ok
                && plain_suite
                && s.components.iter().any(|c| c == "main")
                && !s.uri.contains("security")
                && !s.uri.contains("ubuntu")
        })
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

/// `deb [options] uri suite component...`
fn parse_one_line(text: &str) -> Vec<Source> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let rest = line.strip_prefix("deb")?;
            if !rest.starts_with([' ', '\t']) {
                return None; // deb-src
            }
            let mut rest = rest.trim_start();
            if rest.starts_with('[') {
                let end = rest.find(']')?;
                rest = &rest[end + 1..];
            }
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(Source {
                uri,
                suites: vec![suite],
                components: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// deb822 stanzas: `Types`, `URIs`, `Suites`, `Components`, `Enabled`.
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let flush = |stanza: &mut Vec<(String, String)>, out: &mut Vec<Source>| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let enabled = field("Enabled").first().is_none_or(|v| v != "no");
        if enabled && field("Types").iter().any(|t| t == "deb") {
            for uri in field("URIs") {
                out.push(Source {
                    uri,
                    suites: field("Suites"),
                    components: field("Components"),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut stanza, &mut out);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of a multi-line field (e.g. an inline Signed-By key).
            if let Some((_, v)) = stanza.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn deb822_main_archive_is_picked() {
        let sources = parse_deb822(DEB822);
        assert_eq!(sources.len(), 2);
        assert_eq!(pick(&sources).unwrap(), "http://deb.debian.org/debian");
    }

    #[test]
    fn disabled_deb822_stanza_is_ignored() {
        let text = "Types: deb\nURIs: http://a.example/debian\nSuites: trixie\nComponents: main\nEnabled: no\n";
        assert_eq!(parse_deb822(text), vec![]);
    }

    #[test]
    fn one_line_format_with_options_and_src() {
        let text = "\
# comment
deb-src http://src.example/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main contrib
";
        let sources = parse_one_line(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[1].components, ["main", "contrib"]);
        assert_eq!(pick(&sources).unwrap(), "https://mirror.example/debian");
    }

    #[test]
    fn third_party_sources_without_main_suite_are_skipped() {
        let text = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n";
        assert_eq!(pick(&parse_one_line(text)), None);
    }

    #[test]
    fn host_files_are_read_and_unknown_extensions_ignored() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/apt/sources.list.d");
        fs_err::create_dir_all(&d).unwrap();
        fs_err::write(d.join("debian.sources"), DEB822).unwrap();
        fs_err::write(
            d.join("x.list.disabled"),
            "deb http://wrong.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(resolve(None, root.path()), "http://deb.debian.org/debian");
    }

    #[test]
    fn requested_mirror_wins_and_empty_host_falls_back() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve(Some("http://m.example/debian/"), root.path()),
            "http://m.example/debian"
        );
        assert_eq!(resolve(None, root.path()), FALLBACK_MIRROR);
    }
}
