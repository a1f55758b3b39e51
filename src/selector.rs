//! Kubernetes label and field selectors, parsed and matched as kube-apiserver does.
//!
//! [`LabelSelector`] follows `k8s.io/apimachinery/pkg/labels` (`labels.Parse`): comma-separated
//! requirements `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
//! `key`, `!key`, and the integer comparisons `key>5` and `key<5`. Whitespace (space, tab, CR,
//! LF) may surround every token. Keys must be qualified names and values label values (see
//! [`validate_label_key`] and [`validate_label_value`]). Requirements are kept sorted by key and
//! each requirement's values sorted and deduplicated, so the [`Display`](fmt::Display) form is
//! canonical.
//!
//! [`FieldSelector`] follows `k8s.io/apimachinery/pkg/fields` (`fields.ParseSelector` followed by
//! the resource's field label conversion): comma-separated `field=value`, `field==value` and
//! `field!=value` terms with no surrounding whitespace, where a value escapes `\`, `,` and `=`
//! with a backslash (`fields.EscapeValue`).
//!
//! Error messages are kube-apiserver's own, word for word, so that a client sees the same 400
//! `Status` message from watchcache as from kube-apiserver.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a selector (or a label) was rejected; the message is what a client sees in a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

// ---------------------------------------------------------------------------------------------
// Label key and value validation (k8s.io/apimachinery/pkg/util/validation).
// ---------------------------------------------------------------------------------------------

/// The regular expression kube-apiserver quotes for the name part of a qualified name.
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
/// The explanation kube-apiserver gives for an invalid qualified name.
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";
/// The longest name part of a qualified name.
const QUALIFIED_NAME_MAX_LENGTH: usize = 63;

/// The regular expression kube-apiserver quotes for a label value.
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
/// The explanation kube-apiserver gives for an invalid label value.
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// The longest label value.
const LABEL_VALUE_MAX_LENGTH: usize = 63;

/// The regular expression kube-apiserver quotes for a DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
/// The explanation kube-apiserver gives for an invalid DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
/// The longest DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

/// Builds the message of a failed regular expression check, as `validation.RegexError` does.
fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = String::from(msg);
    if examples.is_empty() {
        out.push_str(&format!(" (regex used for validation is '{regex}')"));
        return out;
    }
    out.push_str(" (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

/// Builds the message of a failed length check, as `validation.MaxLenError` does.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Tells whether `s` matches `QUALIFIED_NAME_FMT`: non-empty, alphanumeric at both ends, and
/// alphanumeric, `-`, `_` or `.` inside.
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Tells whether `s` matches `DNS1123_SUBDOMAIN_FMT`: dot-separated non-empty labels of lower
/// case alphanumerics and `-`, each starting and ending with an alphanumeric.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

/// The problems `validation.IsQualifiedName` finds with `value`, in its order and words.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
                    errs.push(format!("prefix part {}", max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH)));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS1123_SUBDOMAIN_ERR_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX_LENGTH)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// The problems `validation.IsValidLabelValue` finds with `value`, in its order and words.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(LABEL_VALUE_ERR_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// Checks that `key` is a valid label key: a qualified name, that is an optional DNS-1123
/// subdomain prefix of at most 253 characters and a `/`, then a name of at most 63 characters
/// made of `[-._A-Za-z0-9]` with an alphanumeric at both ends.
///
/// The error holds kube-apiserver's explanation (the problems joined with `; `) without the
/// field path or the offending key, which the caller adds as its context requires.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(errs.join("; ")))
    }
}

/// Checks that `value` is a valid label value: empty, or at most 63 characters made of
/// `[-._A-Za-z0-9]` with an alphanumeric at both ends.
///
/// The error holds kube-apiserver's explanation (the problems joined with `; `) without the
/// field path or the offending value, which the caller adds as its context requires.
pub fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    let errs = label_value_errors(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(errs.join("; ")))
    }
}

/// Quotes `s` as Go's `%q` verb does, which kube-apiserver uses for the value in its messages.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats a `field.Invalid` error as `field.Error.Error()` does: `<path>: Invalid value:
/// "<value>": <detail>`.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

/// Joins several errors as `utilerrors.NewAggregate(...).Error()` does: one error as itself,
/// several distinct ones as `[e1, e2]`.
fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut distinct = Vec::new();
    for err in errs {
        if seen.insert(err.clone()) {
            distinct.push(err);
        }
    }
    match distinct.len() {
        0 => None,
        1 => distinct.pop(),
        _ => Some(format!("[{}]", distinct.join(", "))),
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors (k8s.io/apimachinery/pkg/labels/selector.go).

/// A set of labels a [`LabelSelector`] can match (kube's `labels.Labels`).
pub trait Labels {
    /// The value of the label `key`, if the set has it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}
// ---------------------------------------------------------------------------------------------

/// How a label requirement relates its key to its values (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operator {
    /// `key=value`.
    Equals,
    /// `key==value`, the same test as `Equals` but kept apart to print back as written.
    DoubleEquals,
    /// `key!=value`.
    NotEquals,
    /// `key in (values)`.
    In,
    /// `key notin (values)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>value`, comparing integers.
    GreaterThan,
    /// `key<value`, comparing integers.
    LessThan,
}

/// One condition of a label selector: a key, an operator and the sorted, distinct values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement after the checks of `labels.NewRequirement`, with its messages.
    /// `values` must already be sorted and distinct.
    fn new(key: String, operator: Operator, values: Vec<String>) -> Result<Requirement, SelectorError> {
        let mut errs = Vec::new();
        if let Err(e) = validate_label_key(&key) {
            errs.push(invalid("key", &key, &e.0));
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push("values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty".to_string());
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {}: exact-match compatibility requires one single value",
                        go_string_slice(&values)
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(format!(
                        "values: Invalid value: {}: values set must be empty for exists and does not exist",
                        go_string_slice(&values)
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        go_string_slice(&values)
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            value,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, value) in values.iter().enumerate() {
            if let Err(e) = validate_label_value(value) {
                errs.push(invalid(&format!("values[{i}][{key}]"), value, &e.0));
            }
        }
        match aggregate(errs) {
            Some(message) => Err(SelectorError(message)),
            None => Ok(Requirement { key, operator, values }),
        }
    }

    /// Tells whether `labels` satisfy this requirement (`Requirement.Matches`).
    fn matches(&self, labels: &(impl Labels + ?Sized)) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), [want]) = (value.map(|v| v.parse::<i64>()), self.values.as_slice())
                else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// Formats a string slice as Go's `%#v` does, for the messages about a wrong number of values.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            Operator::Exists => return f.write_str(&self.key),
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::In => return write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => return write!(f, "{} notin ({})", self.key, self.values.join(",")),
        };
        write!(f, "{}{op}{}", self.key, self.values.join(","))
    }
}

/// A parsed label selector: the conjunction of its requirements.
///
/// Two selectors are equal when they hold the same requirements in any order; `=` and `==` are
/// kept apart (as kube does) so that the text form prints back as written.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    /// The requirements, sorted by key (stably, so equal keys keep their written order).
    requirements: Vec<Requirement>,
}

impl PartialEq for LabelSelector {
    fn eq(&self, other: &LabelSelector) -> bool {
        let mut a = self.requirements.clone();
        let mut b = other.requirements.clone();
        a.sort();
        b.sort();
        a == b
    }
}

impl Eq for LabelSelector {}

impl LabelSelector {
    /// Parses a label selector as `labels.Parse` does; the empty string (or only whitespace)
    /// selects everything.
    ///
    /// Beyond the syntax, every key must pass [`validate_label_key`] and every value
    /// [`validate_label_value`]; the values of `>` and `<` must also be 64-bit integers. Note that,
    /// as in kube, `key in ()` is accepted and means `key in ("")`, since the parser reads an
    /// empty list as one empty value.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser { items: Lexer::new(text).scan(), position: 0 };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// The selector that matches every set of labels.
    pub fn everything() -> LabelSelector {
        LabelSelector { requirements: Vec::new() }
    }

    /// Tells whether this selector matches every set of labels (it has no requirement).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Tells whether `labels` satisfy every requirement of this selector.
    pub fn matches(&self, labels: &(impl Labels + ?Sized)) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// Writes the canonical text form (kube's `Selector.String()`): requirements sorted by key,
    /// values sorted, joined with `,`; [`LabelSelector::parse`] reads it back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// A token of the label selector syntax (`labels.Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// Maps a literal to its token (`labels.string2token`); identifiers are not in the table.
fn literal_token(literal: &[u8]) -> Option<Token> {
    Some(match literal {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

/// Tells whether `b` separates tokens as whitespace.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Tells whether `b` can start an operator.
fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The label selector lexer (`labels.Lexer`). It works on bytes and, as kube's, reads a NUL
/// byte like the end of the input: where a token would start it ends the input, and after a
/// word or an operator it ends that token and is skipped.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer { s: text.as_bytes(), pos: 0 }
    }

    /// Returns the next byte and moves past it, or 0 at the end of the input.
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    /// Steps back over the byte last read.
    fn unread(&mut self) {
        self.pos -= 1;
    }

    /// Scans an identifier, or the keyword `in` or `notin`.
    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let mut buffer = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
        }
        let token = literal_token(&buffer).unwrap_or(Token::Identifier);
        // The buffer only ever stops at ASCII bytes, so it holds whole UTF-8 characters.
        (token, String::from_utf8_lossy(&buffer).into_owned())
    }

    /// Scans the longest operator made of special symbols.
    fn scan_special_symbol(&mut self) -> (Token, String) {
        let mut buffer = Vec::new();
        let mut last: Option<(Token, usize)> = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
            if let Some(token) = literal_token(&buffer) {
                last = Some((token, buffer.len()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        // Every special symbol is a token on its own, so `last` is always set here.
        let (token, len) = last.unwrap_or((Token::EndOfString, 0));
        (token, String::from_utf8_lossy(&buffer[..len]).into_owned())
    }

    /// Returns the next token and its literal, skipping whitespace before it.
    fn lex(&mut self) -> (Token, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special_symbol(ch) {
            self.scan_special_symbol()
        } else {
            self.scan_id_or_keyword()
        }
    }

    /// Scans the whole input, up to and including the end-of-string token.
    fn scan(mut self) -> Vec<(Token, String)> {
        let mut items = Vec::new();
        loop {
            let item = self.lex();
            let end = item.0 == Token::EndOfString;
            items.push(item);
            if end {
                return items;
            }
        }
    }
}

/// Where the parser is: `in` and `notin` are operators after a key but plain values elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// The label selector parser (`labels.Parser`), a recursive descent over the scanned tokens.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

/// The binary operators as kube lists them in "expected" messages.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    /// Maps keywords to identifiers in the values context.
    fn in_context(token: Token, context: Context) -> Token {
        match token {
            Token::In | Token::NotIn if context == Context::Values => Token::Identifier,
            token => token,
        }
    }

    /// Returns the current token without moving past it.
    fn lookahead(&self, context: Context) -> (Token, String) {
        let index = self.position.min(self.items.len() - 1);
        let (token, literal) = &self.items[index];
        (Parser::in_context(*token, context), literal.clone())
    }

    /// Returns the current token and moves past it (never past the end-of-string token).
    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.lookahead(context);
        self.position = (self.position + 1).min(self.items.len() - 1);
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {}", e.0)))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError(format!(
                                    "found '{next_literal}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(operator @ (Operator::Exists | Operator::DoesNotExist)) = operator {
            return Requirement::new(key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, operator, values.into_iter().collect())
    }

    /// Reads `[!] KEY`; infers `Exists` when the key ends the requirement.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), SelectorError> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(SelectorError(format!("found '{literal}', expected: identifier")));
        }
        if let Err(e) = validate_label_key(&literal) {
            return Err(SelectorError(invalid("<nil>", &literal, &e.0)));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(SelectorError(format!("found '{literal}', expected: {BINARY_OPERATORS}"))),
        })
    }

    /// Reads `( values )`; an empty list is one empty value.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(SelectorError(format!("found '{literal}' expected: '('")));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return Err(SelectorError(format!("found '{literal}', expected: ')'")));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(SelectorError(format!("found '{literal}', expected: ',', ')' or identifier"))),
        }
    }

    /// Reads a comma-separated list of possibly empty values, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let mut values = BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal);
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => {
                            return Err(SelectorError(format!(
                                "found '{next_literal}', expected: ',' or ')'"
                            )))
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => return Err(SelectorError(format!("found '{literal}', expected: ',', or identifier"))),
            }
        }
    }

    /// Reads the one value of `=`, `==`, `!=`, `>` or `<`; none at all is the empty value.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(BTreeSet::from([literal]))
        } else {
            Err(SelectorError(format!("found '{literal}', expected: identifier")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors (k8s.io/apimachinery/pkg/fields/selector.go).
// ---------------------------------------------------------------------------------------------

/// Where a field selector reads field values from (e.g. metadata.name, spec.nodeName).
pub trait FieldSource {
    /// The value of the field at `path` (a dotted path such as `metadata.name`), or `None` when
    /// the object has no such field; a missing field matches as the empty string.
    fn field(&self, path: &str) -> Option<&str>;
}

/// One term of a field selector: `field=value` (also written `==`) or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FieldTerm {
    field: String,
    not_equal: bool,
    value: String,
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.not_equal { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A parsed field selector: the conjunction of its terms.
///
/// Two selectors are equal when they hold the same terms in any order (`=` and `==` are the same
/// term).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    /// The terms, in the order of their sorted source text, as kube keeps them.
    terms: Vec<FieldTerm>,
}

impl PartialEq for FieldSelector {
    fn eq(&self, other: &FieldSelector) -> bool {
        let mut a = self.terms.clone();
        let mut b = other.terms.clone();
        a.sort();
        b.sort();
        a == b
    }
}

impl Eq for FieldSelector {}

/// The field selector operators, longest first at a given position (`fields.termOperators`).
const FIELD_OPERATORS: [&str; 3] = ["!=", "==", "="];

/// Splits a field selector at the commas that are not escaped by a backslash; the terms keep
/// their escapes (`fields.splitTerms`).
fn split_field_terms(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in text.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&text[start..i]);
            start = i + 1;
        }
    }
    terms.push(&text[start..]);
    terms
}

/// Splits a term at the first operator (`fields.splitTerm`): the field name cannot escape
/// anything, so the leftmost operator wins. Returns the field, the operator and the raw value.
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in FIELD_OPERATORS {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// Escapes a field selector value as `fields.EscapeValue` does: `\` becomes `\\`, `,` becomes
/// `\,` and `=` becomes `\=`.
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_field_value`] as `fields.UnescapeValue` does, rejecting an unknown escape, a
/// trailing backslash, and an unescaped `,` or `=`.
pub fn unescape_field_value(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut in_slash = false;
    for c in value.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError(format!("invalid field selector: invalid escape sequence: \\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, that is as its number.
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )))
            }
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError("invalid field selector: invalid escape sequence: \\".to_string()));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a field selector as `fields.ParseSelector` does, then checks every field against
    /// `allowed`, the field paths this resource supports, as the resource's field label conversion
    /// does in kube-apiserver; the empty string selects everything.
    ///
    /// As in kube, terms are processed in sorted order of their text, empty terms are skipped,
    /// and no whitespace is trimmed (`metadata.name = x` names the field `metadata.name `).
    pub fn parse(text: &str, allowed: &[&str]) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_field_terms(text);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_field_term(part) else {
                return Err(SelectorError(format!("invalid selector: '{text}'; can't understand '{part}'")));
            };
            let value = unescape_field_value(raw)?;
            terms.push(FieldTerm { field: field.to_string(), not_equal: op == "!=", value });
        }
        if let Some(term) = terms.iter().find(|t| !allowed.contains(&t.field.as_str())) {
            return Err(SelectorError(format!("field label not supported: {}", term.field)));
        }
        Ok(FieldSelector { terms })
    }

    /// The selector that matches every object.
    pub fn everything() -> FieldSelector {
        FieldSelector { terms: Vec::new() }
    }

    /// Tells whether this selector matches every object (it has no term).
    pub fn is_everything(&self) -> bool {
        self.terms.is_empty()
    }

    /// Tells whether the object behind `source` satisfies every term; a missing field has the
    /// value `""`.
    pub fn matches(&self, source: &dyn FieldSource) -> bool {
        self.terms.iter().all(|t| (source.field(&t.field).unwrap_or("") == t.value) != t.not_equal)
    }

    /// The value `field` must equal (from `field=value` or `field==value`), if the selector
    /// requires one: used to pick an index bucket.
    ///
    /// As kube's `RequiresExactMatch`, this is the first such term; a selector that requires two
    /// different values matches nothing, whichever is returned.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| !t.not_equal && t.field == field).map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// Writes the text form (kube's `Selector.String()`): `field=value` or `field!=value` terms
    /// with escaped values, joined with `,`; [`FieldSelector::parse`] reads it back to an equal
    /// selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{term}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a label set from pairs.
    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Parses a label selector that must be valid.
    fn sel(text: &str) -> LabelSelector {
        LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    /// Parses a label selector that must be invalid and returns the message.
    fn sel_err(text: &str) -> String {
        match LabelSelector::parse(text) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e.0,
        }
    }

    /// A field source over a map, for the tests.
    struct Fields(BTreeMap<String, String>);

    impl FieldSource for Fields {
        fn field(&self, path: &str) -> Option<&str> {
            self.0.get(path).map(String::as_str)
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(labels(pairs))
    }

    const ALLOWED: &[&str] = &["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"];

    fn fsel(text: &str) -> FieldSelector {
        FieldSelector::parse(text, ALLOWED).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn fsel_err(text: &str) -> String {
        match FieldSelector::parse(text, ALLOWED) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e.0,
        }
    }

    const NAME_PART_REGEX_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or \
        '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
        '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    const VALUE_REGEX_ERR: &str = "a valid label must be an empty string or consist of alphanumeric \
        characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
        'MyValue',  or 'my_value',  or '12345', regex used for validation is \
        '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    // ----- Label keys and values. -----

    #[test]
    fn valid_label_keys() {
        for key in [
            "a",
            "A",
            "1",
            "app",
            "my.name",
            "123-abc",
            "a_b",
            "MyName",
            "example.com/MyName",
            "app.kubernetes.io/name",
            "kubernetes.io/a",
            "a-b.c/d",
            &"a".repeat(63),
            &format!("{}/a", ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".")),
        ] {
            assert_eq!(validate_label_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn invalid_label_keys() {
        assert_eq!(
            validate_label_key("").unwrap_err().0,
            format!("name part must be non-empty; {NAME_PART_REGEX_ERR}")
        );
        assert_eq!(validate_label_key("-a").unwrap_err().0, NAME_PART_REGEX_ERR);
        assert_eq!(validate_label_key("a-").unwrap_err().0, NAME_PART_REGEX_ERR);
        assert_eq!(validate_label_key("a b").unwrap_err().0, NAME_PART_REGEX_ERR);
        assert_eq!(validate_label_key("é").unwrap_err().0, NAME_PART_REGEX_ERR);
        assert_eq!(
            validate_label_key(&"a".repeat(64)).unwrap_err().0,
            "name part must be no more than 63 characters"
        );
        assert_eq!(validate_label_key("/a").unwrap_err().0, "prefix part must be non-empty");
        assert_eq!(
            validate_label_key("a/").unwrap_err().0,
            format!("name part must be non-empty; {NAME_PART_REGEX_ERR}")
        );
        let dns_err = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
            characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
            'example.com', regex used for validation is \
            '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        for prefix in ["Example.com", "a..b", ".a", "a.", "-a", "a_b"] {
            assert_eq!(validate_label_key(&format!("{prefix}/a")).unwrap_err().0, dns_err, "{prefix}");
        }
        // A long prefix of valid characters fails on its length alone.
        let long_prefix = "a".repeat(254);
        assert_eq!(
            validate_label_key(&format!("{long_prefix}/a")).unwrap_err().0,
            "prefix part must be no more than 253 characters"
        );
        assert_eq!(
            validate_label_key(&format!("-{long_prefix}/a")).unwrap_err().0,
            format!("prefix part must be no more than 253 characters; {dns_err}")
        );
        assert!(validate_label_key("a/b/c").unwrap_err().0.starts_with(
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex \
             used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS \
             subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
    }

    #[test]
    fn label_values() {
        for value in ["", "a", "1", "a.b-c_d", "MyValue", &"v".repeat(63)] {
            assert_eq!(validate_label_value(value), Ok(()), "{value}");
        }
        for value in ["-a", "a-", ".", "a b", "a/b", "é"] {
            assert_eq!(validate_label_value(value).unwrap_err().0, VALUE_REGEX_ERR, "{value}");
        }
        assert_eq!(
            validate_label_value(&"v".repeat(64)).unwrap_err().0,
            "must be no more than 63 characters"
        );
        assert_eq!(
            validate_label_value(&format!("-{}", "v".repeat(63))).unwrap_err().0,
            format!("must be no more than 63 characters; {VALUE_REGEX_ERR}")
        );
    }

    // ----- Label selector matching. -----

    #[test]
    fn empty_label_selector_matches_everything() {
        for text in ["", " ", "\t\r\n "] {
            let s = sel(text);
            assert!(s.is_everything());
            assert_eq!(s, LabelSelector::everything());
            assert!(s.matches(&labels(&[])));
            assert!(s.matches(&labels(&[("a", "b")])));
            assert_eq!(s.to_string(), "");
        }
        assert!(LabelSelector::everything().matches(&labels(&[])));
        assert!(!sel("a").is_everything());
    }

    #[test]
    fn equality_operators() {
        for text in ["app=web", "app==web"] {
            let s = sel(text);
            assert!(s.matches(&labels(&[("app", "web")])), "{text}");
            assert!(s.matches(&labels(&[("app", "web"), ("x", "y")])), "{text}");
            assert!(!s.matches(&labels(&[("app", "db")])), "{text}");
            assert!(!s.matches(&labels(&[])), "{text}");
            assert!(!s.matches(&labels(&[("App", "web")])), "{text}");
        }
        let s = sel("app!=web");
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "db")])));
        assert!(s.matches(&labels(&[])), "!= matches objects without the key");
    }

    #[test]
    fn empty_values() {
        let s = sel("app=");
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("app", "x")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("app!=");
        assert!(!s.matches(&labels(&[("app", "")])));
        assert!(s.matches(&labels(&[("app", "x")])));
        assert!(s.matches(&labels(&[])));
        let s = sel("app==,b");
        assert_eq!(s.to_string(), "app==,b");
        assert!(s.matches(&labels(&[("app", ""), ("b", "1")])));
    }

    #[test]
    fn set_operators() {
        let s = sel("env in (prod, staging)");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "staging")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("env notin (prod,staging)");
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "staging")])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(s.matches(&labels(&[])), "notin matches objects without the key");
    }

    #[test]
    fn set_with_empty_values() {
        // As in kube: "()" is the one empty value, and commas around nothing add the empty value.
        let s = sel("a in ()");
        assert_eq!(s.to_string(), "a in ()");
        assert!(s.matches(&labels(&[("a", "")])));
        assert!(!s.matches(&labels(&[("a", "x")])));
        assert_eq!(sel("a in (,x)").to_string(), "a in (,x)");
        assert_eq!(sel("a in (x,)").to_string(), "a in (,x)");
        assert_eq!(sel("a in (x,,y)").to_string(), "a in (,x,y)");
        assert_eq!(sel("a in (,)").to_string(), "a in ()");
        assert!(sel("a notin (,x)").matches(&labels(&[("a", "y")])));
        assert!(!sel("a notin (,x)").matches(&labels(&[("a", "")])));
    }

    #[test]
    fn existence_operators() {
        let s = sel("app");
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(s.matches(&labels(&[("app", "x")])));
        assert!(!s.matches(&labels(&[("other", "x")])));
        let s = sel("!app");
        assert!(!s.matches(&labels(&[("app", "")])));
        assert!(s.matches(&labels(&[("other", "x")])));
        assert!(s.matches(&labels(&[])));
        assert_eq!(sel("! app").to_string(), "!app");
    }

    #[test]
    fn integer_comparisons() {
        let s = sel("replicas>3");
        assert!(s.matches(&labels(&[("replicas", "4")])));
        assert!(!s.matches(&labels(&[("replicas", "3")])));
        assert!(!s.matches(&labels(&[("replicas", "x")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("replicas < 3");
        assert!(s.matches(&labels(&[("replicas", "2")])));
        assert!(s.matches(&labels(&[("replicas", "-2")])));
        assert!(!s.matches(&labels(&[("replicas", "3")])));
        assert!(!s.matches(&labels(&[])));
        assert_eq!(s.to_string(), "replicas<3");
    }

    #[test]
    fn conjunction() {
        let s = sel("app=web,env in (prod),!canary,tier");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("tier", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod"), ("tier", "1"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("env", "prod"), ("tier", "1")])));
    }

    #[test]
    fn keywords_as_keys_and_values() {
        let s = sel("in=notin");
        assert!(s.matches(&labels(&[("in", "notin")])));
        let s = sel("x in (in, notin)");
        assert!(s.matches(&labels(&[("x", "in")])));
        assert!(s.matches(&labels(&[("x", "notin")])));
        assert_eq!(s.to_string(), "x in (in,notin)");
        assert!(sel("notin").matches(&labels(&[("notin", "")])));
        assert!(sel("x notin (in)").matches(&labels(&[("x", "out")])));
    }

    #[test]
    fn whitespace() {
        let canonical = sel("a=b,c!=d,e in (f,g),h notin (i),j,!k");
        for text in [
            " a = b , c != d , e in ( f , g ) , h notin ( i ) , j , ! k ",
            "a=b,c!=d,e in(f,g),h notin(i),j,!k",
            "\ta\t=\tb\n,\r\nc!=d,e   in   (f,g),h notin (i),j,!k\n",
        ] {
            assert_eq!(sel(text), canonical, "{text:?}");
            assert_eq!(sel(text).to_string(), "a=b,c!=d,e in (f,g),h notin (i),j,!k");
        }
        // Whitespace never joins two words into one key or value.
        assert_eq!(
            sel_err("a b"),
            format!("unable to parse requirement: found 'b', expected: {BINARY_OPERATORS}")
        );
        assert_eq!(sel_err("a=b c"), "found 'c', expected: ',' or 'end of string'");
    }

    #[test]
    fn canonical_form_sorts_keys_and_values() {
        let s = sel("z=1,a in (c,b,a,b),m");
        assert_eq!(s.to_string(), "a in (a,b,c),m,z=1");
        assert_eq!(sel("b,a==1").to_string(), "a==1,b");
        assert_eq!(sel("x in (a)").to_string(), "x in (a)");
    }

    #[test]
    fn label_display_round_trip() {
        for text in [
            "a=b",
            "a==b",
            "a!=b",
            "a=",
            "a!=",
            "a in (x,y)",
            "a notin (x)",
            "a in ()",
            "a notin (,x)",
            "a",
            "!a",
            "a>1",
            "a<10",
            "example.com/app=web,!example.com/canary,b notin (1,2,3)",
            "k=1,k=2,k!=3",
            "x in (in,notin),in==notin",
        ] {
            let s = sel(text);
            let again = sel(&s.to_string());
            assert_eq!(again, s, "{text} -> {s}");
            assert_eq!(again.to_string(), s.to_string());
        }
    }

    #[test]
    fn label_selector_equality_ignores_order() {
        assert_eq!(sel("a=1,a=2"), sel("a=2,a=1"));
        assert_ne!(sel("a=1"), sel("a==1"));
        assert_ne!(sel("a=1"), sel("a=2"));
        assert_eq!(sel("a in (1,2)"), sel("a in (2,1,1)"));
    }

    // ----- Label selector errors. -----

    #[test]
    fn label_syntax_errors() {
        let cases: &[(&str, String)] = &[
            (",", "found ',', expected: !, identifier, or 'end of string'".into()),
            ("=a", "found '=', expected: !, identifier, or 'end of string'".into()),
            ("(a)", "found '(', expected: !, identifier, or 'end of string'".into()),
            ("a,", "found '', expected: identifier after ','".into()),
            ("a,,b", "found ',', expected: identifier after ','".into()),
            ("a,=b", "found '=', expected: identifier after ','".into()),
            ("a=b=c", "found '=', expected: ',' or 'end of string'".into()),
            ("a=b)", "found ')', expected: ',' or 'end of string'".into()),
            ("!a=b", "found '=', expected: ',' or 'end of string'".into()),
            ("!", "unable to parse requirement: found '', expected: identifier".into()),
            ("!!a", "unable to parse requirement: found '!', expected: identifier".into()),
            ("a!", format!("unable to parse requirement: found '!', expected: {BINARY_OPERATORS}")),
            ("a in", "unable to parse requirement: found '' expected: '('".into()),
            ("a in b", "unable to parse requirement: found 'b' expected: '('".into()),
            ("a notin", "unable to parse requirement: found '' expected: '('".into()),
            ("a in (", "unable to parse requirement: found '', expected: ',', ')' or identifier".into()),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'".into()),
            ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'".into()),
            ("a in (b,", "unable to parse requirement: found '', expected: ',', or identifier".into()),
            ("a in (b,,)", "unable to parse requirement: found ')', expected: ',', or identifier".into()),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier".into()),
            ("a in ((b))", "unable to parse requirement: found '(', expected: ',', ')' or identifier".into()),
            ("a=(b)", "unable to parse requirement: found '(', expected: identifier".into()),
            ("a==!b", "unable to parse requirement: found '!', expected: identifier".into()),
            ("a===b", "unable to parse requirement: found '=', expected: identifier".into()),
        ];
        for (text, want) in cases {
            assert_eq!(&sel_err(text), want, "{text:?}");
        }
    }

    #[test]
    fn label_key_errors() {
        assert_eq!(
            sel_err("-a=b"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-a\": {NAME_PART_REGEX_ERR}")
        );
        assert_eq!(
            sel_err("app:monolith"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": {NAME_PART_REGEX_ERR}"
            )
        );
        assert_eq!(
            sel_err("ok,!bad*"),
            format!("unable to parse requirement: <nil>: Invalid value: \"bad*\": {NAME_PART_REGEX_ERR}")
        );
        assert!(sel_err("Bad.Prefix/a").starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"Bad.Prefix/a\": prefix part a lowercase RFC 1123"
        ));
        assert_eq!(
            sel_err(&format!("{} in (x)", "k".repeat(64))),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{}\": name part must be no more than 63 characters",
                "k".repeat(64)
            )
        );
        assert_eq!(
            sel_err("a\"b"),
            format!("unable to parse requirement: <nil>: Invalid value: \"a\\\"b\": {NAME_PART_REGEX_ERR}")
        );
    }

    #[test]
    fn label_value_errors_in_selectors() {
        assert_eq!(
            sel_err("a=-b"),
            format!("unable to parse requirement: values[0][a]: Invalid value: \"-b\": {VALUE_REGEX_ERR}")
        );
        assert_eq!(
            sel_err("a in (ok, bad/x, -bad)"),
            format!(
                "unable to parse requirement: [values[0][a]: Invalid value: \"-bad\": {VALUE_REGEX_ERR}, \
                 values[1][a]: Invalid value: \"bad/x\": {VALUE_REGEX_ERR}]"
            )
        );
        assert_eq!(
            sel_err(&format!("a!={}", "v".repeat(64))),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"{}\": must be no more than 63 characters",
                "v".repeat(64)
            )
        );
        assert_eq!(
            sel_err("a>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
        assert_eq!(
            sel_err("a<99999999999999999999"),
            "unable to parse requirement: values[0]: Invalid value: \"99999999999999999999\": for 'Gt', 'Lt' \
             operators, the value must be an integer"
        );
        assert_eq!(
            sel_err("a>"),
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
    }

    #[test]
    fn requirement_constructor_checks() {
        assert_eq!(
            Requirement::new("a".into(), Operator::In, Vec::new()).unwrap_err().0,
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            Requirement::new("a".into(), Operator::NotIn, Vec::new()).unwrap_err().0,
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            Requirement::new("a".into(), Operator::Equals, vec!["x".into(), "y".into()]).unwrap_err().0,
            "values: Invalid value: []string{\"x\", \"y\"}: exact-match compatibility requires one single value"
        );
        assert_eq!(
            Requirement::new("a".into(), Operator::Exists, vec!["x".into()]).unwrap_err().0,
            "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
        assert!(Requirement::new("-a".into(), Operator::Exists, Vec::new())
            .unwrap_err()
            .0
            .starts_with("key: Invalid value: \"-a\": name part"));
    }

    #[test]
    fn lexer_details() {
        // The lexer takes the longest operator, then stops.
        assert_eq!(sel("a!=b").to_string(), "a!=b");
        assert_eq!(sel("a==b").to_string(), "a==b");
        // A NUL byte where a token would start ends the input, as in kube.
        assert_eq!(sel("\0a=b"), LabelSelector::everything());
        assert_eq!(sel("a=b \0c").to_string(), "a=b");
        // A NUL byte right after a word or an operator ends that token and is skipped, as in kube.
        assert_eq!(sel("a=b\0").to_string(), "a=b");
        assert_eq!(sel("a,\0b").to_string(), "a,b");
        assert_eq!(sel_err("a=b\0c"), "found 'c', expected: ',' or 'end of string'");
        // Non-ASCII text lexes as an identifier and then fails validation.
        assert!(sel_err("ключ=1").contains("Invalid value: \"ключ\""));
        assert!(sel_err("a=значение").contains("Invalid value: \"значение\""));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("\t\n\r\u{1}\u{7f}"), "\"\\t\\n\\r\\x01\\x7f\"");
        assert_eq!(go_quote("é"), "\"é\"");
    }

    // ----- Field selectors. -----

    #[test]
    fn empty_field_selector_matches_everything() {
        for text in ["", ",", ",,"] {
            let s = fsel(text);
            assert!(s.is_everything(), "{text:?}");
            assert_eq!(s, FieldSelector::everything());
            assert!(s.matches(&fields(&[])));
            assert_eq!(s.to_string(), "");
            assert_eq!(s.required_value("metadata.name"), None);
        }
        assert!(FieldSelector::everything().matches(&fields(&[("metadata.name", "x")])));
    }

    #[test]
    fn field_operators() {
        for text in ["metadata.name=web", "metadata.name==web"] {
            let s = fsel(text);
            assert!(!s.is_everything());
            assert!(s.matches(&fields(&[("metadata.name", "web")])), "{text}");
            assert!(!s.matches(&fields(&[("metadata.name", "db")])), "{text}");
            assert!(!s.matches(&fields(&[])), "{text}");
            assert_eq!(s.to_string(), "metadata.name=web");
            assert_eq!(s.required_value("metadata.name"), Some("web"));
            assert_eq!(s.required_value("spec.nodeName"), None);
        }
        let s = fsel("spec.nodeName!=node-1");
        assert!(!s.matches(&fields(&[("spec.nodeName", "node-1")])));
        assert!(s.matches(&fields(&[("spec.nodeName", "node-2")])));
        assert!(s.matches(&fields(&[])));
        assert_eq!(s.required_value("spec.nodeName"), None);
    }

    #[test]
    fn missing_field_matches_as_empty() {
        let s = fsel("spec.nodeName=");
        assert!(s.matches(&fields(&[])));
        assert!(s.matches(&fields(&[("spec.nodeName", "")])));
        assert!(!s.matches(&fields(&[("spec.nodeName", "n")])));
        assert_eq!(s.required_value("spec.nodeName"), Some(""));
        let s = fsel("spec.nodeName!=");
        assert!(!s.matches(&fields(&[])));
        assert!(s.matches(&fields(&[("spec.nodeName", "n")])));
    }

    #[test]
    fn field_conjunction() {
        let s = fsel("metadata.namespace=default,status.phase!=Running,spec.nodeName==n1");
        let mut pod = BTreeMap::new();
        pod.insert("metadata.namespace".to_string(), "default".to_string());
        pod.insert("status.phase".to_string(), "Pending".to_string());
        pod.insert("spec.nodeName".to_string(), "n1".to_string());
        assert!(s.matches(&Fields(pod.clone())));
        pod.insert("status.phase".to_string(), "Running".to_string());
        assert!(!s.matches(&Fields(pod.clone())));
        assert_eq!(s.required_value("metadata.namespace"), Some("default"));
        assert_eq!(s.required_value("spec.nodeName"), Some("n1"));
        assert_eq!(s.required_value("status.phase"), None);
        // Terms come out in the sorted order of their text, as kube keeps them.
        assert_eq!(s.to_string(), "metadata.namespace=default,spec.nodeName=n1,status.phase!=Running");
    }

    #[test]
    fn field_value_escaping() {
        let s = fsel(r"metadata.name=a\,b\=c\\d");
        assert!(s.matches(&fields(&[("metadata.name", r"a,b=c\d")])));
        assert_eq!(s.required_value("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        // An escaped comma does not split terms.
        let s = fsel(r"metadata.name!=x\,spec.nodeName\=y");
        assert!(s.matches(&fields(&[("metadata.name", "z")])));
        assert!(!s.matches(&fields(&[("metadata.name", "x,spec.nodeName=y")])));
        // A "!" needs no escape: the first operator splits the term.
        let s = fsel("metadata.name=a!b");
        assert!(s.matches(&fields(&[("metadata.name", "a!b")])));
        let s = fsel("metadata.name!=!");
        assert!(!s.matches(&fields(&[("metadata.name", "!")])));
        assert_eq!(escape_field_value(r"\,="), r"\\\,\=");
        assert_eq!(unescape_field_value(r"\\\,\=").unwrap(), r"\,=");
        assert_eq!(unescape_field_value("plain é").unwrap(), "plain é");
    }

    #[test]
    fn field_escape_errors() {
        assert_eq!(fsel_err("metadata.name=a=b"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(fsel_err("metadata.name==="), "invalid field selector: unescaped character in value: 61");
        assert_eq!(fsel_err(r"metadata.name=a\x"), r"invalid field selector: invalid escape sequence: \x");
        assert_eq!(fsel_err(r"metadata.name=a\!"), r"invalid field selector: invalid escape sequence: \!");
        assert_eq!(fsel_err(r"metadata.name=a\é"), r"invalid field selector: invalid escape sequence: \é");
        assert_eq!(fsel_err(r"metadata.name=a\"), r"invalid field selector: invalid escape sequence: \");
        assert_eq!(
            unescape_field_value("a,b").unwrap_err().0,
            "invalid field selector: unescaped character in value: 44"
        );
    }

    #[test]
    fn field_syntax_errors() {
        assert_eq!(
            fsel_err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            fsel_err("spec.nodeName=a,metadata.name"),
            "invalid selector: 'spec.nodeName=a,metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(fsel_err("a<b"), "invalid selector: 'a<b'; can't understand 'a<b'");
        assert_eq!(
            fsel_err("metadata.name in (a)"),
            "invalid selector: 'metadata.name in (a)'; can't understand 'metadata.name in (a)'"
        );
    }

    #[test]
    fn unsupported_fields() {
        assert_eq!(fsel_err("spec.foo=x"), "field label not supported: spec.foo");
        assert_eq!(fsel_err("=x"), "field label not supported: ");
        assert_eq!(fsel_err("Metadata.Name=x"), "field label not supported: Metadata.Name");
        // No whitespace is trimmed, as in kube.
        assert_eq!(fsel_err("metadata.name = x"), "field label not supported: metadata.name ");
        assert_eq!(fsel_err(" metadata.name=x"), "field label not supported:  metadata.name");
        // Terms are checked in sorted order: "metadata.x" sorts before "spec.y".
        assert_eq!(fsel_err("spec.y=1,metadata.x=2"), "field label not supported: metadata.x");
        // Escape errors come before the field check.
        assert_eq!(fsel_err(r"spec.y=1,spec.z=\q"), r"invalid field selector: invalid escape sequence: \q");
        // With no allowed fields, every term is refused.
        assert_eq!(
            FieldSelector::parse("metadata.name=a", &[]).unwrap_err().0,
            "field label not supported: metadata.name"
        );
    }

    #[test]
    fn whitespace_in_field_values_is_kept() {
        let s = fsel("metadata.name= a ");
        assert!(s.matches(&fields(&[("metadata.name", " a ")])));
        assert!(!s.matches(&fields(&[("metadata.name", "a")])));
        assert_eq!(s.to_string(), "metadata.name= a ");
    }

    #[test]
    fn field_display_round_trip() {
        for text in [
            "metadata.name=a",
            "metadata.name==a",
            "metadata.name!=a",
            "metadata.name=",
            r"metadata.name=a\,b\=c\\d",
            r"metadata.name!=\\",
            "metadata.name==x,metadata.name=w,status.phase!=Running",
            "metadata.name=a!b,spec.nodeName!=!",
        ] {
            let s = fsel(text);
            let again = fsel(&s.to_string());
            assert_eq!(again, s, "{text} -> {s}");
        }
    }

    #[test]
    fn field_selector_equality_ignores_order_and_double_equals() {
        assert_eq!(fsel("metadata.name=a,spec.nodeName=b"), fsel("spec.nodeName==b,metadata.name=a"));
        assert_ne!(fsel("metadata.name=a"), fsel("metadata.name!=a"));
        assert_ne!(fsel("metadata.name=a"), fsel("metadata.name=b"));
    }

    #[test]
    fn split_helpers() {
        assert_eq!(split_field_terms(""), Vec::<&str>::new());
        assert_eq!(split_field_terms("a,b"), vec!["a", "b"]);
        assert_eq!(split_field_terms(r"a\,b,c"), vec![r"a\,b", "c"]);
        assert_eq!(split_field_terms(r"a\\,b"), vec![r"a\\", "b"]);
        assert_eq!(split_field_terms(","), vec!["", ""]);
        assert_eq!(split_field_term("a!=b"), Some(("a", "!=", "b")));
        assert_eq!(split_field_term("a==b"), Some(("a", "==", "b")));
        assert_eq!(split_field_term("a=b"), Some(("a", "=", "b")));
        assert_eq!(split_field_term("a=!=b"), Some(("a", "=", "!=b")));
        assert_eq!(split_field_term("é=b"), Some(("é", "=", "b")));
        assert_eq!(split_field_term("ab"), None);
    }
}
