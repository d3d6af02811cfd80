//! Quoting for the three languages an SSH invocation passes through: the remote shell
//! (ssh joins its command arguments with spaces and hands the string to `$SHELL -c`),
//! ssh_config values, and `%` tokens.

/// Words a shell reads as syntax in command position.
const RESERVED: [&str; 16] = [
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "in", "function", "select", "time",
];

/// `arg` as one word of a POSIX shell: unchanged when it holds only characters no
/// shell treats specially, otherwise single-quoted (a `'` becomes `'\''`). `=` is
/// quoted too, so a first word never reads as a variable assignment.
pub fn sh_word(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) && !RESERVED.contains(&arg) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// An argv as one command line for the remote shell, so that it reaches the guest
/// exactly as typed (`sh -c 'exit 42'` stays three words).
pub fn remote_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| sh_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Doubles `%` so ssh does not expand it as a token (`%h`, `%p`, …).
pub fn percent(s: &str) -> String {
    s.replace('%', "%%")
}

/// A value for an ssh_config line (or `-o Key=value`): `%` escaped, and double-quoted
/// when it holds blanks or quotes.
pub fn config_value(s: &str) -> String {
    let s = percent(s);
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "\"'\\#=".contains(c)) {
        format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_exit_42_case_stays_three_words() {
        assert_eq!(
            remote_command(&argv(&["sh", "-c", "exit 42"])),
            "sh -c 'exit 42'"
        );
    }

    #[test]
    fn quotes_dollars_globs_and_empty_args_survive() {
        assert_eq!(
            remote_command(&argv(&["printf", "[%s]", "c'd", "$HOME", "*", ""])),
            r#"printf '[%s]' 'c'\''d' '$HOME' '*' ''"#
        );
    }

    #[test]
    fn a_real_shell_gets_back_the_exact_argv() {
        // What sshd does with the string: `sh -c "<string>"`.
        let words = argv(&[
            "printf",
            "<%s>",
            "a b",
            "c'd",
            "$HOME",
            "`id`",
            "x\ny",
            "",
            "ünï ☃",
            "-n",
            "\\",
            "!",
            "A=1",
        ]);

        let out = Command::new("sh")
            .arg("-c")
            .arg(remote_command(&words))
            .output()
            .unwrap();

        let want: String = words[2..].iter().map(|w| format!("<{w}>")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }

    #[test]
    fn assignments_and_reserved_words_are_not_syntax() {
        assert_eq!(remote_command(&argv(&["A=1", "if"])), "'A=1' 'if'");
    }

    #[test]
    fn config_values_with_blanks_or_tokens_are_quoted() {
        assert_eq!(config_value("/root/.ssh/id"), "/root/.ssh/id");
        assert_eq!(config_value("/a b/k%h"), r#""/a b/k%%h""#);
        assert_eq!(config_value(r#"q"\"#), r#""q\"\\""#);
    }
}
