//! Scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of %x21 / %x23-5B / %x5D-7E.
use std::collections::BTreeSet;
use std::fmt;

use super::error::Error;

pub const MAX_SCOPE_TOKEN_LEN: usize = 128;
pub const MAX_SCOPES: usize = 64;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

fn valid_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_SCOPE_TOKEN_LEN
        && token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl ScopeSet {
    /// Parses the space-delimited wire form. Empty input is the empty set.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::from_tokens(raw.split(' ').filter(|t| !t.is_empty()))
    }

    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut set = BTreeSet::new();
        for token in tokens {
            if !valid_scope_token(token) {
                return Err(Error::InvalidScope("malformed scope".into()));
            }
            set.insert(token.to_owned());
            if set.len() > MAX_SCOPES {
                return Err(Error::InvalidScope("too many scopes".into()));
            }
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }

    /// Requested scope checked against what the client may have: a subset, or `invalid_scope`;
    /// nothing requested means everything allowed (RFC 6749 §3.3 lets the server pick a default).
    pub fn grant(requested: Option<ScopeSet>, allowed: &ScopeSet) -> Result<ScopeSet, Error> {
        match requested {
            None => Ok(allowed.clone()),
            Some(req) if req.is_subset(allowed) => Ok(req),
            Some(_) => Err(Error::InvalidScope("requested scope exceeds the client's allowed scope".into())),
        }
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subset_rules() {
        let allowed = ScopeSet::parse("a b c").unwrap();
        assert_eq!(ScopeSet::grant(None, &allowed).unwrap(), allowed);
        let req = ScopeSet::parse("b  a").unwrap();
        assert_eq!(ScopeSet::grant(Some(req), &allowed).unwrap().to_string(), "a b");
        assert!(matches!(
            ScopeSet::grant(Some(ScopeSet::parse("a d").unwrap()), &allowed),
            Err(Error::InvalidScope(_))
        ));
    }

    #[test]
    fn rejects_forbidden_characters() {
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("é").is_err());
        assert!(ScopeSet::parse("a\tb").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,20}", 0..10)) {
            let set = ScopeSet::from_tokens(tokens.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set);
        }

        #[test]
        fn parse_never_panics(raw in ".{0,300}") {
            let _ = ScopeSet::parse(&raw);
        }
    }
}
