//! Paths as git writes them in patch headers: raw, or C-quoted when they hold
//! special bytes (`"a/t\\303\\251st\\tx"`).

/// `name` without its `a/` or `b/` prefix; `None` if it lacks it.
pub fn strip(name: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    name.strip_prefix(prefix).map(<[u8]>::to_vec)
}

/// A path as written in a header: C-quoted or raw.
pub fn name(s: &[u8]) -> Option<Vec<u8>> {
    if s.first() == Some(&b'"') {
        match unquote(s)? {
            (n, []) => Some(n),
            _ => None,
        }
    } else {
        Some(s.to_vec())
    }
}

/// The two names of `diff --git <a> <b>`; `None` when they cannot be told apart
/// (unquoted names with spaces that differ: the rename lines then name them).
pub fn header_names(s: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if s.first() == Some(&b'"') {
        let (a, rest) = unquote(s)?;
        return Some((a, name(rest.strip_prefix(b" ")?)?));
    }
    if s.last() == Some(&b'"') {
        for (i, _) in s.windows(2).enumerate().filter(|(_, w)| w == b" \"") {
            if let Some((b, rest)) = unquote(&s[i + 1..]) {
                if rest.is_empty() {
                    return Some((s[..i].to_vec(), b));
                }
            }
        }
        return None;
    }
    // "a/N b/N": equal names split in the middle.
    let n = s.len().checked_sub(5)? / 2;
    (s.len() == n * 2 + 5
        && s.starts_with(b"a/")
        && &s[2 + n..5 + n] == b" b/"
        && s[2..2 + n] == s[5 + n..])
        .then(|| (s[..2 + n].to_vec(), s[3 + n..].to_vec()))
}

/// Undoes git's C-style quoting; returns the name and what follows the closing quote.
fn unquote(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some((out, &s[i + 1..])),
            b'\\' => {
                let c = *s.get(i + 1)?;
                i += 2;
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    b'"' | b'\\' => c,
                    b'0'..=b'3' => {
                        let digits = s.get(i..i + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        i += 2;
                        (c - b'0') * 64 + (digits[0] - b'0') * 8 + (digits[1] - b'0')
                    }
                    _ => return None,
                });
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoting_follows_git() {
        assert_eq!(
            unquote(b"\"a\\\\b\\\"c\\001\\n\" rest"),
            Some((b"a\\b\"c\x01\n".to_vec(), &b" rest"[..]))
        );
        assert_eq!(unquote(b"\"unterminated"), None);
        assert_eq!(unquote(b"\"bad \\q\""), None);
    }

    #[test]
    fn header_names_split_equal_unquoted_names_with_spaces() {
        assert_eq!(
            header_names(b"a/x y b/x y"),
            Some((b"a/x y".to_vec(), b"b/x y".to_vec()))
        );
        assert_eq!(header_names(b"a/x b/y z"), None);
        assert_eq!(
            header_names(b"a/plain \"b/t\\tab\""),
            Some((b"a/plain".to_vec(), b"b/t\tab".to_vec()))
        );
    }
}
