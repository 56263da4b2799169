//! Each key's value type and its validation. Every value is read as any
//! TOML scalar first, so each key can say in a user's words what it
//! wanted and what it got, instead of serde's "expected i64".

use super::*;

pub(super) struct Port(pub(super) u16);

pub(super) struct Ip(pub(super) IpAddr);

pub(super) struct Dur(pub(super) Duration);

pub(super) struct Positive(pub(super) Duration);

pub(super) struct AtLeastOne(pub(super) usize);

pub(super) struct Backlog(pub(super) u16);

pub(super) struct SaveDirPath(pub(super) PathBuf);

pub(super) struct Size(pub(super) u64);

pub(super) struct Count(pub(super) u32);

pub(super) struct OutputFormat(pub(super) Format);

impl<'de> Deserialize<'de> for OutputFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Value::deserialize(d)?
            .text("must be \"plain\" or \"json\"")
            .map_err(de::Error::custom)?;
        Format::parse(&s)
            .map(OutputFormat)
            .map_err(de::Error::custom)
    }
}

pub(super) struct Count64(pub(super) u64);

pub(super) struct Prefix(pub(super) u8);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 0, 1_000_000, "a number from 0 (no cap) to 1000000").map(|n| Count(n as u32))
    }
}

impl<'de> Deserialize<'de> for Count64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 0, i64::MAX, "bytes per second, 0 (off) or more").map(|n| Count64(n as u64))
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 128, "a prefix length from 1 to 128").map(|n| Prefix(n as u8))
    }
}

/// `min_free_space`: bytes, or a percentage of the file system's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    Bytes(u64),
    Percent(u8),
}

impl fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeSpace::Bytes(b) => write!(f, "{b}"),
            FreeSpace::Percent(p) => write!(f, "{p}%"),
        }
    }
}

pub(super) const SIZE_HINT: &str = "write bytes as a number, or a string with a unit: \"0\", \"512KiB\", \"100MiB\", \"2GiB\", \"1TiB\"";

pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let per: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("{} is not a size ({SIZE_HINT})", quote(s))),
    };
    if num.is_empty() {
        return Err(format!("{} is not a size ({SIZE_HINT})", quote(s)));
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| format!("{} is too large", quote(s)))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) => u64::try_from(n)
                .map(Size)
                .map_err(|_| de::Error::custom(format!("{n} is negative ({SIZE_HINT})"))),
            Value::Text(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "must be a size ({SIZE_HINT}), not {}",
                other.describe()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "or a percentage of the file system, \"5%\" (0% to 99%)";
        match Value::deserialize(d)? {
            Value::Int(n) => u64::try_from(n)
                .map(FreeSpace::Bytes)
                .map_err(|_| de::Error::custom(format!("{n} is negative ({SIZE_HINT})"))),
            other @ (Value::Bool(_) | Value::Float(_)) => Err(de::Error::custom(format!(
                "must be a size ({SIZE_HINT}), {hint}, not {}",
                other.describe()
            ))),
            Value::Text(s) => match s.strip_suffix('%') {
                Some(p) if (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(FreeSpace::Percent).map_err(de::Error::custom)
                }
                Some(_) => Err(de::Error::custom(format!(
                    "{} is not a percentage ({hint})",
                    quote(&s)
                ))),
                None => parse_size(&s)
                    .map(FreeSpace::Bytes)
                    .map_err(|e| de::Error::custom(format!("{e}, {hint}"))),
            },
        }
    }
}

impl<'de> Deserialize<'de> for SaveDirPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Value::deserialize(d)?
            .text("must be a directory path in quotes")
            .map_err(de::Error::custom)?;
        if s.is_empty() || s.contains('\0') {
            return Err(de::Error::custom(
                "save_dir must be a non-empty directory path",
            ));
        }
        Ok(SaveDirPath(PathBuf::from(s)))
    }
}

/// Any single TOML value, so that each key can say in a user's words what
/// it expected and what it got, instead of serde's "expected i64".
pub(super) enum Value {
    Int(i64),
    Text(String),
    Bool(bool),
    Float(f64),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (a number, a string or true/false)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    /// What the file holds, for messages.
    fn describe(&self) -> String {
        match self {
            Value::Int(n) => format!("the number {n}"),
            Value::Text(s) => format!("the string {}", quote(s)),
            Value::Bool(b) => format!("{b}"),
            Value::Float(x) => format!("the number {x}"),
        }
    }

    /// A whole number in `lo..=hi`; `what` says what the key is.
    fn int_in(self, lo: i64, hi: i64, what: &str) -> Result<i64, String> {
        match self {
            Value::Int(n) if (lo..=hi).contains(&n) => Ok(n),
            Value::Int(n) => Err(format!("{n} is out of range: {what}")),
            Value::Text(s) if s.parse::<i64>().is_ok() => Err(format!(
                "must be {what}, written without quotes (not the string {})",
                quote(&s)
            )),
            other => Err(format!("must be {what}, not {}", other.describe())),
        }
    }

    /// A string; `hint` says what to write instead of anything else.
    fn text(self, hint: &str) -> Result<String, String> {
        match self {
            Value::Text(s) => Ok(s),
            other => Err(format!("{hint}, not {}", other.describe())),
        }
    }
}

pub(super) fn int_in<'de, D: Deserializer<'de>>(
    d: D,
    lo: i64,
    hi: i64,
    what: &str,
) -> Result<i64, D::Error> {
    Value::deserialize(d)?
        .int_in(lo, hi, what)
        .map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 65535, "a port number from 1 to 65535").map(|n| Port(n as u16))
    }
}

impl<'de> Deserialize<'de> for Backlog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 65535, "a number from 1 to 65535").map(|n| Backlog(n as u16))
    }
}

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        int_in(d, 1, 1_000_000, "a number from 1 to 1000000").map(|n| AtLeastOne(n as usize))
    }
}

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "write an IPv4 or IPv6 literal such as \"0.0.0.0\", \"127.0.0.1\" or \"::\"; host names are not accepted";
        let s = Value::deserialize(d)?
            .text(&format!("must be an IP address in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        parse_ip(&s).map(Ip).map_err(de::Error::custom)
    }
}

/// An IPv4 or IPv6 literal (the `bind` key and `--bind`).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{} is not an IP address (write an IPv4 or IPv6 literal such as \"0.0.0.0\", \"127.0.0.1\" or \"::\"; host names are not accepted)",
            quote(s)
        )
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match Value::deserialize(d)? {
            Value::Int(n) => {
                return Err(de::Error::custom(format!(
                    "durations need a unit, e.g. \"{n}s\" or \"{n}ms\", not the bare number {n}"
                )));
            }
            other => other
                .text("must be a duration in quotes, e.g. \"10s\"")
                .map_err(de::Error::custom)?,
        };
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Dur(dur) = Dur::deserialize(d)?;
        if dur.is_zero() {
            return Err(de::Error::custom(
                "the timeout must be greater than zero (e.g. \"10s\")",
            ));
        }
        Ok(Positive(dur))
    }
}

/// `^[0-9]+(ms|s|m|h)$`: a whole number and a unit, nothing else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{} is not a duration (write a whole number with a unit: \"500ms\", \"10s\", \"2m\", \"1h\")",
            quote(s)
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per)
        .filter(|&ms| ms <= 365 * 24 * 3_600_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{} is too long (at most a year)", quote(s)))
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "use \"auto\", \"syslog\" or \"stderr\"";
        let s = Value::deserialize(d)?
            .text(&format!("must be a log target in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        match s.as_str() {
            "auto" => Ok(Target::Auto),
            "syslog" => Ok(Target::Syslog),
            "stderr" => Ok(Target::Stderr),
            _ => Err(de::Error::custom(format!(
                "{} is not a log target ({hint})",
                quote(&s)
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hint = "use \"error\", \"warning\", \"info\" or \"debug\"";
        let s = Value::deserialize(d)?
            .text(&format!("must be a log level in quotes ({hint})"))
            .map_err(de::Error::custom)?;
        match s.as_str() {
            "error" => Ok(Level::Err),
            // What syslog(3) and most people call it.
            "warning" | "warn" => Ok(Level::Warning),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(de::Error::custom(format!(
                "{} is not a log level ({hint})",
                quote(&s)
            ))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Auto => "auto",
            Target::Syslog => "syslog",
            Target::Stderr => "stderr",
        })
    }
}
