//! Human durations (`"90s"`, `"1h30m"`) and sizes (`"10MB"`, `"512KiB"`), read at compile time.

/// The units of a duration, longest name first so `ms` is not read as `m`.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// What to write instead of a duration that does not read.
pub const DURATION_HELP: &str = "write a number and a unit, e.g. \"500ms\", \"90s\", \"10m\", \
     \"1h\", \"7d\" (units: ms, s, m, h, d; parts add up: \"1h30m\")";

/// What to write instead of a size that does not read.
pub const SIZE_HELP: &str = "write a number of bytes, e.g. 4096, or a number and a unit, e.g. \
     \"512KB\", \"10MB\", \"1GiB\" (KB, MB, GB, TB are powers of 1000 bytes; KiB, MiB, GiB, TiB \
     powers of 1024; B is one byte)";

/// Reads a duration such as `"90s"` or `"1h30m"` into milliseconds: one or more parts, each a
/// whole number and a unit, optionally separated by spaces.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, millis) = DURATION_UNITS.iter().find(|(unit, _)| {
            rest.starts_with(unit)
                && !rest[unit.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
        })?;
        rest = rest[unit.len()..].trim_start();
        total = total.checked_add(number.checked_mul(*millis)?)?;
    }
    Some(total)
}

/// Reads a size such as `"10MB"`, `"512KiB"` or `"4096"` into bytes. Units are read without
/// regard to case.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_milliseconds() {
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("90s"), Some(90_000));
        assert_eq!(parse_duration("10m"), Some(600_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("1h 30m 5s"), Some(5_405_000));
        assert_eq!(parse_duration("0s"), Some(0));
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for bad in [
            "",
            " ",
            "90",
            "s",
            "90x",
            "1.5h",
            "-1s",
            "1hour",
            "5 s",
            "1h30",
            "99999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_as_bytes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("100B"), Some(100));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("10 mb"), Some(10_000_000));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2TB"), Some(2_000_000_000_000));
    }

    #[test]
    fn sizes_without_a_known_unit_are_refused() {
        for bad in ["", "MB", "10XB", "1.5MB", "-1", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
