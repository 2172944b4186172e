//! Topic patterns of authorization rules: `board:{board}`, `user:{user}`, `presence`, or a
//! trailing `*` (`team:*`, or `*` alone for every topic). A `{param}` stands for one
//! colon-separated part of the topic (one or more of `A-Z a-z 0-9 _ . -`), so the pattern is
//! matched left to right without backtracking.

use crate::events::route::Params;
use crate::events::types::{is_name_byte, MAX_TOPIC_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Param(String),
    /// `*` at the end: anything, including nothing.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    segs: Vec<Seg>,
    source: String,
}

impl TopicPattern {
    pub fn parse(s: &str) -> Result<TopicPattern, String> {
        if s.is_empty() {
            return Err("the topic pattern is empty".into());
        }
        if s.len() > MAX_TOPIC_LEN + 64 {
            return Err(format!(
                "topic pattern longer than {} characters",
                MAX_TOPIC_LEN + 64
            ));
        }
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            _ => {
                                return Err(format!(
                                    "{s:?}: a parameter is `{{name}}` with A-Z a-z 0-9 _"
                                ))
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("{s:?}: empty parameter `{{}}`"));
                    }
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(segs.last(), Some(Seg::Param(_))) {
                        return Err(format!(
                            "{s:?}: two parameters in a row; separate them with ':'"
                        ));
                    }
                    if segs
                        .iter()
                        .any(|seg| matches!(seg, Seg::Param(n) if *n == name))
                    {
                        return Err(format!("{s:?}: parameter {{{name}}} appears twice"));
                    }
                    segs.push(Seg::Param(name));
                }
                '*' => {
                    if chars.peek().is_some() {
                        return Err(format!("{s:?}: `*` is only allowed at the end"));
                    }
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Rest);
                }
                c if c.is_ascii() && is_name_byte(c as u8) => {
                    if lit.is_empty() && matches!(segs.last(), Some(Seg::Param(_))) && c != ':' {
                        return Err(format!(
                            "{s:?}: a parameter must be followed by ':', `*` or the end"
                        ));
                    }
                    lit.push(c);
                }
                c => {
                    return Err(format!(
                        "{s:?}: {c:?} cannot appear in a topic (A-Z a-z 0-9 _ . : -)"
                    ))
                }
            }
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Ok(TopicPattern {
            segs,
            source: s.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Param(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Whether the pattern ends in `*` (a part no check path can use).
    pub fn has_wildcard(&self) -> bool {
        matches!(self.segs.last(), Some(Seg::Rest))
    }

    /// Matches a (valid) topic, capturing the parameters.
    pub fn matches(&self, topic: &str) -> Option<Params> {
        let mut params = Params::new();
        let mut rest = topic;
        for seg in &self.segs {
            match seg {
                Seg::Lit(l) => rest = rest.strip_prefix(l.as_str())?,
                Seg::Param(name) => {
                    let end = rest.find(':').unwrap_or(rest.len());
                    if end == 0 {
                        return None;
                    }
                    params.insert(name.clone(), rest[..end].to_owned());
                    rest = &rest[end..];
                }
                Seg::Rest => return Some(params),
            }
        }
        rest.is_empty().then_some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> Option<Vec<(String, String)>> {
        TopicPattern::parse(p)
            .unwrap()
            .matches(t)
            .map(|p| p.into_iter().collect())
    }

    #[test]
    fn patterns_match_whole_topics() {
        assert_eq!(
            m("board:{board}", "board:42"),
            Some(vec![("board".into(), "42".into())])
        );
        assert_eq!(m("board:{board}", "board:"), None);
        assert_eq!(m("board:{board}", "board:4:2"), None);
        assert_eq!(m("board:{board}", "boards:4"), None);
        assert_eq!(m("presence", "presence"), Some(vec![]));
        assert_eq!(m("presence", "presence2"), None);
        assert_eq!(m("*", "anything:at:all"), Some(vec![]));
        assert_eq!(m("team:*", "team:a:b"), Some(vec![]));
        assert_eq!(m("team:*", "teams"), None);
        assert_eq!(
            m("org:{org}:board:{board}", "org:a:board:b"),
            Some(vec![
                ("board".into(), "b".into()),
                ("org".into(), "a".into())
            ])
        );
    }

    #[test]
    fn bad_patterns_are_explained() {
        for p in [
            "",
            "a*b",
            "{a}{b}",
            "{a}x",
            "board:{}",
            "board:{a b}",
            "b/c",
            "{a}:{a}",
        ] {
            assert!(TopicPattern::parse(p).is_err(), "{p:?} should be refused");
        }
    }
}
