//! Conditions of authorization rules on the backend's check answer: `left == right` or
//! `left != right`, each side a string template over the answer and the topic's parameters.

use crate::events::template::{Inputs, StrTemplate};

/// `left == right` or `left != right` on the check's answer and the topic's parameters.
#[derive(Debug, Clone)]
pub struct Condition {
    pub left: StrTemplate,
    pub equal: bool,
    pub right: StrTemplate,
}

impl Condition {
    /// Parses `"{response.id} == {user}"`.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let (l, equal, r) = if let Some((l, r)) = s.split_once("==") {
            (l, true, r)
        } else if let Some((l, r)) = s.split_once("!=") {
            (l, false, r)
        } else {
            return Err(format!(
                "{s:?} is not a condition: write `{{response.field}} == {{param}}` (or !=)"
            ));
        };
        if r.contains("==") || r.contains("!=") {
            return Err(format!("{s:?} has more than one comparison"));
        }
        Ok(Condition {
            left: StrTemplate::parse(l.trim())?,
            equal,
            right: StrTemplate::parse(r.trim())?,
        })
    }

    /// Whether the condition holds; a side that cannot be filled makes it fail.
    pub fn holds(&self, inputs: &Inputs) -> bool {
        match (self.left.render(inputs), self.right.render(inputs)) {
            (Ok(l), Ok(r)) => (l == r) == self.equal,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::route::Params;
    use crate::events::template::Body;

    #[test]
    fn conditions_compare_answer_and_parameters() {
        let c = Condition::parse("{response.id} == {user}").unwrap();
        let mut params = Params::new();
        params.insert("user".into(), "alice".into());
        let ok = Body::Json(serde_json::json!({"id": "alice"}));
        let other = Body::Json(serde_json::json!({"id": "bob"}));
        let inputs = |b| Inputs {
            params: &params,
            query: &[],
            headers: &[],
            request: &Body::Empty,
            response: b,
        };
        assert!(c.holds(&inputs(&ok)));
        assert!(!c.holds(&inputs(&other)));
        assert!(!c.holds(&inputs(&Body::NotJson)));
        let ne = Condition::parse("{response.id} != {user}").unwrap();
        assert!(ne.holds(&inputs(&other)));
        assert!(Condition::parse("{response.id}").is_err());
        assert!(Condition::parse("{a} == {b} == {c}").is_err());
    }
}
