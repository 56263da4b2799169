//! Sizes and rates for people: binary units (KiB, MiB, ...), as `ls -h`
//! and curl show them, in the logs of both binaries.

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// `1536` -> `1.50 KiB`; below 1 KiB the exact count.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// Bytes over seconds as a rate, `- B/s` when no time passed.
pub fn rate(n: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "- B/s".to_string();
    }
    let per = (n as f64 / secs).round() as u64;
    format!("{}/s", bytes(per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 << 30), "5.00 GiB");
        assert_eq!(rate(2 << 20, 2.0), "1.00 MiB/s");
        assert_eq!(rate(1, 0.0), "- B/s");
    }
}
