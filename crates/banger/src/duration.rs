//! Durations as users type them: `90` (seconds), `90s`, `5m`, `2h`, `1d`.

use std::time::Duration;

/// Parses `N` or `N` followed by one unit (`s`, `m`, `h`, `d`); a bare number is
/// seconds. Zero is refused: no timeout or lifetime is meant by it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid(text)),
    };
    let n: u64 = digits.parse().map_err(|_| invalid(text))?;
    match n.checked_mul(scale) {
        Some(0) => Err(format!(
            "duration {text:?} is zero (give a positive one, e.g. 30s or 5m; leave the flag \
             out for none)"
        )),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("duration {text:?} is too long")),
    }
}

fn invalid(text: &str) -> String {
    format!("invalid duration {text:?} (expected e.g. 30, 30s, 5m, 2h or 1d)")
}

/// The shortest way [`parse`] reads back: `300s` prints as `5m`, `90s` as `90s`.
pub fn display(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn units_scale_to_seconds() {
        let got: Vec<u64> = ["2s", "5m", "1h", "1d", " 7m "]
            .iter()
            .map(|t| parse(t).unwrap().as_secs())
            .collect();

        assert_eq!(got, [2, 300, 3600, 86_400, 420]);
    }

    #[test]
    fn garbage_zero_and_overflow_are_refused() {
        for bad in [
            "",
            "s",
            "5x",
            "1.5h",
            "-3",
            "5 m",
            "0",
            "0h",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("5x").unwrap_err().contains("expected e.g."));
        assert!(parse("0").unwrap_err().contains("leave the flag out"));
    }

    #[test]
    fn display_reads_back_in_the_largest_whole_unit() {
        let shown: Vec<String> = [2, 90, 300, 7200, 86_400]
            .map(|s| display(Duration::from_secs(s)))
            .to_vec();

        assert_eq!(shown, ["2s", "90s", "5m", "2h", "1d"]);
        assert_eq!(
            parse(&display(Duration::from_secs(5400)))
                .unwrap()
                .as_secs(),
            5400
        );
    }
}
