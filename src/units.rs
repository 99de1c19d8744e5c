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
