//! Label selectors (`metav1.LabelSelector`), checked once and matched many
//! times.

use std::collections::{BTreeMap, BTreeSet};

use super::types::LabelSelector;

/// Why a selector cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An operator other than the four of the API.
    #[error("unknown selector operator {0:?} (In, NotIn, Exists, DoesNotExist)")]
    Operator(String),
    /// `In`/`NotIn` with no values, or `Exists`/`DoesNotExist` with some.
    #[error("selector operator {operator} on {key:?} {problem}")]
    Values {
        /// The operator.
        operator: String,
        /// The key.
        key: String,
        /// `needs values` or `takes no values`.
        problem: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A checked selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

impl Selector {
    /// Checks `s`.
    pub fn new(s: &LabelSelector) -> Result<Self, SelectorError> {
        let mut terms: Vec<Term> = s
            .match_labels
            .iter()
            .map(|(k, v)| Term::Equals(k.clone(), v.clone()))
            .collect();
        for r in &s.match_expressions {
            let values: BTreeSet<String> = r.values.iter().cloned().collect();
            let bad = |problem| SelectorError::Values {
                operator: r.operator.clone(),
                key: r.key.clone(),
                problem,
            };
            terms.push(match r.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => return Err(bad("needs values")),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad("takes no values"));
                }
                "In" => Term::In(r.key.clone(), values),
                "NotIn" => Term::NotIn(r.key.clone(), values),
                "Exists" => Term::Exists(r.key.clone()),
                "DoesNotExist" => Term::DoesNotExist(r.key.clone()),
                other => return Err(SelectorError::Operator(other.to_owned())),
            });
        }
        Ok(Self { terms })
    }

    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Self { terms: Vec::new() }
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // A missing key satisfies NotIn, as in the API.
            Term::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Term::Exists(k) => labels.contains_key(k),
            Term::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}
