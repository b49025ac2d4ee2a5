//! The order in which a server takes a statement's table metadata locks, and the names of the
//! cut-over's gate tables, chosen so that the swapping RENAME queues on the original table
//! before it needs anything session A holds besides it.
//!
//! A multi-table RENAME takes its metadata locks one by one, sorted by key: the schema and table
//! names compared as bytes, the names folded to lower case when `lower_case_table_names` is not
//! 0, each name ending in a 0 byte (so a name sorts before every longer name it begins).

const MAX_NAME: usize = 64;

/// The sort key of a table name in one schema.
pub fn lock_order_key(name: &str, folded: bool) -> Vec<u8> {
    let mut key = if folded {
        name.to_lowercase().into_bytes()
    } else {
        name.as_bytes().to_vec()
    };
    key.push(0);
    key
}

/// True when `a` sorts after `b` under both byte orders (as given and folded), whatever the
/// server's `lower_case_table_names`.
pub fn sorts_after_in_both(a: &str, b: &str) -> bool {
    lock_order_key(a, false) > lock_order_key(b, false)
        && lock_order_key(a, true) > lock_order_key(b, true)
}

/// The two gate tables of the atomic cut-over: `sentry` must not exist for the RENAME to succeed
/// (session A holds it locked and drops it to let the RENAME through); `source` is renamed onto
/// it. Both sort after the original table under either folding, so the RENAME waits on the
/// original first. None when no such name fits in 64 characters (names made only of the
/// largest characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateNames {
    pub sentry: String,
    pub source: String,
}

pub fn gate_names(original: &str) -> Option<GateNames> {
    let chars: Vec<char> = original.chars().collect();
    // The readable form: the name plus a suffix sorts right after the name.
    if chars.len() + 4 <= MAX_NAME {
        return Some(GateNames {
            sentry: format!("{original}_ghs"),
            source: format!("{original}_ghr"),
        });
    }
    // A long name: keep a prefix and put a character after it that sorts after the original's
    // character at that place, in both foldings.
    for keep in (1..=MAX_NAME - 4).rev() {
        let Some(&at) = chars.get(keep) else {
            continue;
        };
        let prefix: String = chars[..keep].iter().collect();
        for bump in ['~', '\u{FFFD}'] {
            let sentry = format!("{prefix}{bump}ghs");
            if sorts_after_in_both(&sentry, original) && bump > at {
                return Some(GateNames {
                    sentry,
                    source: format!("{prefix}{bump}ghr"),
                });
            }
        }
    }
    None
}

/// Of `names` (the tables one statement locks), the one the server locks right before
/// `target`, if any.
pub fn locked_just_before<'a>(names: &[&'a str], target: &str, folded: bool) -> Option<&'a str> {
    let target_key = lock_order_key(target, folded);
    names
        .iter()
        .copied()
        .filter(|n| lock_order_key(n, folded) < target_key)
        .max_by_key(|n| lock_order_key(n, folded))
}

/// True when `query` (a statement as the binary log has it) renames `schema`.`from` to
/// `schema`.`to`, in any of the shapes a person or ghost writes it: `RENAME TABLE a TO b, ...` or
/// `ALTER TABLE a RENAME [TO|AS] b`, names quoted or not, qualified or not (`default_schema` is
/// the session's schema the binlog event carries).
pub fn statement_renames(
    query: &str,
    default_schema: &str,
    schema: &str,
    from: &str,
    to: &str,
) -> bool {
    let tokens = tokenize(query);
    let upper = |i: usize| tokens.get(i).map(|t| t.to_ascii_uppercase());
    // A table name at `i`: `name` or `schema . name`; returns (schema, name, next index).
    let name_at = |i: usize| -> Option<(String, String, usize)> {
        let first = tokens.get(i)?.clone();
        if tokens.get(i + 1).map(String::as_str) == Some(".") {
            let second = tokens.get(i + 2)?.clone();
            Some((unquote(&first), unquote(&second), i + 3))
        } else {
            Some((default_schema.to_string(), unquote(&first), i + 1))
        }
    };
    let is = |(s, n): (&str, &str), want: &str| s == schema && n == want;
    let mut i = 0;
    while i < tokens.len() {
        if let Some((s1, n1, next)) = name_at(i) {
            let keyword = upper(next);
            let skip = match keyword.as_deref() {
                Some("TO") => 1,
                Some("RENAME") => match upper(next + 1).as_deref() {
                    Some("TO" | "AS") => 2,
                    _ => 1,
                },
                _ => 0,
            };
            if skip > 0 {
                if let Some((s2, n2, _)) = name_at(next + skip) {
                    if is((&s1, &n1), from) && is((&s2, &n2), to) {
                        return true;
                    }
                }
            }
        }
        i += 1;
    }
    false
}

/// Words, quoted identifiers (kept with their backquotes), and punctuation.
fn tokenize(query: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '`' {
            let mut name = String::from('`');
            while let Some(d) = chars.next() {
                if d == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                        name.push('`');
                        continue;
                    }
                    break;
                }
                name.push(d);
            }
            tokens.push(name);
        } else if c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() {
            let mut word = String::from(c);
            while let Some(&d) = chars.peek() {
                if d.is_alphanumeric() || d == '_' || d == '$' || !d.is_ascii() {
                    word.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(word);
        } else {
            tokens.push(c.to_string());
        }
    }
    tokens
}

fn unquote(token: &str) -> String {
    token.strip_prefix('`').unwrap_or(token).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn recognises_the_swap_in_every_shape() {
        let yes = [
            "RENAME TABLE `d`.`t` TO `d`.`_t_del`, `d`.`_t_gho` TO `d`.`t`",
            "RENAME TABLE t TO _t_del, _t_gho TO t",
            "rename table `t` to `_t_del`",
            "ALTER TABLE `d`.`t` RENAME `d`.`_t_del`",
            "alter table t rename to _t_del",
            "RENAME TABLE `d`.`t` TO `d`.`_t_del`, `d`.`_t_gho` TO `d`.`t`, `d`.`t_ghr` TO `d`.`t_ghs`",
        ];
        for q in yes {
            assert!(statement_renames(q, "d", "d", "t", "_t_del"), "{q}");
        }
        let no = [
            "RENAME TABLE `d`.`_t_gho` TO `d`.`t`",
            "RENAME TABLE `x`.`t` TO `x`.`_t_del`",
            "RENAME TABLE t TO _t_del",
            "INSERT INTO t VALUES (1)",
        ];
        for q in no {
            assert!(
                !statement_renames(
                    q,
                    if q.contains("_t_del") && !q.contains('`') {
                        "other"
                    } else {
                        "d"
                    },
                    "d",
                    "t",
                    "_t_del"
                ),
                "{q}"
            );
        }
        // Names with backquotes and unicode.
        assert!(statement_renames(
            "RENAME TABLE `d`.`a``b😀` TO `d`.`_a``b😀_del`",
            "d",
            "d",
            "a`b😀",
            "_a`b😀_del"
        ));
    }

    use super::*;

    #[test]
    fn short_names_get_a_suffix() {
        let g = gate_names("users").unwrap();
        assert_eq!(g.sentry, "users_ghs");
        assert_eq!(g.source, "users_ghr");
        assert!(sorts_after_in_both(&g.sentry, "users"));
        let upper = gate_names("Users").unwrap();
        assert!(sorts_after_in_both(&upper.sentry, "Users"));
    }

    #[test]
    fn long_names_still_sort_after_the_original() {
        for original in [
            "x".repeat(64),
            "X".repeat(64),
            format!("{}~", "a".repeat(63)),
            "é".repeat(64),
            format!("{}日本語", "Ab".repeat(30)),
        ] {
            let g = gate_names(&original).unwrap_or_else(|| panic!("no gate for {original}"));
            assert!(g.sentry.chars().count() <= 64, "{}", g.sentry);
            assert!(g.source.chars().count() <= 64, "{}", g.source);
            assert!(
                sorts_after_in_both(&g.sentry, &original),
                "{} vs {original}",
                g.sentry
            );
            assert_ne!(g.sentry, g.source);
        }
    }

    #[test]
    fn lock_order_follows_the_folding() {
        // Upper case sorts before '_' as bytes, after it folded.
        let names = [
            "_Users_del",
            "_Users_gho",
            "Users",
            "Users_ghr",
            "Users_ghs",
        ];
        assert_eq!(locked_just_before(&names, "Users", false), None);
        assert_eq!(
            locked_just_before(&names, "Users", true),
            Some("_Users_gho")
        );
        let lower = [
            "_users_del",
            "_users_gho",
            "users",
            "users_ghr",
            "users_ghs",
        ];
        assert_eq!(
            locked_just_before(&lower, "users", false),
            Some("_users_gho")
        );
        // A name sorts before every longer name it begins.
        assert!(lock_order_key("t", false) < lock_order_key("t_ghs", false));
    }
}
