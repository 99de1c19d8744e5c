//! Values as users write them on the command line and in config files.
use std::time::Duration;

/// A duration as Prometheus writes them: a number and ms, s, m or h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err =
        || format!("{s:?} is not a duration: use a number and ms, s, m or h, for example 10s");
    let i = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (n, unit) = s.split_at(i);
    let n: u64 = n.parse().map_err(|_| err())?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(err()),
    };
    if ms == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(Duration::from_millis(ms))
}

/// A size in bytes: a number with an optional binary suffix (KiB, MiB,
/// GiB), for example 16MiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let err = || {
        format!("{s:?} is not a size: use a number of bytes, or one with KiB, MiB or GiB, for example 16MiB")
    };
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(i);
    let n: u64 = n.parse().map_err(|_| err())?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(err()),
    };
    let v = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if v == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(v)
}

/// `bytes` the way [`parse_bytes`] reads it back (the largest exact unit).
pub fn format_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written_and_bad_ones_are_refused() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "16MB", "MiB", "-1", "99999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
        for v in [16 << 20, 1 << 30, 3 << 10, 1000] {
            assert_eq!(parse_bytes(&format_bytes(v)), Ok(v));
        }
    }
}
