//! Topic name and filter rules (stub).
pub fn valid_topic_name(_s: &str) -> bool { false }
pub fn valid_topic_filter(_s: &str) -> bool { false }
pub fn matches(_filter: &str, _topic: &str) -> bool { false }
pub fn parse_shared(_filter: &str) -> Option<(&str, &str)> { None }
