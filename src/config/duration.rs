//! Serde support for human-readable durations: `"250ms"`, `"10s"`, `"1m"`, `"2h"`, `"1d"`,
//! `"1w"` (also `"us"` and `"ns"`), or a plain non-negative integer of seconds.
//!
//! Use as `#[serde(with = "duration")]`, or `#[serde(with = "duration::option")]` for an
//! `Option<Duration>`. Formatting picks the largest unit that divides the value exactly, so
//! `format(parse(s))` gives back a canonical spelling of the same duration.
use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Units from largest to smallest, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("w", 7 * 86_400 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The longest duration accepted, 100 years (`"36500d"`): longer ones are surely mistakes, and
/// adding them to a clock reading would overflow it.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

/// `d`, or an error naming `MAX` when `d` is longer.
fn within_max(d: Duration, s: &dyn fmt::Display) -> Result<Duration, String> {
    if d > MAX {
        return Err(format!(
            "invalid duration {s}: too large (at most {}, 100 years)",
            format(MAX)
        ));
    }
    Ok(d)
}

/// Parses `"<integer><unit>"` or a bare integer (seconds). Surrounding blanks and a blank
/// between number and unit are allowed.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected a whole number followed by a unit \
             (ms, s, m, h, d, w), e.g. \"10s\" or \"500ms\""
        ));
    }
    let n: u128 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
    let unit_nanos = if unit.is_empty() {
        1_000_000_000
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, nanos)) => *nanos,
            None => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} \
                     (expected ns, us, ms, s, m, h, d or w)"
                ))
            }
        }
    };
    let total = n
        .checked_mul(unit_nanos)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    within_max(Duration::new(secs, nanos), &format_args!("{s:?}"))
}

/// Formats with the largest unit that represents `d` exactly: `10s`, `1500ms`, `2h`.
pub fn format(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    for (name, nanos) in UNITS {
        if total.is_multiple_of(*nanos) {
            return format!("{}{name}", total / nanos);
        }
    }
    // Unreachable: the last unit is 1ns, which divides everything.
    format!("{total}ns")
}

pub fn serialize<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    de.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"10s\" or \"500ms\", or an integer of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        within_max(Duration::from_secs(v), &v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        let v = u64::try_from(v)
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))?;
        self.visit_u64(v)
    }
}

/// The same format for `Option<Duration>`; pair with `skip_serializing_if =
/// "Option::is_none"` and `default`, since TOML has no null.
pub mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, ser),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(de).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: `"99999999999d"` (273 million years) was accepted, and adding it to a clock
    /// reading would panic. Durations over 100 years are parse errors that name the key.
    #[test]
    fn out_of_range_durations_are_errors_naming_the_key() {
        assert!(parse("36500d").is_ok());
        assert!(parse("36501d").is_err());
        for (toml, key) in [
            (
                "[mqtt]\nconnect_timeout = \"99999999999d\"\n",
                "connect_timeout",
            ),
            (
                "[mqtt]\npersistent_client_expiration = \"99999999999d\"\n",
                "persistent_client_expiration",
            ),
            ("[sys]\ninterval = 9999999999999\n", "interval"),
            (
                "[limits]\nslow_consumer_grace = \"5300w\"\n",
                "slow_consumer_grace",
            ),
        ] {
            let msg = match crate::config::Config::from_toml_str(toml) {
                Err(crate::config::ConfigError::Parse(msg)) => msg,
                other => panic!("expected a parse error for {toml:?}, got {other:?}"),
            };
            assert!(
                msg.contains(key) && msg.contains("too large"),
                "{toml}: {msg}"
            );
        }
    }
}
