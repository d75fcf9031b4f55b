//! Topic name and topic filter rules (MQTT 5.0 section 4.7, shared subscriptions section 4.8.2).
//!
//! Owns: validation of topic names and filters, single filter/topic matching, and splitting a
//! `$share/{group}/{filter}` shared subscription into its parts.
//!
//! Invariants:
//! - Every function here is pure and allocation-free; [`matches()`] only walks the two strings.
//! - Levels are separated by `/`; an empty string between separators is a level of its own, so
//!   `a//b` has three levels and `/` has two empty ones.
//! - [`matches()`] knows nothing about shared subscriptions: callers strip `$share/{group}/` first
//!   (see [`parse_shared`]).

/// Longest topic name or filter: a UTF-8 string's length prefix is 16 bits (spec 1.5.4).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that marks a shared subscription [MQTT-4.8.2-1].
const SHARE_PREFIX: &str = "$share/";

/// Whether `s` may be used as the topic of a PUBLISH (or a Will). Rejecting here keeps wildcard
/// characters out of the routing and retained stores, where they would mean something else.
///
/// A topic name is non-empty [MQTT-4.7.3-1], has no wildcard characters [MQTT-3.3.2-2], no U+0000
/// [MQTT-1.5.4-2] and fits in a 16-bit length prefix.
pub fn valid_topic_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TOPIC_LEN && !s.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Whether `s` may appear in SUBSCRIBE or UNSUBSCRIBE, including the shared form
/// `$share/{group}/{filter}`. The router stores only filters that pass this check, so it never
/// has to cope with a `#` in the middle of a filter.
///
/// Rules: non-empty [MQTT-4.7.3-1]; `#` only alone and as the last level [MQTT-4.7.1-2]; `+`
/// alone in its level [MQTT-4.7.1-3]; a shared subscription needs a non-empty share name without
/// `/`, `+` or `#` followed by a valid filter [MQTT-4.8.2-1] [MQTT-4.8.2-2]. A first level of
/// exactly `$share` without both parts (`$share`, `$share/g`, `$share/g/`) is invalid.
pub fn valid_topic_filter(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_TOPIC_LEN || s.as_bytes().contains(&0) {
        return false;
    }
    if let Some(rest) = s.strip_prefix("$share") {
        if rest.is_empty() {
            return false;
        }
        if let Some(rest) = rest.strip_prefix('/') {
            return match rest.split_once('/') {
                Some((group, filter)) => valid_share_name(group) && valid_plain_filter(filter),
                None => false,
            };
        }
        // `$shared/...`, `$sharex`: an ordinary first level that merely starts with "$share".
    }
    valid_plain_filter(s)
}

/// A share name is non-empty and holds none of `/`, `+`, `#` [MQTT-4.8.2-2].
fn valid_share_name(group: &str) -> bool {
    !group.is_empty() && !group.bytes().any(|b| matches!(b, b'/' | b'+' | b'#'))
}

/// Wildcard placement rules for a filter that is not (or no longer) in the `$share` form.
fn valid_plain_filter(f: &str) -> bool {
    if f.is_empty() {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-2]: alone in its level and the last level.
            if level != "#" || levels.peek().is_some() {
                return false;
            }
        } else if level.contains('+') && level != "+" {
            // [MQTT-4.7.1-3]: `+` occupies an entire level.
            return false;
        }
    }
    true
}

/// Whether the plain (non-shared) `filter` matches the topic name `topic`.
///
/// `+` matches exactly one level (which may be empty), `#` matches its own level and everything
/// below, including the parent (`a/#` matches `a`) [MQTT-4.7.1-2]. A topic starting with `$` is
/// not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1]. Both arguments are
/// assumed valid; invalid input gives a meaningless but panic-free answer.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        // A first filter level that starts with a wildcard character is a wildcard level in a
        // valid filter [MQTT-4.7.1-2][MQTT-4.7.1-3].
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Splits `$share/{group}/{filter}` into `(group, filter)`; `None` for anything else, including
/// an empty group or an empty filter. It only looks at the shape: use [`valid_topic_filter`] to
/// check the parts.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let (group, f) = rest.split_once('/')?;
    if group.is_empty() || f.is_empty() {
        return None;
    }
    Some((group, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (filter, topic, expected)
    const MATRIX: &[(&str, &str, bool)] = &[
        // Exact matches, case sensitivity.
        ("a", "a", true),
        ("a", "A", false),
        ("a/b", "a/b", true),
        ("a/b", "a", false),
        ("a", "a/b", false),
        ("a/b/c", "a/b/c", true),
        ("a/b/c", "a/b/d", false),
        ("sport/tennis/player1", "sport/tennis/player1", true),
        // `#` [MQTT-4.7.1-2] (spec 4.7.1.2 examples).
        ("#", "a", true),
        ("#", "a/b/c", true),
        ("#", "/", true),
        ("#", "/a", true),
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("sport/#", "sports", false),
        ("sport/#", "sport/", true),
        ("a/#", "a", true),
        ("a/#", "a/b", true),
        ("a/#", "b", false),
        ("a/#", "ab", false),
        ("a/b/#", "a", false),
        ("/#", "/", true),
        ("/#", "a", false),
        // `+` [MQTT-4.7.1-3] (spec 4.7.1.3 examples).
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "a", true),
        ("+", "a/b", false),
        ("+", "/", false),
        ("+/+", "/", true),
        ("/+", "/finance", true),
        ("+/+", "/finance", true),
        ("+", "/finance", false),
        ("+/b", "a/b", true),
        ("+/b", "a/c", false),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a//c", true),
        ("a/+/c", "a/c", false),
        ("+/+/+", "a/b/c", true),
        ("+/+/+", "a/b", false),
        ("+/#", "a", true),
        ("+/#", "a/b/c", true),
        ("a/+/#", "a/b", true),
        ("a/+/#", "a", false),
        // Empty levels are levels.
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("a/+/b", "a//b", true),
        ("/", "/", true),
        ("/", "", false),
        ("//", "//", true),
        ("a/", "a/", true),
        ("a/", "a", false),
        ("+", "", true),
        ("a/+", "a/", true),
        // `$` topics [MQTT-4.7.2-1].
        ("#", "$SYS", false),
        ("#", "$SYS/broker/uptime", false),
        ("+", "$SYS", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+/#", "$SYS/a", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/+", "$SYS/x", true),
        ("$SYS", "$SYS", true),
        ("a/$b", "a/$b", true),
        ("a/+", "a/$b", true),
        ("a/#", "a/$b", true),
        ("#", "a$", true),
        ("#", "$", false),
        ("$", "$", true),
    ];

    #[test]
    fn match_matrix_mqtt_4_7() {
        for &(filter, topic, want) in MATRIX {
            assert_eq!(
                matches(filter, topic),
                want,
                "filter {filter:?} topic {topic:?}"
            );
        }
    }

    #[test]
    fn matrix_filters_and_topics_are_valid() {
        for &(filter, topic, _) in MATRIX {
            assert!(valid_topic_filter(filter), "{filter:?}");
            if !topic.is_empty() {
                assert!(valid_topic_name(topic), "{topic:?}");
            }
        }
    }

    #[test]
    fn topic_names_mqtt_3_3_2_2_and_4_7_3_1() {
        for ok in ["a", "/", "a/b", "a//b", "$SYS/x", " ", "ü/ñ", "a b/c"] {
            assert!(valid_topic_name(ok), "{ok:?}");
        }
        // [MQTT-4.7.3-1] non-empty; [MQTT-3.3.2-2] no wildcards; [MQTT-1.5.4-2] no U+0000.
        for bad in ["", "+", "#", "a/+", "a/#", "a+", "a#b", "a\0b", "\0"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn topic_length_limit_spec_1_5_4() {
        assert!(valid_topic_name(&"a".repeat(MAX_TOPIC_LEN)));
        assert!(!valid_topic_name(&"a".repeat(MAX_TOPIC_LEN + 1)));
        assert!(valid_topic_filter(&"a".repeat(MAX_TOPIC_LEN)));
        assert!(!valid_topic_filter(&"a".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn valid_filters_mqtt_4_7_1() {
        for ok in [
            "#",
            "+",
            "/",
            "//",
            "a",
            "a/b",
            "a/+",
            "+/a",
            "+/+",
            "a/#",
            "+/#",
            "/#",
            "/+",
            "a/+/b/#",
            "$SYS/#",
            "$SYS/+",
            "a//b",
            "sport/tennis/+",
            "$shared/x",
            "$sharex",
            "$share2/a",
            "$SHARE/g",
            "a/$share",
            "a/$share/g",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?}");
        }
    }

    #[test]
    fn invalid_filters_mqtt_4_7_1_2_and_4_7_1_3() {
        for bad in [
            "",       // [MQTT-4.7.3-1]
            "a#",     // [MQTT-4.7.1-2] not alone in level
            "#a",     // [MQTT-4.7.1-2]
            "a/#/b",  // [MQTT-4.7.1-2] not last
            "#/a",    // [MQTT-4.7.1-2]
            "##",     // [MQTT-4.7.1-2]
            "a/b#",   // [MQTT-4.7.1-2]
            "a+",     // [MQTT-4.7.1-3] not alone in level
            "+a",     // [MQTT-4.7.1-3]
            "a/b+/c", // [MQTT-4.7.1-3]
            "++",     // [MQTT-4.7.1-3]
            "+#",     // both
            "a\0",    // [MQTT-1.5.4-2]
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn shared_filters_mqtt_4_8_2_1_and_4_8_2_2() {
        for ok in [
            "$share/g/a",
            "$share/g/#",
            "$share/g/+",
            "$share/g/a/+/b/#",
            "$share/group-1/$SYS/#",
            "$share/g//",
            "$share/g/$share/h/x",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?}");
        }
        for bad in [
            "$share",      // no group, no filter
            "$share/",     // empty group
            "$share/g",    // no filter [MQTT-4.8.2-1]
            "$share/g/",   // empty filter
            "$share//a",   // empty share name [MQTT-4.8.2-1]
            "$share/+/a",  // wildcard in share name [MQTT-4.8.2-2]
            "$share/#/a",  // [MQTT-4.8.2-2]
            "$share/g+/a", // [MQTT-4.8.2-2]
            "$share/g/a#", // filter itself invalid [MQTT-4.7.1-2]
            "$share/g/#/a",
            "$share/g/a+",
        ] {
            assert!(!valid_topic_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn parse_shared_splits_group_and_filter() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("$share/g//"), Some(("g", "/")));
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Some(("consumer1", "sport/tennis/+"))
        );
        for none in [
            "$share",
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "a/b",
            "$shared/g/a",
            "#",
            "$SYS/a",
        ] {
            assert_eq!(parse_shared(none), None, "{none:?}");
        }
    }

    #[test]
    fn matches_is_literal_about_share_prefix() {
        // Callers strip `$share/{group}/`; an unstripped filter is just a `$` topic filter.
        assert!(!matches("$share/g/a", "a"));
        assert!(matches("a", "a"));
    }
}
