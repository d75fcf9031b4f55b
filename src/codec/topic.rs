//! Topic names and topic filters as the wire allows them (MQTT 5.0 section 4.7, 3.1.1 section
//! 4.7), shared-subscription syntax (section 4.8.2) and filter matching. Pure functions; matching
//! allocates nothing.

/// A topic name a PUBLISH may carry: non-empty, no wildcards [MQTT-3.3.2-2][MQTT-4.7.3-1],
/// no U+0000, at most 65535 bytes.
pub fn valid_topic_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains(['+', '#', '\0'])
}

/// A topic filter a SUBSCRIBE may carry: non-empty [MQTT-4.7.3-1]; `#` alone in the last level
/// [MQTT-4.7.1-2]; `+` alone in its level [MQTT-4.7.1-3]. `$share/{group}/{filter}` needs a
/// non-empty group without `/`, `+`, `#` and a valid filter [MQTT-4.8.2-1][MQTT-4.8.2-2].
pub fn valid_topic_filter(s: &str) -> bool {
    if s.is_empty() || s.len() > 65_535 || s.contains('\0') {
        return false;
    }
    if s == "$share" || s.starts_with("$share/") {
        return parse_shared(s).is_some_and(|(_, f)| valid_plain_filter(f));
    }
    valid_plain_filter(s)
}

fn valid_plain_filter(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// `Some((group, filter))` for `$share/group/filter` with a well-formed group.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, f) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || f.is_empty() {
        return None;
    }
    Some((group, f))
}

/// Whether `topic` matches `filter` (a plain filter, not `$share/...`). A filter starting with a
/// wildcard never matches a topic starting with `$` [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("$SYS/x"));
        assert!(!valid_topic_name(""), "[MQTT-4.7.3-1]");
        assert!(!valid_topic_name("a/+"), "[MQTT-3.3.2-2]");
        assert!(!valid_topic_name("a/#"), "[MQTT-3.3.2-2]");
        assert!(!valid_topic_name("a\0b"));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "$share/g/a/#",
            "$share/g/#",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a+",
            "a/b+",
            "#/a",
            "$share",
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//a",
            "$share/g+/a",
            "$share/a#/b",
        ] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching_matrix() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/a", true),
            ("+", "/a", false),
            ("/+", "/a", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
            ("+", "", true),
            // [MQTT-4.7.2-1] wildcards at the first level never match `$` topics.
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/#", "a/", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "filter {f:?} topic {t:?}");
        }
    }

    #[test]
    fn shared_parsing() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share/g"), None);
    }
}
