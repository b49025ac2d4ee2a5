//! SQL text builders. Pure functions: identifiers are always quoted here, values always travel as
//! bound parameters.

pub mod dml;

/// Quotes an identifier with backticks, doubling any backtick inside it.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for ch in name.chars() {
        if ch == '`' {
            quoted.push('`');
        }
        quoted.push(ch);
    }
    quoted.push('`');
    quoted
}

/// `` `a`, `b`, `c` ``: quoted names separated by commas.
pub fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `` `schema`.`table` ``
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Quotes a string literal for the rare statements that cannot take parameters (SHOW ... LIKE,
/// SET @var). Backslashes and quotes are escaped so the value cannot end the literal.
pub fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for ch in value.chars() {
        match ch {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            '\0' => quoted.push_str("\\0"),
            _ => quoted.push(ch),
        }
    }
    quoted.push('\'');
    quoted
}

/// True for names made only of `[A-Za-z0-9_]`: safe to splice where SQL takes a bare word
/// (character set and collation names).
pub fn is_bare_word(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("users"), "`users`");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(quote_ident("``"), "``````");
        assert_eq!(qualified("d b", "t"), "`d b`.`t`");
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(quote_literal("0-1-5"), "'0-1-5'");
    }

    #[test]
    fn bare_words() {
        assert!(is_bare_word("utf8mb4_general_ci"));
        assert!(!is_bare_word("latin1; drop"));
        assert!(!is_bare_word(""));
    }
}
