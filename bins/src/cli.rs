//! Command-line value parsers shared by the binaries: durations (`500ms`,
//! `30s`, `5m`, `1h`) and byte sizes (`4096`, `64KiB`, `1MiB`).

use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, Parser};

/// Parses the command line; on a bad flag or value prints the error and the
/// usage on stderr and exits with status 2 (`--help` and `--version` print
/// on stdout and exit 0).
pub fn parse_args<T: Parser>() -> T {
    parse_args_and_matches::<T>().0
}

/// [`parse_args`], with the matches the flags were read from (which flags
/// were given, which are defaults), for a validation step that needs them.
pub fn parse_args_and_matches<T: Parser>() -> (T, ArgMatches) {
    let parsed = T::command()
        .try_get_matches()
        .and_then(|matches| T::from_arg_matches(&matches).map(|args| (args, matches)));
    match parsed {
        Ok(parsed) => parsed,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            let usage = T::command().render_usage();
            let text = e.render().to_string();
            // clap ends most errors with a hint to --help; put the usage before it.
            eprintln!("{}", text.trim_end());
            if !text.contains("Usage:") {
                eprintln!("\n{usage}");
            }
            std::process::exit(2);
        }
    }
}

/// A usage error found after parsing (a flag given to a handler it does
/// not apply to, flags that cannot go together): prints `error: why` and
/// the usage on stderr and exits with status 2, like a bad flag.
pub fn usage_error<T: CommandFactory>(why: &str) -> ! {
    T::command().error(ErrorKind::ArgumentConflict, why).exit()
}

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("'{s}' is not a duration: use a whole number and a unit, e.g. 500ms, 30s, 5m")
    })?;
    let d = match unit {
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("'{s}' needs a unit: us, ms, s, m or h (e.g. {n}s)")),
        _ => return Err(format!("'{s}': unknown unit '{unit}', use us, ms, s, m or h")),
    };
    Ok(d)
}

/// [`parse_duration`], refusing zero (a timeout or period of 0 would fire
/// at once, every time).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("'{s}' must be more than 0 (e.g. 500ms, 30s)"));
    }
    Ok(d)
}

/// The core's frame timeout: a partial line's quiet wait must be shorter.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// [`parse_positive_duration`], shorter than the 30s frame timeout
/// (`--accept-unterminated`: a partial line is dropped at the frame timeout,
/// so a longer wait would never take it).
pub fn parse_unterminated_wait(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    if d >= FRAME_TIMEOUT {
        return Err(format!(
            "'{s}' is not shorter than the 30s frame timeout (a partial line is dropped then)"
        ));
    }
    Ok(d)
}

/// [`parse_duration`], at most 10ms (`--spin`).
pub fn parse_spin(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_millis(10) {
        return Err(format!("'{s}' is more than the 10ms a worker may spin"));
    }
    Ok(d)
}

/// A whole number of at least 1 (a count of connections, say).
pub fn parse_count(s: &str) -> Result<usize, String> {
    count_in(s, 1, usize::MAX)
}

/// A number of worker threads: 1 to 1024.
pub fn parse_workers(s: &str) -> Result<usize, String> {
    count_in(s, 1, 1024)
}

fn count_in(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("'{s}' is not a whole number"))?;
    match (n < min, n > max) {
        (true, _) if max == usize::MAX => Err(format!("'{s}' must be at least {min}")),
        (true, _) | (_, true) => Err(format!("'{s}' must be {min} to {max}")),
        _ => Ok(n),
    }
}

/// [`parse_size`], refusing zero (a frame or budget of 0 bytes refuses
/// everything).
pub fn parse_positive_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n == 0 {
        return Err(format!("'{s}' must be at least 1 byte"));
    }
    Ok(n)
}

/// Parses a byte size: a whole number, optionally followed by `B`, `KiB`,
/// `MiB` or `GiB` (`K`, `M`, `G` are taken as the same binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use a whole number of bytes, e.g. 4096 or 64KiB"))?;
    let mult: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("'{s}': unknown unit '{unit}', use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// A Unix socket file's mode in octal, as `chmod` takes it (`660`, `0660`
/// or `0o660`): at most 777.
pub fn parse_unix_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let bad = || format!("'{s}' is not a mode in octal, 0 to 777 (e.g. 660)");
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("50µs"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("3x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn zero_and_out_of_range_values_are_refused() {
        assert_eq!(parse_positive_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_positive_duration("0s").unwrap_err().contains("must be more than 0"));
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_spin("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_spin("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_spin("11ms").unwrap_err().contains("10ms"));
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count("0").unwrap_err(), "'0' must be at least 1");
        assert!(parse_count("-1").unwrap_err().contains("not a whole number"));
        assert_eq!(parse_workers("1024"), Ok(1024));
        assert_eq!(parse_workers("0").unwrap_err(), "'0' must be 1 to 1024");
        assert_eq!(parse_workers("1025").unwrap_err(), "'1025' must be 1 to 1024");
        assert_eq!(parse_positive_size("1"), Ok(1));
        assert_eq!(parse_positive_size("0KiB").unwrap_err(), "'0KiB' must be at least 1 byte");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn unix_modes_are_octal_up_to_777() {
        assert_eq!(parse_unix_mode("660"), Ok(0o660));
        assert_eq!(parse_unix_mode("0660"), Ok(0o660));
        assert_eq!(parse_unix_mode("0o600"), Ok(0o600));
        assert_eq!(parse_unix_mode("0"), Ok(0));
        for bad in ["", "8", "1777", "rw-rw----", "0x1ff", "-1", "66 0"] {
            assert!(parse_unix_mode(bad).unwrap_err().contains("octal"), "{bad:?}");
        }
    }
}
