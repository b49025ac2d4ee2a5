//! Parser of the `--alter` argument, after gh-ost's `go/sql/parser.go`.
//!
//! The input is the options part of an `ALTER TABLE`, optionally preceded by
//! `ALTER TABLE [db.]tbl`. It is split into clauses on commas outside quotes, comments and
//! parentheses. Each clause is read as a list of words for what the migration needs to know:
//! column renames, dropped and added columns, an explicit `AUTO_INCREMENT`, and a table rename
//! (refused). The options are kept verbatim, to be appended to `ALTER TABLE <ghost table> `.
//!
//! Where this differs from gh-ost, it is deliberate:
//! - `CHANGE`, `DROP` and `ADD` are recognised only at the start of a clause (gh-ost's regexps
//!   match anywhere after a word boundary, so `alter column c drop default` dropped `default`).
//! - The `ALTER TABLE` prefix is only taken at the start of the input (gh-ost found it anywhere,
//!   even inside a comment string).
//! - Quotes `'…'`, `"…"` and `` `…` `` (with doubled or backslash escapes), comments and nested
//!   parentheses are understood; unbalanced ones are an error, not a silent mis-split.
//! - Only non-trivial renames are recorded (gh-ost also keeps `change c c …` in its map).
//! - `RENAME COLUMN a TO b` is a column rename; `RENAME [TO|AS] x` and bare `RENAME x` are refused.
//! - `DROP COLUMN IF EXISTS x`, `DROP x RESTRICT|CASCADE` and `AUTO_INCREMENT N` (without `=`)
//!   are understood.
//! - Text after a `;` is refused; a trailing `;` and trailing line comments are left out of
//!   `options`, so that more may safely be appended to it (e.g. `, ALGORITHM=INSTANT`).

use thiserror::Error;

/// The parsed `--alter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlterStatement {
    /// What to append to `ALTER TABLE <ghost table> ` — the options part, without any `ALTER TABLE [db.]tbl` prefix.
    pub options: String,
    /// From a full `ALTER TABLE [db.]tbl ...` input, if given (unquoted names).
    pub explicit_schema: Option<String>,
    pub explicit_table: Option<String>,
    /// Column renames detected from `CHANGE [COLUMN] old new ...` (and `RENAME COLUMN old TO new`)
    /// where old != new: (old, new), unquoted.
    pub renamed_columns: Vec<(String, String)>,
    /// Columns dropped with `DROP [COLUMN] x`.
    pub dropped_columns: Vec<String>,
    /// Columns added with `ADD [COLUMN] x ...` (also each name inside `ADD [COLUMN] (a ..., b ...)`).
    pub added_columns: Vec<String>,
    /// `AUTO_INCREMENT=N` given in the ALTER.
    pub auto_increment: Option<u64>,
}

impl AlterStatement {
    /// Maps an original column name to its name in the ghost table, through the renames
    /// (case-insensitive on the original name). None if dropped.
    pub fn ghost_name_of(&self, original: &str) -> Option<String> {
        // A dropped column is gone even if a column of the same name is added back: the new one
        // has its own values (gh-ost's drop-then-add case), so nothing is copied into it.
        if self.dropped_columns.iter().any(|d| same_name(d, original)) {
            return None;
        }
        // Every clause of one ALTER names the original columns, so renames are not chained
        // (`rename column a to b, rename column b to a` swaps them).
        let renamed = self
            .renamed_columns
            .iter()
            .find(|(old, _)| same_name(old, original))
            .map(|(_, new)| new.as_str());
        Some(renamed.unwrap_or(original).to_string())
    }
}

/// Why an `--alter` was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AlterError {
    #[error(
        "{}: give the change, e.g. --alter='ADD COLUMN c INT'",
        super::wording::ALTER_REQUIRED
    )]
    Empty,
    #[error(
        "--alter has {what} at byte {at}: balance the quotes and parentheses (a quote inside quoted text is written twice)"
    )]
    Unbalanced { what: &'static str, at: usize },
    // The wording keeps gh-ost's "alter statement seems to RENAME the table", which its
    // fail-rename-table test expects in the output.
    #[error(
        "--{}: rename the table separately, after the migration",
        super::wording::RENAMES_TABLE
    )]
    RenameTable,
    #[error(
        "--alter starts with ALTER TABLE but {problem}: give `ALTER TABLE [db.]tbl <changes>` or only the changes"
    )]
    BadPrefix { problem: &'static str },
    #[error(
        "--alter has more text after ';' at byte {at}: give the changes of a single ALTER TABLE"
    )]
    MultipleStatements { at: usize },
    #[error(
        "--alter sets AUTO_INCREMENT to {value}, which does not fit 64 bits: give a value up to 18446744073709551615"
    )]
    AutoIncrement { value: String },
}

/// Parses `--alter`: an optional `ALTER TABLE [db.]tbl` prefix, then the options.
pub fn parse_alter(input: &str) -> Result<AlterStatement, AlterError> {
    let lexed = lex(input)?;
    if lexed.lexemes.is_empty() {
        return Err(AlterError::Empty);
    }
    let prefix = strip_prefix(input, &lexed.lexemes)?;
    let rest = lexed.lexemes.get(prefix.consumed..).unwrap_or_default();
    if rest.is_empty() {
        return Err(AlterError::BadPrefix {
            problem: "no changes follow the table name",
        });
    }
    let mut out = AlterStatement {
        options: input
            .get(prefix.end..lexed.end)
            .unwrap_or_default()
            .trim()
            .to_string(),
        explicit_schema: prefix.schema,
        explicit_table: prefix.table,
        ..AlterStatement::default()
    };
    for clause in rest.split(|l| l.kind == Kind::Comma && l.depth == 0) {
        analyze_clause(input, clause, &mut out)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unquoted identifier, keyword or number.
    Word,
    /// Text between the given quote byte: `'` string, `"` string (or ANSI name), `` ` `` name.
    Quoted(u8),
    Open,
    Close,
    Comma,
    /// Any other single byte, e.g. `=` or `.`.
    Punct(u8),
}

#[derive(Debug, Clone, Copy)]
struct Lexeme {
    kind: Kind,
    /// Byte range in the input.
    start: usize,
    end: usize,
    /// Parenthesis nesting; a `(` and its `)` carry the depth outside them.
    depth: usize,
}

impl Lexeme {
    fn text<'a>(&self, input: &'a str) -> &'a str {
        input.get(self.start..self.end).unwrap_or_default()
    }

    fn is_kw(&self, input: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(input).eq_ignore_ascii_case(word)
    }

    /// The unquoted name, if this can name a column or table.
    fn name(&self, input: &str) -> Option<String> {
        match self.kind {
            Kind::Word => Some(self.text(input).to_string()),
            // gh-ost unquotes both with strconv.Unquote; `"` names are ANSI_QUOTES mode.
            Kind::Quoted(q @ (b'`' | b'"')) => Some(unquote(self.text(input), char::from(q))),
            _ => None,
        }
    }
}

struct Lexed {
    lexemes: Vec<Lexeme>,
    /// End of the statement's significant text: past the last lexeme or block comment before
    /// any `;`, so trailing line comments (which would swallow appended text) are left out.
    end: usize,
}

fn is_word_byte(c: u8) -> bool {
    // Bytes ≥ 0x80 are parts of UTF-8 characters, which MySQL allows in unquoted names; it also
    // keeps every lexeme boundary on an ASCII byte, hence a char boundary.
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn lex(input: &str) -> Result<Lexed, AlterError> {
    let b = input.as_bytes();
    let mut lexemes = Vec::new();
    // Positions of the '(' not yet closed, for depth and for pointing at an unclosed one.
    let mut opens: Vec<usize> = Vec::new();
    let mut end = 0;
    let mut after_semicolon = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // MySQL's `-- ` comment needs a blank after the dashes; `a--1` is arithmetic.
        let dash_comment = c == b'-'
            && b.get(i + 1) == Some(&b'-')
            && b.get(i + 2).is_none_or(|n| n.is_ascii_whitespace());
        if c == b'#' || dash_comment {
            i = b[i..]
                .iter()
                .position(|&n| n == b'\n')
                .map_or(b.len(), |p| i + p + 1);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let close = b
                .get(i + 2..)
                .and_then(|tail| tail.windows(2).position(|w| w == b"*/"))
                .ok_or(AlterError::Unbalanced {
                    what: "an unterminated /* comment",
                    at: i,
                })?;
            i += 2 + close + 2;
            // Kept in `options`: `/*! … */` comments are executed by the server.
            if !after_semicolon {
                end = i;
            }
            continue;
        }
        if c == b';' {
            if let Some(&open) = opens.last() {
                return Err(AlterError::Unbalanced {
                    what: "an unclosed '('",
                    at: open,
                });
            }
            after_semicolon = true;
            i += 1;
            continue;
        }
        if after_semicolon {
            return Err(AlterError::MultipleStatements { at: i });
        }
        let kind = match c {
            b'\'' | b'"' | b'`' => {
                i = end_of_quoted(b, i, c)?;
                Kind::Quoted(c)
            }
            b'(' => {
                opens.push(i);
                i += 1;
                Kind::Open
            }
            b')' => {
                if opens.pop().is_none() {
                    return Err(AlterError::Unbalanced {
                        what: "an unmatched ')'",
                        at: i,
                    });
                }
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            _ if is_word_byte(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += 1;
                Kind::Punct(c)
            }
        };
        let depth = if kind == Kind::Open {
            opens.len().saturating_sub(1)
        } else {
            opens.len()
        };
        lexemes.push(Lexeme {
            kind,
            start,
            end: i,
            depth,
        });
        end = i;
    }
    if let Some(&open) = opens.last() {
        return Err(AlterError::Unbalanced {
            what: "an unclosed '('",
            at: open,
        });
    }
    Ok(Lexed { lexemes, end })
}

/// Index just past the quote closing the one at `start`.
fn end_of_quoted(b: &[u8], start: usize, quote: u8) -> Result<usize, AlterError> {
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        // Strings take backslash escapes (the default sql_mode); back-quoted names do not.
        if c == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if c == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(AlterError::Unbalanced {
        what: match quote {
            b'`' => "an unterminated `name`",
            b'"' => "an unterminated \"string\"",
            _ => "an unterminated 'string'",
        },
        at: start,
    })
}

fn unquote(text: &str, quote: char) -> String {
    let inner = text
        .strip_prefix(quote)
        .and_then(|t| t.strip_suffix(quote))
        .unwrap_or(text);
    inner.replace(&format!("{quote}{quote}"), &quote.to_string())
}

// ---------------------------------------------------------------------------------------------
// Prefix

struct Prefix {
    schema: Option<String>,
    table: Option<String>,
    /// Lexemes taken by the prefix.
    consumed: usize,
    /// Byte offset where the options begin.
    end: usize,
}

fn strip_prefix(input: &str, lexemes: &[Lexeme]) -> Result<Prefix, AlterError> {
    let is = |k: usize, word: &str| lexemes.get(k).is_some_and(|l| l.is_kw(input, word));
    // `table` is reserved, so `alter table` cannot start an `ALTER [COLUMN] c …` clause.
    if !(is(0, "alter") && is(1, "table")) {
        return Ok(Prefix {
            schema: None,
            table: None,
            consumed: 0,
            end: 0,
        });
    }
    let first = lexemes.get(2).ok_or(AlterError::BadPrefix {
        problem: "no table name follows",
    })?;
    let first_name = table_name(input, first)?;
    if lexemes.get(3).is_some_and(|l| l.kind == Kind::Punct(b'.')) {
        let second = lexemes.get(4).ok_or(AlterError::BadPrefix {
            problem: "no table name follows the schema name",
        })?;
        Ok(Prefix {
            schema: Some(first_name),
            table: Some(table_name(input, second)?),
            consumed: 5,
            end: second.end,
        })
    } else {
        Ok(Prefix {
            schema: None,
            table: Some(first_name),
            consumed: 3,
            end: first.end,
        })
    }
}

fn table_name(input: &str, lexeme: &Lexeme) -> Result<String, AlterError> {
    match lexeme.kind {
        Kind::Word | Kind::Quoted(b'`') => lexeme.name(input).ok_or(AlterError::BadPrefix {
            problem: "the table name is not readable",
        }),
        _ => Err(AlterError::BadPrefix {
            problem: "the table name is neither plain nor `back-quoted`",
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Clauses

/// After ADD, unquoted reserved words that start something other than a column.
const ADD_NON_COLUMN: &[&str] = &[
    "index",
    "key",
    "primary",
    "unique",
    "fulltext",
    "spatial",
    "constraint",
    "foreign",
    "check",
    "partition",
];

/// After DROP, unquoted reserved words that start something other than a column.
const DROP_NON_COLUMN: &[&str] = &[
    "index",
    "key",
    "primary",
    "foreign",
    "constraint",
    "check",
    "partition",
];

/// The lexemes of one clause at one nesting level.
struct View<'a> {
    input: &'a str,
    items: &'a [&'a Lexeme],
}

impl View<'_> {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn kind(&self, k: usize) -> Option<Kind> {
        self.items.get(k).map(|l| l.kind)
    }

    fn kw(&self, k: usize, word: &str) -> bool {
        self.items.get(k).is_some_and(|l| l.is_kw(self.input, word))
    }

    fn kw_any(&self, k: usize, words: &[&str]) -> bool {
        words.iter().any(|w| self.kw(k, w))
    }

    fn name(&self, k: usize) -> Option<String> {
        self.items.get(k).and_then(|l| l.name(self.input))
    }

    /// Whether the words at `k` start an index, key, constraint, partition or (MariaDB) system
    /// versioning item rather than name a column. Words that are not reserved (PERIOD, SYSTEM,
    /// VECTOR) count only with the word that must follow them.
    fn starts_non_column(&self, k: usize, reserved: &[&str]) -> bool {
        self.kw_any(k, reserved)
            || (self.kw(k, "period") && self.kw(k + 1, "for"))
            || (self.kw(k, "system") && self.kw(k + 1, "versioning"))
            || (self.kw(k, "vector") && self.kw_any(k + 1, &["index", "key"]))
    }
}

fn analyze_clause(
    input: &str,
    clause: &[Lexeme],
    out: &mut AlterStatement,
) -> Result<(), AlterError> {
    // Only the top level matters: parentheses hold types, expressions and key parts.
    let top: Vec<&Lexeme> = clause.iter().filter(|l| l.depth == 0).collect();
    let v = View { input, items: &top };
    // At the clause start only, so a column named `exchange` or a default `'change'` is no rename.
    if v.kw(0, "change") {
        parse_change(&v, out);
    } else if v.kw(0, "drop") {
        parse_drop(&v, out);
    } else if v.kw(0, "add") {
        parse_add(&v, clause, out);
    }
    // Table options may follow one another without commas (`engine=innodb rename to t2`), so
    // these are looked for anywhere in the clause, as gh-ost does.
    for k in 0..v.len() {
        if v.kw(k, "rename") {
            parse_rename(&v, k, out)?;
        } else if v.kw(k, "auto_increment") {
            parse_auto_increment(&v, k, out)?;
        }
    }
    Ok(())
}

/// `CHANGE [COLUMN] [IF EXISTS] old new definition`.
fn parse_change(v: &View<'_>, out: &mut AlterStatement) {
    let mut k = 1;
    if v.kw(k, "column") {
        k += 1;
    }
    if v.kw(k, "if") && v.kw(k + 1, "exists") {
        k += 2;
    }
    // A definition must follow the new name (gh-ost's regexp also wants text after it).
    if k + 2 >= v.len() {
        return;
    }
    if let (Some(old), Some(new)) = (v.name(k), v.name(k + 1)) {
        push_rename(out, old, new);
    }
}

/// `DROP [COLUMN] [IF EXISTS] x [RESTRICT|CASCADE]`, ending the clause.
fn parse_drop(v: &View<'_>, out: &mut AlterStatement) {
    let mut k = 1;
    let explicit = v.kw(k, "column");
    if explicit {
        k += 1;
    }
    if v.kw(k, "if") && v.kw(k + 1, "exists") {
        k += 2;
    } else if !explicit && v.starts_non_column(k, DROP_NON_COLUMN) {
        return;
    }
    let Some(name) = v.name(k) else {
        return;
    };
    // gh-ost takes a drop only when the name ends the clause, so `drop bad statement` is none.
    let ends = k + 1 == v.len() || (k + 2 == v.len() && v.kw_any(k + 1, &["restrict", "cascade"]));
    if ends {
        push_unique(&mut out.dropped_columns, name);
    }
}

/// `ADD [COLUMN] [IF NOT EXISTS] x definition` or `ADD [COLUMN] [IF NOT EXISTS] (x def, …)`.
fn parse_add(v: &View<'_>, clause: &[Lexeme], out: &mut AlterStatement) {
    let mut k = 1;
    let explicit = v.kw(k, "column");
    if explicit {
        k += 1;
    }
    if v.kw(k, "if") && v.kw(k + 1, "not") && v.kw(k + 2, "exists") {
        k += 3;
    } else if !explicit && v.starts_non_column(k, ADD_NON_COLUMN) {
        return;
    }
    if v.kind(k) == Some(Kind::Open) {
        add_column_list(v.input, clause, out);
    } else if let Some(name) = v.name(k).filter(|_| k + 1 < v.len()) {
        // A definition must follow the name, hence the filter.
        push_unique(&mut out.added_columns, name);
    }
}

/// The names in `ADD [COLUMN] (a def, b def, …)`.
fn add_column_list(input: &str, clause: &[Lexeme], out: &mut AlterStatement) {
    // Only ADD [COLUMN] [IF NOT EXISTS] precede the list, so it is the first top-level '('.
    let Some(open) = clause
        .iter()
        .position(|l| l.kind == Kind::Open && l.depth == 0)
    else {
        return;
    };
    let mut elements: Vec<Vec<&Lexeme>> = vec![Vec::new()];
    for l in clause.iter().skip(open + 1) {
        match (l.depth, l.kind) {
            // The list's own ')'.
            (0, _) => break,
            (1, Kind::Comma) => elements.push(Vec::new()),
            (1, _) => {
                if let Some(element) = elements.last_mut() {
                    element.push(l);
                }
            }
            _ => {}
        }
    }
    for element in &elements {
        let v = View {
            input,
            items: element,
        };
        let is_column = v.len() > 1 && !v.starts_non_column(0, ADD_NON_COLUMN);
        if let Some(name) = v.name(0).filter(|_| is_column) {
            push_unique(&mut out.added_columns, name);
        }
    }
}

/// `RENAME COLUMN a TO b` is a column rename, `RENAME {INDEX|KEY} …` is harmless, any other
/// RENAME renames the table, which the cut-over cannot do.
fn parse_rename(v: &View<'_>, k: usize, out: &mut AlterStatement) -> Result<(), AlterError> {
    if v.kw(k + 1, "column") {
        if let (true, Some(old), Some(new)) = (v.kw(k + 3, "to"), v.name(k + 2), v.name(k + 4)) {
            push_rename(out, old, new);
        }
        Ok(())
    } else if v.kw_any(k + 1, &["index", "key"]) {
        Ok(())
    } else {
        Err(AlterError::RenameTable)
    }
}

/// `AUTO_INCREMENT [=] N` as a table option; in a column definition no number follows.
fn parse_auto_increment(
    v: &View<'_>,
    k: usize,
    out: &mut AlterStatement,
) -> Result<(), AlterError> {
    let mut j = k + 1;
    if v.kind(j) == Some(Kind::Punct(b'=')) {
        j += 1;
    }
    let Some(value) = v.items.get(j) else {
        return Ok(());
    };
    let text = value.text(v.input);
    if value.kind != Kind::Word || text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Ok(());
    }
    let n = text.parse::<u64>().map_err(|_| AlterError::AutoIncrement {
        value: text.to_string(),
    })?;
    out.auto_increment = Some(n);
    Ok(())
}

fn push_rename(out: &mut AlterStatement, old: String, new: String) {
    // Case-sensitive, as gh-ost: `change c1 C1 int` renames.
    if old != new {
        out.renamed_columns.push((old, new));
    }
}

fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.iter().any(|n| same_name(n, &name)) {
        list.push(name);
    }
}

/// Column names are case-insensitive in MySQL and MariaDB.
fn same_name(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> AlterStatement {
        parse_alter(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
    }

    fn renames(a: &AlterStatement) -> Vec<(&str, &str)> {
        a.renamed_columns
            .iter()
            .map(|(o, n)| (o.as_str(), n.as_str()))
            .collect()
    }

    /// The clause texts of `input`, as gh-ost's tokenizeAlterStatement returns them.
    fn tokens(input: &str) -> Vec<&str> {
        let lexed = lex(input).expect("lexes");
        lexed
            .lexemes
            .split(|l| l.kind == Kind::Comma && l.depth == 0)
            .filter_map(|c| input.get(c.first()?.start..c.last()?.end))
            .collect()
    }

    // --- ported from gh-ost's go/sql/parser_test.go ---

    #[test]
    fn gh_ost_parse_alter_statement() {
        let s = "add column t int, engine=innodb";
        let a = parse(s);
        assert_eq!(a.options, s);
        assert!(a.renamed_columns.is_empty());
        assert_eq!(a.auto_increment, None);
        assert_eq!(a.added_columns, ["t"]);
        assert_eq!(a.explicit_schema, None);
        assert_eq!(a.explicit_table, None);
    }

    #[test]
    fn gh_ost_trivial_rename() {
        let s = "add column t int, change ts ts timestamp, engine=innodb";
        let a = parse(s);
        assert_eq!(a.options, s);
        assert!(a.renamed_columns.is_empty());
        assert_eq!(a.auto_increment, None);
    }

    #[test]
    fn gh_ost_auto_increment() {
        let cases = [
            ("auto_increment=7", 7),
            ("auto_increment = 7", 7),
            ("AUTO_INCREMENT = 71", 71),
            (
                "add column t int, change ts ts timestamp, auto_increment=7 engine=innodb",
                7,
            ),
            (
                "add column t int, change ts ts timestamp, auto_increment =7 engine=innodb",
                7,
            ),
            (
                "add column t int, change ts ts timestamp, AUTO_INCREMENT = 7 engine=innodb",
                7,
            ),
            (
                "add column t int, change ts ts timestamp, engine=innodb auto_increment=73425",
                73425,
            ),
        ];
        for (s, n) in cases {
            let a = parse(s);
            assert_eq!(a.options, s);
            assert_eq!(a.auto_increment, Some(n), "{s}");
        }
    }

    #[test]
    fn gh_ost_trivial_renames() {
        let s = "add column t int, change ts ts timestamp, CHANGE f `f` float, engine=innodb";
        let a = parse(s);
        assert_eq!(a.options, s);
        assert!(a.renamed_columns.is_empty());
        assert_eq!(a.auto_increment, None);
    }

    #[test]
    fn gh_ost_non_trivial_renames() {
        let statements = [
            "add column b bigint, change f fl float, change i count int, engine=innodb",
            "add column b bigint, change column `f` fl float, change `i` `count` int, engine=innodb",
            "add column b bigint, change column `f` fl float, change `i` `count` int, change ts ts timestamp, engine=innodb",
            "change\n\t\t  f fl float,\n\t\t\tCHANGE COLUMN i\n\t\t\t  count int, engine=innodb",
        ];
        for s in statements {
            let a = parse(s);
            assert_eq!(a.auto_increment, None);
            assert_eq!(a.options, s);
            assert_eq!(renames(&a), [("f", "fl"), ("i", "count")], "{s}");
        }
    }

    #[test]
    fn gh_ost_tokenize() {
        let cases: [(&str, &[&str]); 7] = [
            ("add column t int", &["add column t int"]),
            (
                "add column t int, change column i int",
                &["add column t int", "change column i int"],
            ),
            (
                "add column t int, change column i int 'some comment'",
                &["add column t int", "change column i int 'some comment'"],
            ),
            (
                "add column t int, change column i int 'some comment, with comma'",
                &[
                    "add column t int",
                    "change column i int 'some comment, with comma'",
                ],
            ),
            (
                "add column t int, add column d decimal(10,2)",
                &["add column t int", "add column d decimal(10,2)"],
            ),
            (
                "add column t int, add column e enum('a','b','c')",
                &["add column t int", "add column e enum('a','b','c')"],
            ),
            (
                "add column t int(11), add column e enum('a','b','c')",
                &["add column t int(11)", "add column e enum('a','b','c')"],
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(tokens(s), expected, "{s}");
        }
    }

    #[test]
    fn gh_ost_dropped_columns() {
        let a = parse("drop column b");
        assert_eq!(a.dropped_columns, ["b"]);

        let s = "drop column b, drop key c_idx, drop column `d`";
        let a = parse(s);
        assert_eq!(a.options, s);
        assert_eq!(a.dropped_columns, ["b", "d"]);

        let a = parse(
            "drop column b, drop key c_idx, drop column `d`, drop `e`, drop primary key, drop foreign key fk_1",
        );
        assert_eq!(a.dropped_columns, ["b", "d", "e"]);

        let a = parse("drop column b, drop bad statement, add column i int");
        assert_eq!(a.dropped_columns, ["b"]);
        assert_eq!(a.added_columns, ["i"]);
    }

    #[test]
    fn gh_ost_rename_table() {
        assert!(parse_alter("drop column b").is_ok());
        for s in [
            "rename as something_else",
            "drop column b, rename as something_else",
            "engine=innodb rename as something_else",
            "rename as something_else, engine=innodb",
        ] {
            assert_eq!(parse_alter(s), Err(AlterError::RenameTable), "{s}");
        }
    }

    /// (input, schema, table, options, dropped columns)
    type PrefixCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        &'a [&'a str],
    );

    #[test]
    fn gh_ost_explicit_table() {
        let cases: [PrefixCase; 9] = [
            (
                "drop column b",
                None,
                None,
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table tbl drop column b",
                None,
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table `tbl` drop column b",
                None,
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table `scm with spaces`.`tbl` drop column b",
                Some("scm with spaces"),
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table `scm`.`tbl with spaces` drop column b",
                Some("scm"),
                Some("tbl with spaces"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table `scm`.tbl drop column b",
                Some("scm"),
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table scm.`tbl` drop column b",
                Some("scm"),
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table scm.tbl drop column b",
                Some("scm"),
                Some("tbl"),
                "drop column b",
                &["drop column b"],
            ),
            (
                "alter table scm.tbl drop column b, add index idx(i)",
                Some("scm"),
                Some("tbl"),
                "drop column b, add index idx(i)",
                &["drop column b", "add index idx(i)"],
            ),
        ];
        for (s, schema, table, options, clauses) in cases {
            let a = parse(s);
            assert_eq!(a.explicit_schema.as_deref(), schema, "{s}");
            assert_eq!(a.explicit_table.as_deref(), table, "{s}");
            assert_eq!(a.options, options, "{s}");
            assert_eq!(tokens(&a.options), clauses, "{s}");
            assert_eq!(a.dropped_columns, ["b"], "{s}");
            assert!(a.added_columns.is_empty(), "{s}");
        }
    }

    // --- ghost's own cases ---

    #[test]
    fn full_prefix_with_quoted_names() {
        let a = parse("ALTER TABLE `my``db` . `t``1` ADD COLUMN x INT");
        assert_eq!(a.explicit_schema.as_deref(), Some("my`db"));
        assert_eq!(a.explicit_table.as_deref(), Some("t`1"));
        assert_eq!(a.options, "ADD COLUMN x INT");
        assert_eq!(a.added_columns, ["x"]);

        let a = parse("  Alter Table\n`db`.`tbl`\nadd column x int,\n drop column y  ");
        assert_eq!(a.explicit_schema.as_deref(), Some("db"));
        assert_eq!(a.explicit_table.as_deref(), Some("tbl"));
        assert_eq!(a.options, "add column x int,\n drop column y");
        assert_eq!(a.dropped_columns, ["y"]);

        let a = parse("alter table `t`drop column c");
        assert_eq!(a.explicit_table.as_deref(), Some("t"));
        assert_eq!(a.options, "drop column c");
        assert_eq!(a.dropped_columns, ["c"]);
    }

    #[test]
    fn bad_prefix_refused() {
        for s in [
            "alter table",
            "alter table t",
            "ALTER TABLE db.t  ",
            "alter table db.",
            "alter table \"t\" add column x int",
            "alter table 'db'.t add column x int",
        ] {
            assert!(
                matches!(parse_alter(s), Err(AlterError::BadPrefix { .. })),
                "{s}: {:?}",
                parse_alter(s)
            );
        }
    }

    #[test]
    fn alter_column_is_an_option_not_a_prefix() {
        let a = parse("alter column c set default 1");
        assert_eq!(a.explicit_table, None);
        assert_eq!(a.options, "alter column c set default 1");

        // gh-ost's `drop ... $` regexp took `default` for a dropped column here.
        let a = parse("alter column c drop default");
        assert!(a.dropped_columns.is_empty());
    }

    #[test]
    fn renames_via_change_and_rename_column() {
        let a = parse("change column c2 c3 int not null");
        assert_eq!(renames(&a), [("c2", "c3")]);

        let a = parse("RENAME COLUMN a TO b, rename column `x y` to `z`");
        assert_eq!(renames(&a), [("a", "b"), ("x y", "z")]);

        // Like gh-ost, a change of case is a rename.
        let a = parse("change c1 C1 int");
        assert_eq!(renames(&a), [("c1", "C1")]);

        let a = parse("change c c int");
        assert!(a.renamed_columns.is_empty());

        let a = parse("rename column a to a");
        assert!(a.renamed_columns.is_empty());

        let a = parse("change column if exists a b int");
        assert_eq!(renames(&a), [("a", "b")]);

        let a =
            parse("change column c2 c2a int not null, change column c3 c3 int not null after id");
        assert_eq!(renames(&a), [("c2", "c2a")]);
    }

    #[test]
    fn rename_index_or_key_is_fine() {
        let a = parse("rename index a to b, RENAME KEY c TO d");
        assert!(a.renamed_columns.is_empty());
    }

    #[test]
    fn table_rename_refused() {
        for s in [
            "rename to x",
            "rename as x",
            "RENAME x",
            "add column c int, rename to t2",
            "engine=innodb RENAME TO t2",
            "alter table t rename to t2",
        ] {
            assert_eq!(parse_alter(s), Err(AlterError::RenameTable), "{s}");
        }
        let message = AlterError::RenameTable.to_string();
        assert!(message.contains("alter statement seems to RENAME the table"));
    }

    #[test]
    fn drop_column_variants() {
        for s in [
            "drop column x",
            "drop x",
            "DROP `x`",
            "drop column if exists x",
            "drop if exists x",
            "DROP COLUMN x RESTRICT",
            "drop x cascade",
        ] {
            assert_eq!(parse(s).dropped_columns, ["x"], "{s}");
        }
        assert_eq!(parse("drop `index`").dropped_columns, ["index"]);
        assert_eq!(parse("drop column `a b`").dropped_columns, ["a b"]);
    }

    #[test]
    fn drop_of_non_columns_is_not_a_dropped_column() {
        for s in [
            "drop index i",
            "drop key k",
            "drop primary key",
            "DROP FOREIGN KEY fk",
            "drop constraint c",
            "drop check c",
            "drop partition p1",
            "drop index if exists i",
            "drop foreign key if exists fk",
            "drop system versioning",
            "drop period for system_time",
        ] {
            assert!(parse(s).dropped_columns.is_empty(), "{s}");
        }
    }

    #[test]
    fn change_inside_names_comments_and_strings_is_no_rename() {
        // gh-ost's rename-none-column and rename-none-comment.
        let a = parse(
            "add column exchange double comment 'exchange rate used for pay in your own currency'",
        );
        assert!(a.renamed_columns.is_empty());
        assert_eq!(a.added_columns, ["exchange"]);

        let a = parse(
            "add column exchange_rate double comment 'change rate used for pay in your own currency'",
        );
        assert!(a.renamed_columns.is_empty());
        assert_eq!(a.added_columns, ["exchange_rate"]);

        let a = parse("modify c int comment 'rename to x, drop column c, change a b int'");
        assert!(a.renamed_columns.is_empty());
        assert!(a.dropped_columns.is_empty());

        let a = parse("modify c int comment \"change a b int\"");
        assert!(a.renamed_columns.is_empty());

        let a = parse("add column c int /* change a b int, rename to t */");
        assert!(a.renamed_columns.is_empty());
        assert_eq!(
            a.options,
            "add column c int /* change a b int, rename to t */"
        );

        let a = parse("add column c int -- rename to t, it's\n, add column d int # drop e\n");
        assert_eq!(a.added_columns, ["c", "d"]);
        assert!(a.dropped_columns.is_empty());
    }

    #[test]
    fn add_column_variants() {
        // gh-ost's localtests add a column named `index`.
        assert_eq!(
            parse("add column `index` int unsigned").added_columns,
            ["index"]
        );

        let a = parse(
            "add x int, add column if not exists y int, add column (p int, q decimal(10,2), r enum('a,b','c')), ADD (s int)",
        );
        assert_eq!(a.added_columns, ["x", "y", "p", "q", "r", "s"]);

        let a = parse(
            "add index i (a), add unique key u (b), add primary key (id), \
             add constraint fk foreign key (a) references t (id), add fulltext f (t), \
             add spatial index g (p), add check (a > 0), \
             add partition (partition p3 values less than (30))",
        );
        assert!(a.added_columns.is_empty());
        assert!(a.renamed_columns.is_empty());
        assert!(a.dropped_columns.is_empty());

        let a = parse("add column id int auto_increment primary key");
        assert_eq!(a.added_columns, ["id"]);
        assert_eq!(a.auto_increment, None);

        let a = parse("add column sum_ab int as (a + b) virtual");
        assert_eq!(a.added_columns, ["sum_ab"]);
    }

    #[test]
    fn commas_inside_parentheses_and_strings() {
        let s = "add column e enum('a,b','c'), add column d decimal(10,2), \
                 add column s varchar(10) default 'x, y', \
                 add column q varchar(9) default 'it''s, ok', \
                 add column r varchar(9) default 'a\\', b', \
                 add column g int as (coalesce(a, (b + 1))) stored";
        assert_eq!(tokens(s).len(), 6);
        let a = parse(s);
        assert_eq!(a.added_columns, ["e", "d", "s", "q", "r", "g"]);
        assert_eq!(a.options, s);
    }

    #[test]
    fn empty_refused() {
        for s in [
            "",
            "   \n\t",
            "/* only a comment */",
            "-- nothing\n",
            ";",
            " ; ;",
        ] {
            assert_eq!(parse_alter(s), Err(AlterError::Empty), "{s:?}");
        }
    }

    #[test]
    fn unbalanced_refused() {
        for s in [
            "add column e enum('a",
            "add column d decimal(10,2",
            "drop column x)",
            "add column `x int",
            "add column c int /* open",
            "add column c int comment \"x",
            "add column c int comment 'x\\'",
            "add column d decimal(10,2; drop table t",
            "alter table `t add column c int",
        ] {
            assert!(
                matches!(parse_alter(s), Err(AlterError::Unbalanced { .. })),
                "{s}: {:?}",
                parse_alter(s)
            );
        }
        assert_eq!(
            parse_alter("drop column x)"),
            Err(AlterError::Unbalanced {
                what: "an unmatched ')'",
                at: 13
            })
        );
        assert_eq!(
            parse_alter("add column d decimal(10,2"),
            Err(AlterError::Unbalanced {
                what: "an unclosed '('",
                at: 20
            })
        );
    }

    #[test]
    fn statement_terminators() {
        assert_eq!(parse("add column c int;").options, "add column c int");
        assert_eq!(
            parse("add column c int ; -- done").options,
            "add column c int"
        );
        assert_eq!(
            parse("add column c int -- trailing").options,
            "add column c int"
        );
        assert_eq!(
            parse_alter("add column c int; drop table t"),
            Err(AlterError::MultipleStatements { at: 18 })
        );
    }

    #[test]
    fn auto_increment_forms() {
        assert_eq!(parse("AUTO_INCREMENT 42").auto_increment, Some(42));
        assert_eq!(
            parse("engine=innodb, auto_increment=18446744073709551615").auto_increment,
            Some(u64::MAX)
        );
        assert_eq!(
            parse_alter("auto_increment=99999999999999999999"),
            Err(AlterError::AutoIncrement {
                value: "99999999999999999999".to_string()
            })
        );
        assert_eq!(
            parse("modify id bigint auto_increment").auto_increment,
            None
        );
    }

    #[test]
    fn ghost_name_of_follows_renames_and_drops() {
        let a = parse(
            "change column c2 c3 int, drop column d, rename column e to E2, \
             drop column c1, add column c1 int not null default 47",
        );
        assert_eq!(a.ghost_name_of("c2").as_deref(), Some("c3"));
        assert_eq!(a.ghost_name_of("C2").as_deref(), Some("c3"));
        assert_eq!(a.ghost_name_of("d"), None);
        assert_eq!(a.ghost_name_of("D"), None);
        assert_eq!(a.ghost_name_of("e").as_deref(), Some("E2"));
        // Dropped then added back: a new column, nothing to copy into it.
        assert_eq!(a.ghost_name_of("c1"), None);
        assert_eq!(a.ghost_name_of("x").as_deref(), Some("x"));
        assert_eq!(a.ghost_name_of("c3").as_deref(), Some("c3"));

        let a = parse("rename column a to b, rename column b to a");
        assert_eq!(a.ghost_name_of("a").as_deref(), Some("b"));
        assert_eq!(a.ghost_name_of("b").as_deref(), Some("a"));
    }

    #[test]
    fn error_messages_are_one_line_with_a_fix() {
        let errors = [
            AlterError::Empty,
            AlterError::Unbalanced {
                what: "an unclosed '('",
                at: 3,
            },
            AlterError::RenameTable,
            AlterError::BadPrefix {
                problem: "no table name follows",
            },
            AlterError::MultipleStatements { at: 4 },
            AlterError::AutoIncrement {
                value: "1".to_string(),
            },
        ];
        for e in errors {
            let message = e.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with("--alter"), "{message}");
            assert!(message.contains(": "), "{message}");
        }
    }
}
