//! A strict reader for the patches `git diff --binary` writes: every path a patch names,
//! its modes, and the targets of the symlinks it makes.
//!
//! The guest writes the patch, so it is untrusted. The grammar is deliberately narrow:
//! a patch is a sequence of `diff --git` sections and nothing else; hunks are read by
//! their line counts, so no text can hide between them (git would read a stray
//! `--- x` / `+++ y` pair there as another patch).

use std::io::{BufRead, Read};

use super::quote::{header_names, name, strip};

/// Git's mode for a symlink.
pub const SYMLINK_MODE: u32 = 0o120000;
/// Git's mode for a submodule.
pub const GITLINK_MODE: u32 = 0o160000;
/// The only modes banger applies: a file, an executable file, a symlink.
pub const ALLOWED_MODES: [u32; 3] = [0o100644, 0o100755, SYMLINK_MODE];
/// The file-type bits of a mode: git decides what to create by these alone.
const S_IFMT: u32 = 0o170000;

/// Whether git makes a symlink for `mode` (`120755` too).
pub fn is_symlink(mode: u32) -> bool {
    mode & S_IFMT == SYMLINK_MODE
}

/// Whether git reads `mode` as a submodule.
pub fn is_gitlink(mode: u32) -> bool {
    mode & S_IFMT == GITLINK_MODE
}

/// Symlink contents longer than this are refused (PATH_MAX).
const MAX_TARGET: usize = 4096;
/// The longest patch line read, in bytes (its newline left out).
pub const MAX_PATCH_LINE: usize = 1 << 20;

/// Why a patch from the guest is not applied.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("line {line} of the patch: {what}")]
    Malformed { line: usize, what: String },
    #[error("path {path:?} is absolute")]
    Absolute { path: String },
    #[error("path {path:?} climbs out with `..`")]
    DotDot { path: String },
    #[error("path {path:?} is inside a .git directory")]
    GitDir { path: String },
    #[error("path {path:?} is not a plain relative path")]
    Unclean { path: String },
    #[error("path {path:?} goes through the symlink {link:?}")]
    ThroughSymlink { path: String, link: String },
    #[error("symlink {path:?} would point outside the repository (target {target:?})")]
    SymlinkEscapes { path: String, target: String },
    #[error("symlink {path:?} would point into .git (target {target:?})")]
    SymlinkIntoGit { path: String, target: String },
    #[error("symlink {path:?}: its target cannot be checked from the patch")]
    SymlinkUnchecked { path: String },
    #[error("path {path:?} would become a submodule, which banger does not apply")]
    Submodule { path: String },
    #[error(
        "path {path:?} has file mode {mode:06o}; banger applies only 100644, 100755 and 120000"
    )]
    Mode { path: String, mode: u32 },
    #[error("resolving the patch's symlinks takes over {limit} steps (a chain of links?)")]
    LinkBudget { limit: usize },
    #[error("git reads the patch differently from banger's check (git names {path:?})")]
    Differential { path: String },
    #[error("line {line} of the patch is longer than {} KiB", .limit >> 10)]
    LineTooLong { line: usize, limit: usize },
    #[error("cannot read the patch")]
    Io(#[from] std::io::Error),
}

pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// One hunk's range header: `@@ -old_start,old_count +new_start,new_count @@`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hunk {
    pub old_start: u64,
    pub old_count: u64,
    pub new_start: u64,
    pub new_count: u64,
}

/// One `diff --git` section.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// Every path the section names, prefixes stripped: both header sides, `---`/`+++`,
    /// rename/copy from/to.
    pub paths: Vec<Vec<u8>>,
    /// The path before (`None`: created).
    pub old_path: Option<Vec<u8>>,
    /// The path after (`None`: deleted).
    pub new_path: Option<Vec<u8>>,
    /// `copy from/to`: the old path stays.
    pub copy: bool,
    pub old_mode: Option<u32>,
    /// From `new mode`, `new file mode` or the `index` line.
    pub new_mode: Option<u32>,
    pub binary: bool,
    pub hunks: Vec<Hunk>,
    /// The text after the change (context and `+` lines), kept while short: what a
    /// symlink will point to.
    pub post_image: Option<Vec<u8>>,
}

/// Reads a whole patch. An empty patch has no sections.
pub fn parse<R: BufRead>(reader: R) -> Result<Vec<FilePatch>, Refusal> {
    let mut lines = Lines {
        reader,
        no: 0,
        peeked: None,
    };
    let mut out = Vec::new();
    while let Some(line) = lines.next()? {
        let Some(names) = line.strip_prefix(b"diff --git ") else {
            return Err(lines.malformed("expected a `diff --git` line"));
        };
        let mut fp = FilePatch::default();
        if let Some((a, b)) = header_names(names) {
            let a = strip(&a, b"a/").ok_or_else(|| lines.malformed("no a/ prefix"))?;
            let b = strip(&b, b"b/").ok_or_else(|| lines.malformed("no b/ prefix"))?;
            fp.paths.extend([a.clone(), b.clone()]);
            (fp.old_path, fp.new_path) = (Some(a), Some(b));
        }
        extended_header(&mut lines, &mut fp)?;
        if fp.old_path.is_none() && fp.new_path.is_none() {
            return Err(lines.malformed("cannot tell which file a section changes"));
        }
        if lines.peek_starts(b"--- ")? {
            text_body(&mut lines, &mut fp)?;
        } else if lines.peek_is(b"GIT binary patch")? {
            lines.next()?;
            fp.binary = true;
            binary_block(&mut lines)?;
            if lines.peek_starts(b"literal ")? || lines.peek_starts(b"delta ")? {
                binary_block(&mut lines)?;
            }
        }
        if !(lines.peek()?.is_none() || lines.peek_starts(b"diff --git ")?) {
            return Err(lines.malformed_next("unexpected text after a file's changes"));
        }
        fp.paths
            .extend(fp.old_path.iter().chain(fp.new_path.iter()).cloned());
        fp.paths.sort();
        fp.paths.dedup();
        out.push(fp);
    }
    Ok(out)
}

fn extended_header<R: BufRead>(lines: &mut Lines<R>, fp: &mut FilePatch) -> Result<(), Refusal> {
    let mut created = false;
    let mut deleted = false;
    loop {
        if lines.peek()?.is_none()
            || lines.peek_starts(b"diff --git ")?
            || lines.peek_starts(b"--- ")?
            || lines.peek_starts(b"@@")?
            || lines.peek_is(b"GIT binary patch")?
        {
            break;
        }
        let Some(line) = lines.next()? else { break };
        let mode = |rest: &[u8]| parse_mode(rest).ok_or_else(|| lines.malformed("bad file mode"));
        if let Some(rest) = line.strip_prefix(b"old mode ") {
            fp.old_mode = Some(mode(rest)?);
        } else if let Some(rest) = line.strip_prefix(b"new mode ") {
            fp.new_mode = Some(mode(rest)?);
        } else if let Some(rest) = line.strip_prefix(b"deleted file mode ") {
            fp.old_mode = Some(mode(rest)?);
            deleted = true;
        } else if let Some(rest) = line.strip_prefix(b"new file mode ") {
            fp.new_mode = Some(mode(rest)?);
            created = true;
        } else if line.starts_with(b"similarity index ")
            || line.starts_with(b"dissimilarity index ")
        {
        } else if let Some(rest) = line
            .strip_prefix(b"rename from ")
            .or(line.strip_prefix(b"copy from "))
        {
            fp.copy = line.starts_with(b"copy");
            let path = name(rest).ok_or_else(|| lines.malformed("bad path"))?;
            fp.paths.push(path.clone());
            fp.old_path = Some(path);
        } else if let Some(rest) = line
            .strip_prefix(b"rename to ")
            .or(line.strip_prefix(b"copy to "))
        {
            let path = name(rest).ok_or_else(|| lines.malformed("bad path"))?;
            fp.paths.push(path.clone());
            fp.new_path = Some(path);
        } else if let Some(rest) = line.strip_prefix(b"index ") {
            // "index <old>..<new>[ <mode>]": the mode is unchanged, so it is the new one.
            if let Some(sp) = rest.iter().position(|b| *b == b' ') {
                let m = mode(&rest[sp + 1..])?;
                fp.old_mode.get_or_insert(m);
                fp.new_mode.get_or_insert(m);
            }
        } else {
            return Err(lines.malformed("unexpected line in a file header"));
        }
    }
    if created {
        fp.old_path = None;
        fp.old_mode = None;
    }
    if deleted {
        fp.new_path = None;
        fp.new_mode = None;
    }
    Ok(())
}

fn text_body<R: BufRead>(lines: &mut Lines<R>, fp: &mut FilePatch) -> Result<(), Refusal> {
    let minus = lines.next()?.unwrap_or_default();
    let plus = lines.next()?.unwrap_or_default();
    let (Some(a), Some(b)) = (minus.strip_prefix(b"--- "), plus.strip_prefix(b"+++ ")) else {
        return Err(lines.malformed("`---` without `+++`"));
    };
    for (side, prefix, line) in [(a, &b"a/"[..], lines.no - 1), (b, &b"b/"[..], lines.no)] {
        let side = side.strip_suffix(b"\t").unwrap_or(side);
        if side == b"/dev/null" {
            continue;
        }
        let path = name(side).and_then(|n| strip(&n, prefix));
        let bad = || Refusal::Malformed {
            line,
            what: "bad path after ---/+++".into(),
        };
        fp.paths.push(path.ok_or_else(bad)?);
    }
    let mut post = Some(Vec::new());
    if !lines.peek_starts(b"@@ ")? {
        return Err(lines.malformed_next("`---`/`+++` without a hunk"));
    }
    while lines.peek_starts(b"@@ ")? {
        let header = lines.next()?.unwrap_or_default();
        let hunk = parse_hunk(&header).ok_or_else(|| lines.malformed("bad hunk header"))?;
        fp.hunks.push(hunk);
        let (mut old, mut new) = (hunk.old_count, hunk.new_count);
        let mut last_in_post = false;
        while old > 0 || new > 0 || lines.peek_starts(b"\\")? {
            let Some(line) = lines.next()? else {
                return Err(lines.malformed("hunk cut short"));
            };
            let (in_old, in_new) = match line.first() {
                None | Some(b' ') => (true, true),
                Some(b'-') => (true, false),
                Some(b'+') => (false, true),
                Some(b'\\') => {
                    if let (true, Some(p)) = (last_in_post, post.as_mut()) {
                        p.pop();
                    }
                    last_in_post = false;
                    continue;
                }
                _ => return Err(lines.malformed("unexpected line in a hunk")),
            };
            if (in_old && old == 0) || (in_new && new == 0) {
                return Err(lines.malformed("hunk longer than its header says"));
            }
            old -= u64::from(in_old);
            new -= u64::from(in_new);
            last_in_post = in_new;
            if in_new {
                if let Some(p) = post.as_mut() {
                    p.extend_from_slice(line.get(1..).unwrap_or_default());
                    p.push(b'\n');
                }
                if post.as_ref().is_some_and(|p| p.len() > MAX_TARGET + 1) {
                    post = None;
                }
            }
        }
    }
    fp.post_image = post;
    Ok(())
}

fn binary_block<R: BufRead>(lines: &mut Lines<R>) -> Result<(), Refusal> {
    let head = lines.next()?.unwrap_or_default();
    let size = head
        .strip_prefix(b"literal ")
        .or(head.strip_prefix(b"delta "));
    if !size.is_some_and(|s| !s.is_empty() && s.iter().all(u8::is_ascii_digit)) {
        return Err(lines.malformed("expected `literal N` or `delta N`"));
    }
    loop {
        match lines.next()? {
            None => return Err(lines.malformed("binary data cut short")),
            Some(l) if l.is_empty() => return Ok(()),
            Some(l) if l[0].is_ascii_alphabetic() => {}
            Some(_) => return Err(lines.malformed("bad binary data line")),
        }
    }
}

fn parse_mode(s: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(s).ok()?;
    if s.len() != 6 {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

fn parse_hunk(line: &[u8]) -> Option<Hunk> {
    let line = std::str::from_utf8(line.strip_prefix(b"@@ -")?).ok()?;
    let (ranges, _) = line.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(u64, u64)> {
        match r.split_once(',') {
            Some((s, c)) => Some((s.parse().ok()?, c.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let ((old_start, old_count), (new_start, new_count)) = (range(old)?, range(new)?);
    Some(Hunk {
        old_start,
        old_count,
        new_start,
        new_count,
    })
}

/// Lines of the patch, without their `\n`, with one line of lookahead.
struct Lines<R> {
    reader: R,
    no: usize,
    peeked: Option<Option<Vec<u8>>>,
}

impl<R: BufRead> Lines<R> {
    fn read(&mut self) -> Result<Option<Vec<u8>>, Refusal> {
        let mut buf = Vec::new();
        let mut limited = self.reader.by_ref().take(MAX_PATCH_LINE as u64 + 1);
        if limited.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        if buf.len() > MAX_PATCH_LINE && buf.last() != Some(&b'\n') {
            return Err(Refusal::LineTooLong {
                line: self.no + 1,
                limit: MAX_PATCH_LINE,
            });
        }
        if buf.pop() != Some(b'\n') {
            // A last line without a newline: git would not have written it.
            return Err(Refusal::Malformed {
                line: self.no + 1,
                what: "no newline at the end".into(),
            });
        }
        Ok(Some(buf))
    }

    fn next(&mut self) -> Result<Option<Vec<u8>>, Refusal> {
        let line = match self.peeked.take() {
            Some(line) => line,
            None => self.read()?,
        };
        self.no += usize::from(line.is_some());
        Ok(line)
    }

    fn peek(&mut self) -> Result<Option<&[u8]>, Refusal> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read()?);
        }
        Ok(self.peeked.as_ref().and_then(|l| l.as_deref()))
    }

    fn peek_starts(&mut self, prefix: &[u8]) -> Result<bool, Refusal> {
        Ok(self.peek()?.is_some_and(|l| l.starts_with(prefix)))
    }

    fn peek_is(&mut self, text: &[u8]) -> Result<bool, Refusal> {
        Ok(self.peek()? == Some(text))
    }

    /// About the line read last.
    fn malformed(&self, what: &str) -> Refusal {
        Refusal::Malformed {
            line: self.no,
            what: what.into(),
        }
    }

    /// About the line not read yet.
    fn malformed_next(&self, what: &str) -> Refusal {
        Refusal::Malformed {
            line: self.no + 1,
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse_str(patch: &str) -> Result<Vec<FilePatch>, Refusal> {
        parse(patch.as_bytes())
    }

    #[test]
    fn a_git_patch_yields_paths_modes_and_symlink_targets() {
        let patch = "\
diff --git a/old name.txt b/new name.txt
similarity index 90%
rename from old name.txt
rename to new name.txt
index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100755
--- a/old name.txt\t
+++ b/new name.txt\t
@@ -1,2 +1,2 @@
 keep
-old
+new
diff --git a/link b/link
new file mode 120000
index 0000000000000000000000000000000000000000..3333333333333333333333333333333333333333
--- /dev/null
+++ b/link
@@ -0,0 +1 @@
+sub/target
\\ No newline at end of file
diff --git \"a/t\\303\\251st\\tx\" \"b/t\\303\\251st\\tx\"
deleted file mode 100644
index 4444444444444444444444444444444444444444..0000000000000000000000000000000000000000
GIT binary patch
literal 0
HcmV?d00001

literal 5
McmZQzWMX9i00aO80RR91

";

        let sections = parse_str(patch).unwrap();

        assert_eq!(sections.len(), 3);
        assert_eq!(sections[0].old_path.as_deref(), Some(&b"old name.txt"[..]));
        assert_eq!(sections[0].new_path.as_deref(), Some(&b"new name.txt"[..]));
        assert_eq!(sections[0].new_mode, Some(0o100755));
        assert_eq!(sections[1].old_path, None);
        assert_eq!(sections[1].new_mode, Some(SYMLINK_MODE));
        assert_eq!(sections[1].post_image.as_deref(), Some(&b"sub/target"[..]));
        assert_eq!(sections[2].paths, vec!["t\u{e9}st\tx".as_bytes().to_vec()]);
        assert_eq!(sections[2].new_path, None);
        assert!(sections[2].binary);
    }

    #[test]
    fn an_empty_patch_has_no_sections() {
        assert_eq!(parse_str("").unwrap(), vec![]);
    }

    #[test]
    fn text_before_the_first_section_is_refused() {
        let patch = "\
--- a/x
+++ b/x
@@ -1 +1 @@
-a
+b
";
        let err = parse_str(patch).unwrap_err();

        assert_eq!(
            err.to_string(),
            "line 1 of the patch: expected a `diff --git` line"
        );
    }

    #[test]
    fn a_plain_diff_hidden_after_a_hunk_is_refused() {
        let patch = "\
diff --git a/x b/x
--- a/x
+++ b/x
@@ -1 +1 @@
-a
+b
--- a/../../etc/passwd
+++ b/../../etc/passwd
@@ -1 +1 @@
-root
+evil
";
        let err = parse_str(patch).unwrap_err();

        assert_eq!(
            err.to_string(),
            "line 7 of the patch: unexpected text after a file's changes"
        );
    }

    #[test]
    fn a_hunk_longer_than_its_header_is_refused() {
        let patch = "\
diff --git a/x b/x
--- a/x
+++ b/x
@@ -1 +1 @@
-a
+b
+c
";
        assert!(matches!(
            parse_str(patch),
            Err(Refusal::Malformed { line: 7, .. })
        ));
    }

    #[test]
    fn names_without_git_prefixes_are_refused() {
        let patch = "\
diff --git a/x b/x
--- /etc/passwd
+++ b/x
@@ -1 +1 @@
-a
+b
";
        assert!(matches!(
            parse_str(patch),
            Err(Refusal::Malformed { line: 2, .. })
        ));
    }
}
