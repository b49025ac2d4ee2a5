//! Names of the auxiliary tables, as gh-ost forms them: `_<table>_<suffix>`, the base cut so the
//! name fits MySQL's 64 characters.

const MAX_NAME: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    pub original: String,
    pub ghost: String,
    pub changelog: String,
    /// The old table after cut-over, and the cut-over sentry before it.
    pub old: String,
    pub checkpoint: String,
}

impl TableNames {
    /// `base` replaces the table name in the auxiliary names (`--force-table-names`);
    /// `old_suffix_timestamp` is `--timestamp-old-table`'s `YYYYMMDDhhmmss`.
    pub fn new(original: &str, base: Option<&str>, old_suffix_timestamp: Option<&str>) -> Self {
        let base = base.filter(|b| !b.is_empty()).unwrap_or(original);
        let old_suffix = match old_suffix_timestamp {
            Some(ts) => format!("{ts}_del"),
            None => "del".to_string(),
        };
        Self {
            original: original.to_string(),
            ghost: safe_name(base, "gho"),
            changelog: safe_name(base, "ghc"),
            old: safe_name(base, &old_suffix),
            checkpoint: safe_name(base, "ghk"),
        }
    }
}

fn safe_name(base: &str, suffix: &str) -> String {
    let room = MAX_NAME.saturating_sub(suffix.chars().count() + 2);
    let cut: String = base.chars().take(room).collect();
    format!("_{cut}_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_gh_ost() {
        let n = TableNames::new("users", None, None);
        assert_eq!(n.ghost, "_users_gho");
        assert_eq!(n.changelog, "_users_ghc");
        assert_eq!(n.old, "_users_del");
        assert_eq!(n.checkpoint, "_users_ghk");
        let ts = TableNames::new("users", None, Some("20261122103000"));
        assert_eq!(ts.old, "_users_20261122103000_del");
        let forced = TableNames::new("users", Some("u"), None);
        assert_eq!(forced.ghost, "_u_gho");
    }

    #[test]
    fn long_names_fit_in_64_characters() {
        let long = "x".repeat(64);
        let n = TableNames::new(&long, None, Some("20261122103000"));
        assert_eq!(n.ghost.len(), 64);
        assert_eq!(n.old.len(), 64);
        assert!(n.old.ends_with("_20261122103000_del"));
    }
}
