//! Unit tests for [`super`]: the grammar, the Mosquitto check matrix, filter algebra (checked
//! exhaustively against topic matching on a small universe) and subscribe-time verdicts.

use super::*;
use crate::codec::topic::matches;

const FILE: &str = "\
# Anonymous clients (no username)
topic read public/#
topic deny public/secret/#

user alice
topic readwrite alice/#
topic read shared/+/data
topic deny shared/private/data
topic write logs/alice
topic read devices/+/locked

user bob
topic bob/#

user admin
topic #
topic readwrite $SYS/#

# A repeated block adds to alice's list.
user alice
topic read extra/alice

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
pattern write %u/out/%c
";

fn acl() -> AclFile {
    AclFile::parse(FILE).unwrap()
}

fn can(acl: &AclFile, id: &str, user: Option<&str>, topic: &str, access: Access) -> bool {
    acl.check(id, user, topic, access)
}

fn parse_err(text: &str) -> (usize, String) {
    match AclFile::parse(text) {
        Err(AclError::Parse { line, reason }) => (line, reason),
        other => panic!("{text:?}: expected a parse error, got {other:?}"),
    }
}

use Access::{Read, Write};

#[test]
fn anonymous_list() {
    let a = acl();
    assert!(can(&a, "c1", None, "public/x", Read));
    assert!(can(&a, "c1", None, "public", Read), "# matches the parent");
    assert!(!can(&a, "c1", None, "public/x", Write));
    assert!(
        !can(&a, "c1", None, "public/secret/x", Read),
        "deny goes to the front even though written after the grant"
    );
    assert!(!can(&a, "c1", None, "private", Read));
    // Patterns apply to anonymous clients too, except %u ones.
    assert!(can(&a, "c1", None, "devices/c1/temp", Write));
    assert!(!can(&a, "c1", None, "devices/c2/temp", Read));
    assert!(!can(&a, "c1", None, "users//inbox", Read));
    assert!(!can(&a, "c1", None, "users/%u/inbox", Read));
}

#[test]
fn user_lists_are_by_username_not_client_id() {
    let a = acl();
    assert!(can(&a, "c2", Some("alice"), "alice/x/y", Write));
    assert!(can(&a, "c2", Some("alice"), "shared/one/data", Read));
    assert!(!can(&a, "c2", Some("alice"), "shared/one/data", Write));
    assert!(!can(&a, "c2", Some("alice"), "shared/private/data", Read));
    assert!(can(&a, "c2", Some("alice"), "logs/alice", Write));
    assert!(!can(&a, "c2", Some("alice"), "logs/alice", Read));
    assert!(
        can(&a, "c2", Some("alice"), "extra/alice", Read),
        "second block"
    );
    assert!(
        !can(&a, "c2", Some("alice"), "public/x", Read),
        "not anonymous"
    );
    assert!(
        !can(&a, "alice", None, "alice/x", Read),
        "client id is not a username"
    );
    assert!(can(&a, "c3", Some("bob"), "bob/x", Read));
    assert!(
        can(&a, "c3", Some("bob"), "bob", Write),
        "no access word = readwrite"
    );
    assert!(!can(&a, "c3", Some("bob"), "alice/x", Read));
}

#[test]
fn patterns_substitute_client_id_and_username() {
    let a = acl();
    // carol has no user list: only patterns.
    assert!(can(&a, "c3", Some("carol"), "devices/c3/a/b", Read));
    assert!(can(&a, "c3", Some("carol"), "users/carol/inbox", Read));
    assert!(!can(&a, "c3", Some("carol"), "users/carol/inbox", Write));
    assert!(!can(&a, "c3", Some("carol"), "users/alice/inbox", Read));
    assert!(can(&a, "c3", Some("carol"), "carol/out/c3", Write));
    assert!(!can(&a, "c3", Some("carol"), "carol/out/c4", Write));
    // Pattern deny beats pattern grant...
    assert!(!can(&a, "c3", Some("carol"), "devices/c3/locked", Read));
    // ...but the user list is walked first, so alice's own grant wins over the pattern deny.
    assert!(can(&a, "c2", Some("alice"), "devices/c2/locked", Read));
    // Patterns also apply to users that have a list.
    assert!(can(&a, "c2", Some("alice"), "users/alice/inbox", Read));
    // Substitution is plain text: ids with `/` or `$` expand as written.
    assert!(can(&a, "x/y", Some("carol"), "devices/x/y/z", Read));
    assert_eq!(
        substitute("a/%c/%u/%%c/%x/%", "id", Some("u")),
        "a/id/u/%id/%x/%"
    );
    assert_eq!(substitute("%u/%c", "id", None), "%u/id");
}

#[test]
fn wildcards_in_identity_disable_patterns() {
    let a = acl();
    for (id, user) in [
        ("c+", Some("carol")),
        ("c#", Some("carol")),
        ("c3", Some("car+ol")),
        ("#", None),
    ] {
        assert!(
            !can(&a, id, user, &format!("devices/{id}/x"), Read),
            "{id} {user:?}"
        );
        assert!(!can(&a, id, user, "devices/c3/x", Read), "{id} {user:?}");
        assert_eq!(
            a.check_subscribe(id, user, "devices/#"),
            SubscribeVerdict::Denied,
            "{id} {user:?}"
        );
    }
    // The user list is walked before the anti-injection rule, as in Mosquitto.
    assert!(can(&a, "c#", Some("alice"), "alice/x", Read));
    assert!(can(&a, "c+", None, "public/x", Read));
    // Without patterns the rule does not apply.
    let plain = AclFile::parse("user a+b\ntopic x\n").unwrap();
    assert!(plain.check("id#", Some("a+b"), "x", Read));
}

#[test]
fn dollar_topics() {
    let a = acl();
    assert!(can(&a, "c", Some("admin"), "x/y", Write));
    assert!(
        !can(&a, "c", Some("admin"), "$other/x", Read),
        "# does not match $"
    );
    assert!(can(&a, "c", Some("admin"), "$SYS/broker/uptime", Read));
    assert!(!can(&a, "c", Some("admin"), "$SYS/broker/uptime", Write));
    assert!(!can(&a, "c", Some("admin"), "$SYS", Write));
    assert!(
        !can(&a, "c", Some("admin"), "$SYSX/y", Write),
        "strncmp \"$SYS\""
    );
    assert!(can(
        &a,
        "c",
        Some("admin"),
        "$SYS/broker/connection/br1/state",
        Write
    ));
    assert!(!can(&a, "c", Some("admin"), "$share/g/x", Read));
    assert!(!can(&a, "c", Some("admin"), "$share/g/x", Write));
    assert!(!can(&a, "c", None, "$SYS/broker/uptime", Read));
    assert!(dollar_check("$SYS/x", Read));
    assert!(!dollar_check("$SYS/x", Write));
    assert!(dollar_check("$SYS/broker/connection/b/state", Write));
    assert!(!dollar_check("$SYS/broker/connection/b/c/state", Write));
    assert!(!dollar_check("$share/g/t", Write));
    assert!(dollar_check("$aws/x", Write));
    assert!(dollar_check("a/$SYS", Write));
}

#[test]
fn unknown_users_and_empty_ids_are_denied() {
    let no_patterns = AclFile::parse("topic read a\nuser u\ntopic read b\n").unwrap();
    assert!(!no_patterns.check("c", Some("zed"), "a", Read));
    assert!(!no_patterns.check("c", Some("zed"), "b", Read));
    assert!(no_patterns.check("c", None, "a", Read));
    assert!(!no_patterns.check("", None, "a", Read));
    assert_eq!(
        no_patterns.check_subscribe("c", Some("zed"), "#"),
        SubscribeVerdict::Denied
    );
    assert_eq!(
        no_patterns.check_subscribe("", None, "a"),
        SubscribeVerdict::Denied
    );
    let empty = AclFile::parse("").unwrap();
    assert!(!empty.check("c", None, "a", Read));
    assert!(!empty.check("c", Some("u"), "a", Write));
}

#[test]
fn grammar() {
    let a = AclFile::parse(
        "topic read\n\
         topic read a b  c \n\
         \n   \n\
         \t\n\
         user   my name  \r\n\
         topic   write   x/y\r\n\
         pattern p/%c\n",
    )
    .unwrap();
    // `topic read`: readwrite on the topic "read" (Mosquitto's strtok logic).
    assert!(a.check("c", None, "read", Write));
    assert!(a.check("c", None, "a b  c", Read));
    assert!(!a.check("c", None, "a b  c", Write));
    assert!(a.check("c", Some("my name"), "x/y", Write));
    assert!(!a.check("c", Some("my name"), "x/y", Read));
    assert!(
        a.check("c", Some("my name"), "p/c", Write),
        "pattern default rw"
    );
}

#[test]
fn grammar_errors_name_the_line() {
    assert_eq!(parse_err("topic a b").0, 1);
    assert!(parse_err("topic a b").1.contains("access type"));
    assert_eq!(
        parse_err("topic x\n  # not a comment\n"),
        (2, parse_err("  #").1)
    );
    assert!(parse_err("\n\nfoo bar\n").1.contains("unknown keyword"));
    assert_eq!(parse_err("\n\nfoo bar\n").0, 3);
    assert!(parse_err("user").1.contains("username"));
    assert!(parse_err("user   ").1.contains("username"));
    assert!(parse_err("topic").1.contains("missing topic"));
    assert!(parse_err("pattern   ").1.contains("missing topic"));
    assert!(parse_err("topic read a/#/b")
        .1
        .contains("invalid ACL topic"));
    assert!(parse_err("topic read a+").1.contains("invalid ACL topic"));
    assert!(parse_err("topic read a/b#").1.contains("invalid ACL topic"));
    assert!(parse_err("topic\tread x").1.contains("unknown keyword"));
    assert!(parse_err("Topic read x").1.contains("unknown keyword"));
    assert!(parse_err("topic READ x").1.contains("access type"));
    let e = AclFile::parse("x").unwrap_err().to_string();
    assert!(e.starts_with("line 1: "), "{e}");
}

#[test]
fn load_reports_io_and_utf8_errors() {
    let dir = std::env::temp_dir().join(format!("starling-acl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        AclFile::load(&dir.join("missing")),
        Err(AclError::Io(_))
    ));
    let bad = dir.join("bad");
    std::fs::write(&bad, b"topic a\ntopic b\xff\n").unwrap();
    match AclFile::load(&bad) {
        Err(AclError::Parse { line, .. }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    let good = dir.join("good");
    std::fs::write(&good, FILE).unwrap();
    assert_eq!(AclFile::load(&good).unwrap(), acl());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn intersect_cases() {
    for (a, b, want) in [
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/+", "a/b", true),
        ("+/+", "a", false),
        ("#", "a/b/c", true),
        ("a/#", "a", true),
        ("a/+/#", "a", false),
        ("a/+", "+/b", true),
        ("a/b/c", "a/#", true),
        ("+", "#", true),
        ("#", "#", true),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("+", "$SYS", false),
        ("$SYS/#", "$SYS/broker/+", true),
        ("$SYS/#", "#", false),
        ("$SYS", "$SYS/#", true),
        ("a//b", "a/+/b", true),
        ("a/+", "a/b/c", false),
        ("/", "+/+", true),
        ("/", "#", true),
        ("a/#", "b/#", false),
        ("a/+/c", "+/b/#", true),
        ("a", "a/+", false),
    ] {
        assert_eq!(filters_intersect(a, b), want, "{a} ∩ {b}");
        assert_eq!(filters_intersect(b, a), want, "{b} ∩ {a}");
    }
    assert_eq!(intersection("a/+/#", "+/b/c"), Some(vec!["a", "b", "c"]));
    assert_eq!(intersection("a/#", "+/b/#"), Some(vec!["a", "b", "#"]));
    assert_eq!(intersection("#", "a/+"), Some(vec!["a", "+"]));
    assert_eq!(intersection("a", "a/#"), Some(vec!["a"]));
}

#[test]
fn covers_cases() {
    for (outer, inner, want) in [
        ("#", "a/b", true),
        ("#", "#", true),
        ("#", "+", true),
        ("#", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/#", "$SYS", true),
        ("a/#", "a", true),
        ("a/#", "a/#", true),
        ("a/#", "a/+/#", true),
        ("a/+", "a/#", false),
        ("a/+", "a/b", true),
        ("a/+", "a/+", true),
        ("a/b", "a/+", false),
        ("+/#", "#", true),
        ("+/#", "+", true),
        ("+", "#", false),
        ("+/+/#", "#", false),
        ("a/+/#", "a/+", true),
        ("a/+/#", "a", false),
        ("a", "a/#", false),
        ("+", "$x", false),
        ("a/b/c", "a/b", false),
        ("a/b", "a/b/c", false),
        ("a/b", "a/b", true),
        ("+/b", "a/b", true),
        ("a//b", "a/+/b", false),
    ] {
        assert_eq!(filter_covers(outer, inner), want, "{outer} ⊇ {inner}");
    }
}

/// Filters of up to three levels over `a`, `$s`, `+` (and `#` last).
fn small_filters() -> Vec<String> {
    let mid = ["a", "$s", "+"];
    let last = ["a", "$s", "+", "#"];
    let mut out: Vec<String> = last.iter().map(|s| s.to_string()).collect();
    for m in mid {
        for l in last {
            out.push(format!("{m}/{l}"));
            for m2 in mid {
                out.push(format!("{m}/{m2}/{l}"));
            }
        }
    }
    out
}

/// Topics of up to four levels over `a`, `$s`, `z` (a level no filter names), `u` (a username
/// used below) and the empty level: enough to witness any intersection or non-containment of
/// [`small_filters`], and any readable topic of the ACL files below.
fn small_topics() -> Vec<String> {
    let lv = ["a", "$s", "z", "u", ""];
    let mut out = Vec::new();
    let mut frontier: Vec<String> = lv.iter().map(|s| s.to_string()).collect();
    for _ in 0..4 {
        out.extend(frontier.iter().filter(|t| !t.is_empty()).cloned());
        frontier = frontier
            .iter()
            .flat_map(|t| lv.iter().map(move |l| format!("{t}/{l}")))
            .collect();
    }
    out
}

#[test]
fn filter_algebra_agrees_with_matching() {
    let filters = small_filters();
    let topics = small_topics();
    let sets: Vec<Vec<bool>> = filters
        .iter()
        .map(|f| topics.iter().map(|t| matches(f, t)).collect())
        .collect();
    for (i, a) in filters.iter().enumerate() {
        for (j, b) in filters.iter().enumerate() {
            let both = (0..topics.len()).any(|k| sets[i][k] && sets[j][k]);
            assert_eq!(filters_intersect(a, b), both, "{a} ∩ {b}");
            let contained = (0..topics.len()).all(|k| !sets[j][k] || sets[i][k]);
            assert_eq!(filter_covers(a, b), contained, "{a} ⊇ {b}");
            if let Some(levels) = intersection(a, b) {
                let f = levels.join("/");
                for (k, t) in topics.iter().enumerate() {
                    assert_eq!(
                        matches(&f, t),
                        sets[i][k] && sets[j][k],
                        "{a} ∩ {b} = {f} on {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn subscribe_verdicts() {
    use SubscribeVerdict::{Denied, Granted};
    let a = acl();
    for (id, user, filter, want) in [
        ("c1", None, "public/#", Granted),
        ("c1", None, "public/secret/#", Denied),
        ("c1", None, "public/secret/x", Denied),
        ("c1", None, "#", Granted),
        ("c1", None, "+/#", Granted),
        ("c1", None, "private/x", Denied),
        ("c1", None, "devices/+/x", Granted),
        ("c1", None, "devices/c1/locked", Denied),
        ("c1", None, "devices/c2/x", Denied),
        ("c1", None, "$SYS/#", Denied),
        ("c1", None, "$share/g/public/#", Granted),
        ("c1", None, "$share/g/private/x", Denied),
        ("c1", None, "users/+/inbox", Denied),
        ("c2", Some("alice"), "shared/private/data", Denied),
        ("c2", Some("alice"), "shared/+/data", Granted),
        ("c2", Some("alice"), "logs/alice", Denied),
        ("c2", Some("alice"), "alice/#", Granted),
        ("c2", Some("alice"), "devices/c2/locked", Granted),
        ("c2", Some("alice"), "users/alice/inbox", Granted),
        ("c2", Some("alice"), "users/bob/inbox", Denied),
        ("c3", Some("carol"), "devices/c3/locked", Denied),
        ("c3", Some("carol"), "#", Granted),
        ("c", Some("admin"), "$SYS/#", Granted),
        ("c", Some("admin"), "$other/#", Denied),
        ("c", Some("admin"), "#", Granted),
        ("c1", None, "a/#/b", Denied),
    ] {
        assert_eq!(
            a.check_subscribe(id, user, filter),
            want,
            "{id} {user:?} {filter}"
        );
    }
}

/// `Denied` is never wrong: exhaustively, no topic a denied filter matches is readable, and
/// for these files (where no deny is covered only by a union of others) `Granted` is exact too.
#[test]
fn subscribe_verdict_agrees_with_check() {
    let files = [
        FILE,
        "topic read a/#\ntopic deny a/+/a\npattern read %c/#\npattern deny +/$s\n",
        "topic write #\ntopic read $s/+\nuser u\ntopic deny #\ntopic read a\n",
        "pattern read +/%u/#\npattern deny a/a/#\npattern readwrite $s/%c\n",
    ];
    let topics = small_topics();
    for text in files {
        let acl = AclFile::parse(text).unwrap();
        for (id, user) in [("a", None), ("a", Some("u")), ("z", Some("a"))] {
            for f in small_filters() {
                let readable = topics
                    .iter()
                    .any(|t| matches(&f, t) && acl.check(id, user, t, Read));
                let verdict = acl.check_subscribe(id, user, &f);
                if !readable && text != FILE {
                    assert_eq!(
                        verdict,
                        SubscribeVerdict::Denied,
                        "{text:?} {id} {user:?} {f}"
                    );
                }
                if readable {
                    assert_eq!(
                        verdict,
                        SubscribeVerdict::Granted,
                        "{text:?} {id} {user:?} {f}"
                    );
                }
            }
        }
    }
}
