//! The SCIM filter language (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2): parsing into a
//! tree, printing it back, and evaluating it against resources.
//!
//! Beyond the RFC grammar, the parser accepts what real clients send:
//!
//! - keywords and attribute names in any case (`UserName Eq "x" AND active pr`);
//! - an unquoted value (`userName eq alice@example.com`, shown in Entra's documentation):
//!   a bare word that is not `true`, `false`, `null` or a JSON number is read as a string;
//!   `and`, `or`, `not`, `pr` and the operators are never read as values;
//! - a value path followed by a sub-attribute test (`emails[type eq "work"].value eq "x"`),
//!   read as `emails[type eq "work" and value eq "x"]`, which selects the same resources.
//!
//! Input longer than [`MAX_FILTER_LEN`] or nested deeper than [`MAX_FILTER_DEPTH`] is
//! rejected before it can exhaust the stack, and anything left after a complete filter is
//! an error, never ignored.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::Value;

use crate::scim::error::ScimError;
use crate::scim::schema::{
    AttrPath, AttrType, AttributeDef, ResolvedAttr, ResourceSchema, is_attr_name,
};

/// Longest filter or PATCH path accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 8 * 1024;

/// Deepest nesting of parentheses, `not (...)` and `[...]` accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

/// Longest piece of input quoted back in an error message, in characters.
const MAX_QUOTED: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    /// Every operator, in RFC order.
    pub const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    /// The keyword as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    /// The operator a keyword names, in any case.
    fn from_keyword(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    /// Whether the operator orders values (`gt`, `ge`, `lt`, `le`).
    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    /// Whether a value that compares to the operand as `ordering` satisfies the operator.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            CompareOp::Eq => ordering.is_eq(),
            CompareOp::Ne => ordering.is_ne(),
            CompareOp::Gt => ordering.is_gt(),
            CompareOp::Ge => ordering.is_ge(),
            CompareOp::Lt => ordering.is_lt(),
            CompareOp::Le => ordering.is_le(),
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed filter.
///
/// `and` and `or` are binary and nest to the left: `a and b and c` is
/// `And(And(a, b), c)`. Inside a [`Filter::ValuePath`], paths name sub-attributes of the
/// value path's attribute and carry neither a schema URN nor a sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `path op value`, where `value` is a string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `path pr`.
    Present { path: AttrPath },
    /// `attr[filter]`: some element of the multi-valued complex `attr` matches `filter`.
    ValuePath { attr: AttrPath, filter: Box<Filter> },
    /// `not (filter)`.
    Not(Box<Filter>),
    /// `left and right`.
    And(Box<Filter>, Box<Filter>),
    /// `left or right`.
    Or(Box<Filter>, Box<Filter>),
}

/// A filter or PATCH path that could not be parsed or cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("failed to parse {subject}: it is {len} bytes long and the limit is {MAX_FILTER_LEN}")]
    TooLong { subject: &'static str, len: usize },
    #[error(
        "failed to parse {subject} at position {position}: it nests deeper than \
         {MAX_FILTER_DEPTH} levels"
    )]
    TooDeep {
        subject: &'static str,
        position: usize,
    },
    #[error("failed to parse {subject} at position {position}: expected {expected}, found {found}")]
    Syntax {
        subject: &'static str,
        position: usize,
        expected: String,
        found: String,
    },
    #[error("failed to compare {path}: {reason}")]
    Incomparable { path: String, reason: &'static str },
}

impl From<FilterError> for ScimError {
    fn from(err: FilterError) -> Self {
        ScimError::invalid_filter(err.to_string())
    }
}

/// Parses a filter (the `filter` query parameter or the body of a `.search` request).
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser::new(input, "filter")?;
    let filter = parser.parse_or(Scope::Resource)?;
    parser.expect_end("'and', 'or' or the end of the filter")?;
    Ok(filter)
}

/// A PATCH operation's `path`: `attrPath / valuePath [subAttr]` (RFC 7644 §3.5.2).
///
/// `attr` never carries a sub-attribute: `name.givenName` is `attr` `name` with `sub`
/// `givenName`, and `emails[type eq "work"].value` is `attr` `emails`, a filter and `sub`
/// `value`. A whole extension URN such as
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User` parses as an attribute named
/// after the URN's last segment; callers check [`ResourceSchema::is_extension_urn`] first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

impl PatchPath {
    /// The attribute path the operation writes: `attr`, or `attr.sub` when there is a sub.
    pub fn target(&self) -> AttrPath {
        AttrPath {
            sub: self.sub.clone(),
            ..self.attr.clone()
        }
    }
}

/// Parses a PATCH operation's `path`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut parser = Parser::new(input, "path")?;
    parser.skip_ws();
    let start = parser.pos;
    let path = parser.attr_path(Scope::Resource)?;
    let mut patch_path = PatchPath {
        attr: AttrPath {
            sub: None,
            ..path.clone()
        },
        filter: None,
        sub: path.sub,
    };
    if parser.peek() == Some('[') {
        if patch_path.sub.is_some() {
            return Err(parser.error(start, "a multi-valued attribute before '['"));
        }
        patch_path.filter = Some(parser.value_filter()?);
        if parser.eat('.') {
            patch_path.sub = Some(parser.sub_attr_name()?);
        }
    }
    parser.expect_end("the end of the path")?;
    Ok(patch_path)
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Where a path in a filter is resolved: against the resource, or inside `attr[...]`
/// against the sub-attributes of `attr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Resource,
    Element,
}

/// A recursive-descent parser over the input text; `pos` is a byte offset.
struct Parser<'a> {
    subject: &'static str,
    input: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str, subject: &'static str) -> Result<Self, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                subject,
                len: input.len(),
            });
        }
        Ok(Self {
            subject,
            input,
            pos: 0,
            depth: 0,
        })
    }

    /// `or`-separated terms; `or` binds loosest.
    fn parse_or(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_and(scope)?;
        while self.eat_keyword("or") {
            let right = self.parse_and(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `and`-separated terms.
    fn parse_and(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary(scope)?;
        while self.eat_keyword("and") {
            let right = self.parse_unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// A parenthesised filter, `not (...)` or an attribute expression.
    fn parse_unary(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            return self.parenthesised(scope);
        }
        let word = self.word_at(self.pos);
        if word.eq_ignore_ascii_case("not") {
            self.pos += word.len();
            self.skip_ws();
            if self.peek() != Some('(') {
                return Err(self.error(self.pos, "'(' after 'not'"));
            }
            return Ok(Filter::Not(Box::new(self.parenthesised(scope)?)));
        }
        self.parse_attr_expr(scope)
    }

    /// `( filter )`, starting at the opening parenthesis.
    fn parenthesised(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        self.nested(|parser| {
            parser.pos += 1;
            let filter = parser.parse_or(scope)?;
            parser.expect(')', "'and', 'or' or ')'")?;
            Ok(filter)
        })
    }

    /// `[ filter ]`, starting at the opening bracket, with paths relative to the attribute.
    fn value_filter(&mut self) -> Result<Filter, FilterError> {
        self.nested(|parser| {
            parser.pos += 1;
            let filter = parser.parse_or(Scope::Element)?;
            parser.expect(']', "'and', 'or' or ']'")?;
            Ok(filter)
        })
    }

    /// Runs `parse` one nesting level deeper, refusing to go past the limit.
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, FilterError>,
    ) -> Result<T, FilterError> {
        if self.depth >= MAX_FILTER_DEPTH {
            let position = self.position(self.pos);
            return Err(FilterError::TooDeep {
                subject: self.subject,
                position,
            });
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// `path pr`, `path op value` or a value path.
    fn parse_attr_expr(&mut self, scope: Scope) -> Result<Filter, FilterError> {
        let start = self.pos;
        let path = self.attr_path(scope)?;
        if self.peek() != Some('[') {
            return self.parse_test(path);
        }
        if scope == Scope::Element {
            return Err(self.error(self.pos, "an operator; value filters do not nest"));
        }
        if path.sub.is_some() {
            return Err(self.error(start, "a multi-valued attribute before '['"));
        }
        let mut filter = self.value_filter()?;
        if self.eat('.') {
            let sub = self.sub_attr_name()?;
            let test = self.parse_test(AttrPath::new(sub))?;
            filter = Filter::And(Box::new(filter), Box::new(test));
        }
        Ok(Filter::ValuePath {
            attr: path,
            filter: Box::new(filter),
        })
    }

    /// The operator and operand that follow a path.
    fn parse_test(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        self.skip_ws();
        let word = self.word_at(self.pos);
        if word.eq_ignore_ascii_case("pr") {
            self.pos += word.len();
            return Ok(Filter::Present { path });
        }
        let Some(op) = CompareOp::from_keyword(word) else {
            return Err(self.error(
                self.pos,
                "an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)",
            ));
        };
        self.pos += word.len();
        let value = self.parse_value()?;
        Ok(Filter::Compare { path, op, value })
    }

    /// An attribute path at the current position; inside `[...]` only a bare name.
    fn attr_path(&mut self, scope: Scope) -> Result<AttrPath, FilterError> {
        let start = self.pos;
        let word = self.word_at(start);
        let Some(path) = AttrPath::parse(word) else {
            return Err(self.error(start, "an attribute name"));
        };
        if scope == Scope::Element && (path.schema.is_some() || path.sub.is_some()) {
            return Err(self.error(start, "a sub-attribute name without '.' or schema"));
        }
        self.pos += word.len();
        Ok(path)
    }

    /// The sub-attribute name after `].`.
    fn sub_attr_name(&mut self) -> Result<String, FilterError> {
        let word = self.word_at(self.pos);
        if !is_attr_name(word) {
            return Err(self.error(self.pos, "a sub-attribute name after '].'"));
        }
        self.pos += word.len();
        Ok(word.to_owned())
    }

    /// A comparison operand: a JSON string, number, `true`, `false`, `null` or a bare word.
    fn parse_value(&mut self) -> Result<Value, FilterError> {
        const EXPECTED: &str = "a value (a quoted string, a number, true, false or null)";
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('"') {
            return self.parse_string().map(Value::String);
        }
        let word = self.word_at(start);
        let is_keyword = ["and", "or", "not", "pr"]
            .iter()
            .any(|kw| kw.eq_ignore_ascii_case(word))
            || CompareOp::from_keyword(word).is_some();
        if word.is_empty() || is_keyword {
            return Err(self.error(start, EXPECTED));
        }
        self.pos += word.len();
        let value = if word.eq_ignore_ascii_case("true") {
            Value::Bool(true)
        } else if word.eq_ignore_ascii_case("false") {
            Value::Bool(false)
        } else if word.eq_ignore_ascii_case("null") {
            Value::Null
        } else {
            match serde_json::from_str::<Value>(word) {
                Ok(number @ Value::Number(_)) => number,
                _ => Value::String(word.to_owned()),
            }
        };
        Ok(value)
    }

    /// A JSON string literal starting at the opening quote.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let bytes = self.input.as_bytes();
        let mut end = start + 1;
        loop {
            match bytes.get(end) {
                None => {
                    let found = "the end of input".to_owned();
                    return Err(self.syntax(start, "a closing '\"' for this string", found));
                }
                Some(b'"') => break,
                Some(b'\\') => end += 2,
                Some(_) => end += 1,
            }
        }
        let literal = &self.input[start..=end];
        let text = serde_json::from_str::<String>(literal).map_err(|err| {
            let found = format!("an invalid string ({err})");
            self.syntax(
                start,
                "a JSON string (escapes \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
                found,
            )
        })?;
        self.pos = end + 1;
        Ok(text)
    }

    /// Consumes `keyword` (in any case) when it is the next word.
    fn eat_keyword(&mut self, keyword: &str) -> bool {
        self.skip_ws();
        let word = self.word_at(self.pos);
        let found = word.eq_ignore_ascii_case(keyword);
        if found {
            self.pos += word.len();
        }
        found
    }

    /// Consumes `c` after optional whitespace, or fails with `expected`.
    fn expect(&mut self, c: char, expected: &str) -> Result<(), FilterError> {
        self.skip_ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(self.pos, expected))
        }
    }

    /// Fails unless only whitespace is left.
    fn expect_end(&mut self, expected: &str) -> Result<(), FilterError> {
        self.skip_ws();
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(self.error(self.pos, expected))
        }
    }

    /// Consumes `c` when it is the next character.
    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += c.len_utf8();
        }
        found
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// The run of characters from `at` up to whitespace, a bracket, a parenthesis or a quote.
    fn word_at(&self, at: usize) -> &'a str {
        let rest = &self.input[at..];
        let end = rest.find(|c: char| c.is_whitespace() || "()[]\"".contains(c));
        &rest[..end.unwrap_or(rest.len())]
    }

    /// A syntax error at byte offset `at`, quoting what is there.
    fn error(&self, at: usize, expected: &str) -> FilterError {
        let found = match self.input[at..].chars().next() {
            None => "the end of input".to_owned(),
            Some(c) if "()[]\"".contains(c) => format!("'{c}'"),
            Some(_) => {
                let word = self.word_at(at);
                let shown: String = word.chars().take(MAX_QUOTED).collect();
                let ellipsis = if shown.len() < word.len() { "..." } else { "" };
                format!("'{shown}{ellipsis}'")
            }
        };
        self.syntax(at, expected, found)
    }

    fn syntax(&self, at: usize, expected: &str, found: String) -> FilterError {
        FilterError::Syntax {
            subject: self.subject,
            position: self.position(at),
            expected: expected.to_owned(),
            found,
        }
    }

    /// The 1-based character position of byte offset `at`, as people count.
    fn position(&self, at: usize) -> usize {
        self.input[..at].chars().count() + 1
    }
}

impl Filter {
    /// Binding strength when printed: `or` is loosest.
    fn precedence(&self) -> u8 {
        match self {
            Filter::Or(..) => 1,
            Filter::And(..) => 2,
            _ => 3,
        }
    }
}

/// Prints an operand of a binary operator, in parentheses when the tree would otherwise
/// re-parse differently (both operators nest to the left).
fn write_operand(
    f: &mut fmt::Formatter<'_>,
    operand: &Filter,
    parent: u8,
    right: bool,
) -> fmt::Result {
    let precedence = operand.precedence();
    if precedence < parent || (right && precedence == parent) {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

impl fmt::Display for Filter {
    /// Prints the canonical form: lower-case keywords, JSON literals, and parentheses only
    /// where needed. It parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Filter::Present { path } => write!(f, "{path} pr"),
            Filter::ValuePath { attr, filter } => write!(f, "{attr}[{filter}]"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::And(left, right) | Filter::Or(left, right) => {
                let precedence = self.precedence();
                let keyword = if precedence == 1 { "or" } else { "and" };
                write_operand(f, left, precedence, false)?;
                write!(f, " {keyword} ")?;
                write_operand(f, right, precedence, true)
            }
        }
    }
}

impl Filter {
    /// Whether `resource` matches the filter.
    ///
    /// - Attribute names and schema URNs match without regard to case.
    /// - A multi-valued attribute matches when any of its values does; a complex attribute
    ///   compared without a sub-attribute (`emails co "@x"`) compares its `value`.
    /// - Strings compare as the schema says: `userName`, `displayName` and `emails.value`
    ///   ignore case; `id`, `externalId` and member values do not.
    /// - `dateTime` values compare as instants, numbers as numbers, booleans as booleans
    ///   (a stored `"True"` or `"false"` counts as a boolean).
    /// - `gt`, `ge`, `lt` and `le` never match booleans or binary values (which
    ///   [`Filter::validate`] reports as errors), and `co`, `sw` and `ew` match only text.
    /// - `ne` matches when no value equals the operand, absent attributes included.
    ///   `eq null` matches when the attribute is absent, `ne null` when it is present.
    /// - `pr` matches a value that is not null, an empty string, an empty list or an
    ///   object with nothing present in it.
    /// - A path the schema does not define matches nothing, whatever the operator: an
    ///   unknown attribute is not an error, so clients probing with one get an empty list.
    pub fn matches(&self, resource: &Value, schema: &ResourceSchema) -> bool {
        match self {
            Filter::And(left, right) => {
                left.matches(resource, schema) && right.matches(resource, schema)
            }
            Filter::Or(left, right) => {
                left.matches(resource, schema) || right.matches(resource, schema)
            }
            Filter::Not(inner) => !inner.matches(resource, schema),
            Filter::Present { path } => schema
                .resolve(path)
                .is_some_and(|resolved| values_at(resource, &resolved).into_iter().any(is_present)),
            Filter::Compare { path, op, value } => schema.resolve(path).is_some_and(|resolved| {
                let values = values_at(resource, &resolved);
                match compared(&resolved, values) {
                    Some((def, values)) => compare_values(def, &values, *op, value),
                    None => false,
                }
            }),
            Filter::ValuePath { attr, filter } => schema.resolve(attr).is_some_and(|resolved| {
                resolved.sub.is_none()
                    && values_at(resource, &resolved)
                        .into_iter()
                        .any(|element| filter.matches_element(element, resolved.attr))
            }),
        }
    }

    /// Whether one element of the complex attribute `attr` matches this filter, read as a
    /// value filter (the part between `[` and `]`): paths name sub-attributes of `attr`.
    pub fn matches_element(&self, element: &Value, attr: &AttributeDef) -> bool {
        match self {
            Filter::And(left, right) => {
                left.matches_element(element, attr) && right.matches_element(element, attr)
            }
            Filter::Or(left, right) => {
                left.matches_element(element, attr) || right.matches_element(element, attr)
            }
            Filter::Not(inner) => !inner.matches_element(element, attr),
            Filter::Present { path } => sub_attr(attr, path).is_some_and(|def| {
                get_ci(element, def.name)
                    .is_some_and(|value| elements(value).iter().any(is_present))
            }),
            Filter::Compare { path, op, value } => sub_attr(attr, path).is_some_and(|def| {
                let values = get_ci(element, def.name).map(elements).unwrap_or_default();
                compare_values(def, &values.iter().collect::<Vec<_>>(), *op, value)
            }),
            Filter::ValuePath { .. } => false,
        }
    }

    /// The `eq` comparisons every matching resource satisfies, found by walking `and`
    /// chains from the top; comparisons with `null` are left out.
    ///
    /// A store may answer from an index with them, but must still run [`Filter::matches`]:
    /// the terms are necessary, not sufficient, and values compare as the schema says
    /// (`userName` without regard to case). Paths are as the client wrote them (`UserName`);
    /// [`ResourceSchema::resolve`] gives the canonical names. An unquoted number arrives as a
    /// JSON number.
    pub fn eq_terms(&self) -> Vec<(&AttrPath, &Value)> {
        let mut terms = Vec::new();
        self.collect_eq_terms(&mut terms);
        terms
    }

    fn collect_eq_terms<'a>(&'a self, terms: &mut Vec<(&'a AttrPath, &'a Value)>) {
        match self {
            Filter::And(left, right) => {
                left.collect_eq_terms(terms);
                right.collect_eq_terms(terms);
            }
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } if !value.is_null() => {
                terms.push((path, value));
            }
            _ => {}
        }
    }

    /// Reports comparisons that RFC 7644 makes an `invalidFilter` error: ordering a boolean,
    /// binary or complex attribute, and operands that cannot have the attribute's type (a
    /// boolean compared with `"abc"`, a `dateTime` with a value that is not one).
    ///
    /// Unknown attributes are not errors. [`Filter::matches`] never matches what this
    /// rejects, so calling it only changes an empty answer into a 400.
    pub fn validate(&self, schema: &ResourceSchema) -> Result<(), FilterError> {
        match self {
            Filter::And(left, right) | Filter::Or(left, right) => {
                left.validate(schema)?;
                right.validate(schema)
            }
            Filter::Not(inner) => inner.validate(schema),
            Filter::Present { .. } => Ok(()),
            Filter::Compare { path, op, value } => match schema.resolve(path) {
                Some(resolved) => {
                    let def = compared(&resolved, Vec::new()).map(|(def, _)| def);
                    validate_comparison(path, def, *op, value)
                }
                None => Ok(()),
            },
            Filter::ValuePath { attr, filter } => match schema.resolve(attr) {
                Some(resolved) => filter.validate_element(resolved.attr),
                None => Ok(()),
            },
        }
    }

    fn validate_element(&self, attr: &AttributeDef) -> Result<(), FilterError> {
        match self {
            Filter::And(left, right) | Filter::Or(left, right) => {
                left.validate_element(attr)?;
                right.validate_element(attr)
            }
            Filter::Not(inner) => inner.validate_element(attr),
            Filter::Compare { path, op, value } => match sub_attr(attr, path) {
                Some(def) => validate_comparison(path, Some(def), *op, value),
                None => Ok(()),
            },
            Filter::Present { .. } | Filter::ValuePath { .. } => Ok(()),
        }
    }
}

/// Checks one comparison against the definition of what it compares (`None` for a
/// complex attribute without a `value` sub-attribute).
fn validate_comparison(
    path: &AttrPath,
    def: Option<&AttributeDef>,
    op: CompareOp,
    operand: &Value,
) -> Result<(), FilterError> {
    let fail = |reason| {
        Err(FilterError::Incomparable {
            path: path.to_string(),
            reason,
        })
    };
    let Some(def) = def else {
        return fail("a complex attribute has no value to compare");
    };
    if operand.is_null() {
        return Ok(());
    }
    match def.kind {
        AttrType::Boolean | AttrType::Binary if op.is_ordering() => {
            fail("gt, ge, lt and le do not apply to boolean or binary attributes")
        }
        AttrType::Complex => fail("a complex attribute has no value to compare"),
        AttrType::Boolean if as_bool(operand).is_none() => {
            fail("the operand must be true or false")
        }
        AttrType::Integer | AttrType::Decimal if as_number(operand).is_none() => {
            fail("the operand must be a number")
        }
        AttrType::DateTime if as_instant(operand).is_none() => {
            fail("the operand must be a date and time such as \"2011-05-13T04:42:34Z\"")
        }
        _ => Ok(()),
    }
}

/// The sub-attribute a path inside `[...]` names, if it is a bare known name.
fn sub_attr(attr: &AttributeDef, path: &AttrPath) -> Option<&'static AttributeDef> {
    if path.schema.is_some() || path.sub.is_some() {
        return None;
    }
    attr.find_sub(&path.attr)
}

/// The values a resolved path names in a resource, flattened over multi-valued attributes.
fn values_at<'v>(resource: &'v Value, resolved: &ResolvedAttr) -> Vec<&'v Value> {
    let container = match resolved.extension {
        Some(urn) => get_ci(resource, urn),
        None => Some(resource),
    };
    let Some(value) = container.and_then(|container| get_ci(container, resolved.attr.name)) else {
        return Vec::new();
    };
    match resolved.sub {
        None => elements(value).iter().collect(),
        Some(sub) => elements(value)
            .iter()
            .filter_map(|element| get_ci(element, sub.name))
            .flat_map(elements)
            .collect(),
    }
}

/// The definition and values a comparison applies to: a complex attribute named without a
/// sub-attribute compares its `value` sub-attribute, and one without `value` compares
/// nothing.
fn compared<'v>(
    resolved: &ResolvedAttr,
    values: Vec<&'v Value>,
) -> Option<(&'static AttributeDef, Vec<&'v Value>)> {
    let target = resolved.target();
    if target.kind != AttrType::Complex {
        return Some((target, values));
    }
    let value_def = target.find_sub("value")?;
    let values = values
        .into_iter()
        .filter_map(|element| get_ci(element, value_def.name))
        .flat_map(elements)
        .collect();
    Some((value_def, values))
}

/// Applies `op operand` to the values of one attribute: any value may match, and `ne`
/// matches when none equals.
fn compare_values(def: &AttributeDef, values: &[&Value], op: CompareOp, operand: &Value) -> bool {
    let any_present = || values.iter().copied().any(is_present);
    match (op, operand) {
        (CompareOp::Eq, Value::Null) => !any_present(),
        (CompareOp::Ne, Value::Null) => any_present(),
        (_, Value::Null) => false,
        (CompareOp::Ne, _) => !values
            .iter()
            .any(|value| compare(def, value, CompareOp::Eq, operand)),
        _ => values.iter().any(|value| compare(def, value, op, operand)),
    }
}

/// Compares one stored value with the operand by the attribute's type.
fn compare(def: &AttributeDef, stored: &Value, op: CompareOp, operand: &Value) -> bool {
    match def.kind {
        AttrType::Binary if op.is_ordering() => false,
        AttrType::String | AttrType::Reference | AttrType::Binary => {
            match (as_text(stored), as_text(operand)) {
                (Some(stored), Some(operand)) => {
                    compare_text(&stored, op, &operand, def.case_exact)
                }
                _ => false,
            }
        }
        AttrType::Boolean => match (as_bool(stored), as_bool(operand)) {
            (Some(stored), Some(operand)) => op == CompareOp::Eq && stored == operand,
            _ => false,
        },
        AttrType::Integer | AttrType::Decimal => match (as_number(stored), as_number(operand)) {
            (Some(stored), Some(operand)) => stored
                .partial_cmp(&operand)
                .is_some_and(|ordering| op.accepts(ordering)),
            _ => false,
        },
        AttrType::DateTime => match (as_instant(stored), as_instant(operand)) {
            (Some(stored), Some(operand)) => op.accepts(stored.cmp(&operand)),
            _ => false,
        },
        AttrType::Complex => false,
    }
}

/// Compares two strings, ignoring case unless the attribute is case-exact.
fn compare_text(stored: &str, op: CompareOp, operand: &str, case_exact: bool) -> bool {
    let (stored, operand) = if case_exact {
        (Cow::Borrowed(stored), Cow::Borrowed(operand))
    } else {
        (
            Cow::Owned(stored.to_lowercase()),
            Cow::Owned(operand.to_lowercase()),
        )
    };
    match op {
        CompareOp::Co => stored.contains(operand.as_ref()),
        CompareOp::Sw => stored.starts_with(operand.as_ref()),
        CompareOp::Ew => stored.ends_with(operand.as_ref()),
        _ => op.accepts(stored.cmp(&operand)),
    }
}

/// A scalar as text: strings as they are, numbers and booleans as printed in JSON.
fn as_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        Value::Bool(flag) => Some(Cow::Owned(flag.to_string())),
        _ => None,
    }
}

/// A boolean, or a string that spells one in any case (`"True"`, `"false"`).
fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Some(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A number, or a string that holds one.
fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok().filter(|n: &f64| n.is_finite()),
        _ => None,
    }
}

/// An instant from an RFC 3339 date-time; one without an offset is taken as UTC.
fn as_instant(value: &Value) -> Option<DateTime<FixedOffset>> {
    let text = value.as_str()?.trim();
    DateTime::parse_from_rfc3339(text).ok().or_else(|| {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        Some(naive.and_utc().fixed_offset())
    })
}

/// Whether a value counts as present for `pr`.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(fields) => fields.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// The elements of a multi-valued attribute, or the value itself when it is single (some
/// clients send one object where the schema says list).
fn elements(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    }
}

/// A member of a JSON object by name, compared without regard to case.
fn get_ci<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    let fields = object.as_object()?;
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::scim::schema::{
        ENTERPRISE_USER_SCHEMA_ID, GROUP, Mutability, Returned, SchemaDef, USER, USER_SCHEMA_ID,
        Uniqueness,
    };

    const ENTERPRISE: &str = ENTERPRISE_USER_SCHEMA_ID;

    fn path(s: &str) -> AttrPath {
        AttrPath::parse(s).expect("test paths are valid")
    }

    fn compare(p: &str, op: CompareOp, value: Value) -> Filter {
        Filter::Compare {
            path: path(p),
            op,
            value,
        }
    }

    fn eq(p: &str, value: Value) -> Filter {
        compare(p, CompareOp::Eq, value)
    }

    fn present(p: &str) -> Filter {
        Filter::Present { path: path(p) }
    }

    fn and(left: Filter, right: Filter) -> Filter {
        Filter::And(Box::new(left), Box::new(right))
    }

    fn or(left: Filter, right: Filter) -> Filter {
        Filter::Or(Box::new(left), Box::new(right))
    }

    fn not(inner: Filter) -> Filter {
        Filter::Not(Box::new(inner))
    }

    fn value_path(attr: &str, filter: Filter) -> Filter {
        Filter::ValuePath {
            attr: path(attr),
            filter: Box::new(filter),
        }
    }

    fn parsed(input: &str) -> Filter {
        parse(input).unwrap_or_else(|err| panic!("{input:?} should parse: {err}"))
    }

    /// The filters of `cases`, each with whether it should match `resource`, that do not.
    fn mismatches(
        resource: &Value,
        schema: &ResourceSchema,
        cases: &[(&str, bool)],
    ) -> Vec<String> {
        cases
            .iter()
            .filter(|(input, expected)| parsed(input).matches(resource, schema) != *expected)
            .map(|(input, expected)| {
                format!(
                    "{input} should {}match",
                    if *expected { "" } else { "not " }
                )
            })
            .collect()
    }

    fn barbara() -> Value {
        json!({
            "schemas": [USER_SCHEMA_ID, ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "BJensen-Ext",
            "userName": "bjensen@example.com",
            "name": { "givenName": "Barbara", "familyName": "Jensen" },
            "displayName": "Babs Jensen",
            "title": "Analyst",
            "nickName": "",
            "active": true,
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@jensen.org", "type": "home" },
            ],
            "phoneNumbers": [],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
            },
            ENTERPRISE: {
                "employeeNumber": "701984",
                "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d" },
            },
        })
    }

    #[test]
    fn a_comparison_parses_to_path_operator_and_json_value() {
        assert_eq!(
            parsed(r#"userName eq "bjensen""#),
            eq("userName", json!("bjensen"))
        );
        assert_eq!(
            parsed(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#),
            compare(
                "meta.lastModified",
                CompareOp::Gt,
                json!("2011-05-13T04:42:34Z")
            )
        );
        assert_eq!(parsed("title pr"), present("title"));
    }

    #[test]
    fn every_operator_parses() {
        let parsed_ops: Vec<Filter> = CompareOp::ALL
            .iter()
            .map(|op| parsed(&format!("title {op} \"x\"")))
            .collect();
        let expected: Vec<Filter> = CompareOp::ALL
            .iter()
            .map(|op| compare("title", *op, json!("x")))
            .collect();
        assert_eq!(parsed_ops, expected);
    }

    #[test]
    fn literals_parse_as_json_values() {
        assert_eq!(parsed("active eq true"), eq("active", json!(true)));
        assert_eq!(parsed("active eq FALSE"), eq("active", json!(false)));
        assert_eq!(parsed("title eq null"), eq("title", Value::Null));
        assert_eq!(
            parsed("count gt -12"),
            compare("count", CompareOp::Gt, json!(-12))
        );
        assert_eq!(
            parsed("count le 2.5"),
            compare("count", CompareOp::Le, json!(2.5))
        );
        assert_eq!(
            parsed("count lt 1e3"),
            compare("count", CompareOp::Lt, json!(1000.0))
        );
    }

    #[test]
    fn strings_decode_json_escapes() {
        assert_eq!(
            parsed(r#"displayName eq "a \"quoted\" back\\slash \u00e9 \n""#),
            eq("displayName", json!("a \"quoted\" back\\slash é \n"))
        );
        assert_eq!(
            parsed(r#"displayName eq "(and) [or]""#),
            eq("displayName", json!("(and) [or]"))
        );
    }

    #[test]
    fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
        assert_eq!(
            parsed("a pr or b pr and c pr"),
            or(present("a"), and(present("b"), present("c")))
        );
        assert_eq!(
            parsed("a pr and b pr or c pr"),
            or(and(present("a"), present("b")), present("c"))
        );
        assert_eq!(
            parsed("not (a pr) and b pr"),
            and(not(present("a")), present("b"))
        );
        assert_eq!(
            parsed("not (a pr or b pr) or c pr"),
            or(not(or(present("a"), present("b"))), present("c"))
        );
    }

    #[test]
    fn and_and_or_nest_to_the_left_unless_parenthesised() {
        assert_eq!(
            parsed("a pr and b pr and c pr"),
            and(and(present("a"), present("b")), present("c"))
        );
        assert_eq!(
            parsed("a pr and (b pr and c pr)"),
            and(present("a"), and(present("b"), present("c")))
        );
        assert_eq!(
            parsed("(a pr or b pr) and c pr"),
            and(or(present("a"), present("b")), present("c"))
        );
        assert_eq!(parsed("((a pr))"), present("a"));
    }

    #[test]
    fn keywords_and_names_are_read_in_any_case() {
        assert_eq!(
            parsed(r#"UserName EQ "x" AND Active Pr oR NoT (title SW "a")"#),
            or(
                and(eq("UserName", json!("x")), present("Active")),
                not(compare("title", CompareOp::Sw, json!("a")))
            )
        );
    }

    #[test]
    fn whitespace_is_flexible_around_tokens() {
        assert_eq!(
            parsed("  (userName eq \"x\")and\ttitle pr  "),
            and(eq("userName", json!("x")), present("title"))
        );
    }

    #[test]
    fn unquoted_values_are_read_as_strings_numbers_or_literals() {
        assert_eq!(
            parsed("userName eq alice@example.com"),
            eq("userName", json!("alice@example.com"))
        );
        assert_eq!(
            parsed("externalId eq 12345"),
            eq("externalId", json!(12345))
        );
        assert_eq!(parsed("externalId eq 007"), eq("externalId", json!("007")));
        assert_eq!(
            parsed("(userName eq alice) and active eq True"),
            and(eq("userName", json!("alice")), eq("active", json!(true)))
        );
    }

    #[test]
    fn schema_qualified_paths_keep_their_urn() {
        assert_eq!(
            parsed(&format!("{ENTERPRISE}:employeeNumber eq \"701984\"")),
            eq(&format!("{ENTERPRISE}:employeeNumber"), json!("701984"))
        );
        assert_eq!(
            parsed(&format!("{ENTERPRISE}:manager.value pr")),
            Filter::Present {
                path: AttrPath {
                    schema: Some(ENTERPRISE.into()),
                    attr: "manager".into(),
                    sub: Some("value".into()),
                }
            }
        );
    }

    #[test]
    fn value_paths_hold_a_filter_over_sub_attributes() {
        assert_eq!(
            parsed(r#"emails[type eq "work" and primary eq true]"#),
            value_path(
                "emails",
                and(eq("type", json!("work")), eq("primary", json!(true)))
            )
        );
        assert_eq!(
            parsed(r#"members[value eq "abc"] or not (emails[not (type pr)])"#),
            or(
                value_path("members", eq("value", json!("abc"))),
                not(value_path("emails", not(present("type"))))
            )
        );
        assert_eq!(
            parsed(&format!("{USER_SCHEMA_ID}:emails[type eq \"work\"]")),
            value_path(
                &format!("{USER_SCHEMA_ID}:emails"),
                eq("type", json!("work"))
            )
        );
    }

    #[test]
    fn a_sub_attribute_test_after_a_value_path_joins_its_filter() {
        assert_eq!(
            parsed(r#"emails[type eq "work"].value eq "x""#),
            value_path(
                "emails",
                and(eq("type", json!("work")), eq("value", json!("x")))
            )
        );
        assert_eq!(
            parsed(r#"emails[type eq "work" or type eq "home"].display pr and title pr"#),
            and(
                value_path(
                    "emails",
                    and(
                        or(eq("type", json!("work")), eq("type", json!("home"))),
                        present("display")
                    )
                ),
                present("title")
            )
        );
    }

    #[test]
    fn the_filters_the_sample_flows_send_parse() {
        let run = "r1";
        let cases = [
            (
                format!(r#"displayName eq "ent-finance-{run}""#),
                eq("displayName", json!(format!("ent-finance-{run}"))),
            ),
            (
                format!(r#"externalId eq "{run}-0000-4000-8000-000000000000""#),
                eq(
                    "externalId",
                    json!(format!("{run}-0000-4000-8000-000000000000")),
                ),
            ),
            (
                format!(r#"userName eq "PG{run}-2@EXAMPLE.COM""#),
                eq("userName", json!(format!("PG{run}-2@EXAMPLE.COM"))),
            ),
            (
                format!(r#"userName sw "pg{run}-""#),
                compare("userName", CompareOp::Sw, json!(format!("pg{run}-"))),
            ),
            (
                format!(
                    r#"userName sw "pg{run}-" AND (title eq "Analyst" or title pr) and not (active eq false)"#
                ),
                and(
                    and(
                        compare("userName", CompareOp::Sw, json!(format!("pg{run}-"))),
                        or(eq("title", json!("Analyst")), present("title")),
                    ),
                    not(eq("active", json!(false))),
                ),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parsed(&input), expected, "{input}");
        }
    }

    #[test]
    fn the_paging_filter_selects_active_users_with_a_title_or_analysts() {
        let users = [
            json!({ "userName": "pg-1@example.com", "title": "Analyst", "active": true }),
            json!({ "userName": "pg-2@example.com", "title": "Engineer", "active": true }),
            json!({ "userName": "pg-3@example.com", "title": "Analyst", "active": false }),
            json!({ "userName": "pg-4@example.com", "title": "Analyst" }),
            json!({ "userName": "pg-5@example.com", "active": true }),
            json!({ "userName": "other@example.com", "title": "Analyst", "active": true }),
        ];
        let filter = parsed(
            r#"userName sw "pg-" AND (title eq "Analyst" or title pr) and not (active eq false)"#,
        );
        let selected: Vec<&str> = users
            .iter()
            .filter(|user| filter.matches(user, &USER))
            .filter_map(|user| user["userName"].as_str())
            .collect();
        assert_eq!(
            selected,
            ["pg-1@example.com", "pg-2@example.com", "pg-4@example.com"]
        );
    }

    #[test]
    fn malformed_filters_are_errors() {
        for input in [
            "",
            "   ",
            "userName",
            "userName eq",
            r#"userName eq "x" and"#,
            r#"userName eq "x" or"#,
            r#"(userName eq "x""#,
            r#"userName eq "x")"#,
            r#"userName xx "a""#,
            r#"userName eq "unterminated"#,
            r#"userName eq "bad \q escape""#,
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"]]"#,
            r#"emails[type eq "work"].value"#,
            r#"emails[type eq "work"]."#,
            r#"emails[emails[type pr]]"#,
            r#"emails[urn:x:y:type pr]"#,
            r#"name.givenName[type pr]"#,
            r#"not userName pr"#,
            r#"not ()"#,
            r#"userName eq "x" garbage"#,
            r#"userName eq alice smith"#,
            r#"userName eq and"#,
            r#"userName eq pr"#,
            r#"userName eq "x" and and title pr"#,
            r#"1userName pr"#,
            r#"a.b.c pr"#,
            r#"userName pr []"#,
        ] {
            assert!(parse(input).is_err(), "{input:?} should not parse");
        }
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        assert_eq!(
            parse("userName eq"),
            Err(FilterError::Syntax {
                subject: "filter",
                position: 12,
                expected: "a value (a quoted string, a number, true, false or null)".into(),
                found: "the end of input".into(),
            })
        );
        assert_eq!(
            parse(r#"userName xx "a""#).map_err(|err| err.to_string()),
            Err(
                "failed to parse filter at position 10: expected an operator (eq, ne, co, sw, ew, \
                 gt, ge, lt, le, pr), found 'xx'"
                    .into()
            )
        );
        assert_eq!(
            parse(r#"(userName eq "é""#).map_err(|err| err.to_string()),
            Err(
                "failed to parse filter at position 17: expected 'and', 'or' or ')', found the \
                 end of input"
                    .into()
            )
        );
        assert_eq!(
            parse(r#"userName eq "x" garbage"#).map_err(|err| err.to_string()),
            Err(
                "failed to parse filter at position 17: expected 'and', 'or' or the end of the \
                 filter, found 'garbage'"
                    .into()
            )
        );
    }

    #[test]
    fn filter_errors_answer_400_invalid_filter() {
        let err = ScimError::from(parse("userName eq").expect_err("incomplete filter"));
        assert_eq!(
            (err.status, err.scim_type),
            (400, Some(crate::scim::error::ScimType::InvalidFilter))
        );
        assert!(err.detail.contains("position 12"), "{}", err.detail);
    }

    #[test]
    fn long_and_deep_input_is_refused_without_recursing() {
        let too_long = "(".repeat(100_000);
        assert_eq!(
            parse(&too_long),
            Err(FilterError::TooLong {
                subject: "filter",
                len: 100_000
            })
        );
        assert!(matches!(
            parse(&"(".repeat(4000)),
            Err(FilterError::TooDeep { .. })
        ));
        assert!(matches!(
            parse(&"not (".repeat(1000)),
            Err(FilterError::TooDeep { .. })
        ));
        let deep = format!(
            "{}a pr{}",
            "(".repeat(MAX_FILTER_DEPTH),
            ")".repeat(MAX_FILTER_DEPTH)
        );
        assert_eq!(parse(&deep), Ok(present("a")));
        let too_deep = format!(
            "{}a pr{}",
            "(".repeat(MAX_FILTER_DEPTH + 1),
            ")".repeat(MAX_FILTER_DEPTH + 1)
        );
        assert_eq!(
            parse(&too_deep),
            Err(FilterError::TooDeep {
                subject: "filter",
                position: MAX_FILTER_DEPTH + 1
            })
        );
        let long_chain = vec!["a pr"; 900].join(" and ");
        let chain = parse(&long_chain).expect("a long chain within the length limit parses");
        assert_eq!(chain.to_string(), long_chain);
        assert!(!chain.matches(&json!({}), &USER));
    }

    #[test]
    fn display_prints_canonical_text() {
        let cases = [
            (
                r#"UserName EQ "x" AND Active Pr"#,
                r#"UserName eq "x" and Active pr"#,
            ),
            ("a pr and (b pr and c pr)", "a pr and (b pr and c pr)"),
            ("(a pr and b pr) and c pr", "a pr and b pr and c pr"),
            (
                "(a pr or b pr) and not (c pr)",
                "(a pr or b pr) and not (c pr)",
            ),
            ("a pr or (b pr and c pr)", "a pr or b pr and c pr"),
            ("userName eq alice", r#"userName eq "alice""#),
            (
                r#"emails[type eq "work"].value eq "x""#,
                r#"emails[type eq "work" and value eq "x"]"#,
            ),
            (r#"title eq "tab\there""#, r#"title eq "tab\there""#),
            ("count gt -1.5", "count gt -1.5"),
        ];
        for (input, canonical) in cases {
            assert_eq!(parsed(input).to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn strings_compare_as_the_schema_says() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                (r#"userName eq "BJENSEN@example.com""#, true),
                (r#"UserName Eq "bjensen@example.com""#, true),
                (r#"displayName co "JENSEN""#, true),
                (r#"name.givenName sw "barb""#, true),
                (r#"name.familyName ew "SEN""#, true),
                (r#"userName gt "a""#, true),
                (r#"userName lt "a""#, false),
                (r#"userName ne "bjensen@example.com""#, false),
                (r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false),
                (r#"id eq "2819c223-7f76-453a-919d-413861904646""#, true),
                (r#"externalId eq "bjensen-ext""#, false),
                (r#"externalId eq "BJensen-Ext""#, true),
                ("userName eq bjensen@example.com", true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn multi_valued_attributes_match_when_any_value_does() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                (r#"emails co "jensen.org""#, true),
                (r#"emails eq "BABS@JENSEN.ORG""#, true),
                (r#"emails.value ew "@example.com""#, true),
                (r#"emails.type eq "other""#, false),
                (r#"emails ne "babs@jensen.org""#, false),
                (r#"emails[type eq "work" and primary eq true]"#, true),
                (r#"emails[type eq "home" and primary eq true]"#, false),
                (r#"emails[type eq "home" and not (primary eq true)]"#, true),
                (
                    r#"emails[type eq "work"].value eq "bjensen@example.com""#,
                    true,
                ),
                (
                    r#"emails[type eq "home"].value eq "bjensen@example.com""#,
                    false,
                ),
                (r#"emails[value co "jensen" and type eq "home"]"#, true),
                (r#"emails[display pr]"#, false),
                (r#"emails[shoeSize pr]"#, false),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn a_single_object_where_a_list_belongs_still_matches() {
        let user =
            json!({ "userName": "x", "emails": { "value": "x@example.com", "type": "work" } });
        let failures = mismatches(
            &user,
            &USER,
            &[
                (r#"emails eq "x@example.com""#, true),
                (r#"emails[type eq "work"]"#, true),
                ("emails pr", true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn booleans_compare_as_booleans_even_when_stored_as_strings() {
        let stored_string = json!({ "userName": "x", "active": "False" });
        let failures = mismatches(
            &stored_string,
            &USER,
            &[
                ("active eq false", true),
                ("active eq true", false),
                (r#"active eq "false""#, true),
                ("active ne true", true),
                ("active gt false", false),
                (r#"active co "al""#, false),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
        assert!(parsed("active eq true").matches(&barbara(), &USER));
    }

    #[test]
    fn date_times_compare_as_instants() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                (r#"meta.lastModified gt "2011-05-13T04:42:33Z""#, true),
                (r#"meta.lastModified gt "2011-05-13T04:42:34Z""#, false),
                (r#"meta.lastModified ge "2011-05-13T04:42:34Z""#, true),
                (r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#, true),
                (r#"meta.lastModified eq "2011-05-13T04:42:34.000Z""#, true),
                (r#"meta.lastModified lt "2011-05-13T04:42:35""#, true),
                (r#"meta.created lt "2010-01-23T04:56:22Z""#, false),
                (r#"meta.created lt "not a date""#, false),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn numbers_compare_as_numbers() {
        static COUNTED_CORE: SchemaDef = SchemaDef {
            id: "urn:example:Counted",
            name: "Counted",
            description: "A resource with a number.",
            attributes: &[AttributeDef {
                name: "count",
                kind: AttrType::Integer,
                multi_valued: false,
                required: false,
                case_exact: false,
                mutability: Mutability::ReadWrite,
                returned: Returned::Default,
                uniqueness: Uniqueness::None,
                canonical_values: &[],
                reference_types: &[],
                sub_attributes: &[],
                description: "A count.",
            }],
        };
        static COUNTED: ResourceSchema = ResourceSchema {
            name: "Counted",
            endpoint: "/Counted",
            core: &COUNTED_CORE,
            extensions: &[],
        };
        let failures = mismatches(
            &json!({ "count": 10 }),
            &COUNTED,
            &[
                ("count eq 10", true),
                ("count eq 10.0", true),
                ("count gt 9.5", true),
                ("count lt 9", false),
                ("count le 10", true),
                (r#"count eq "10""#, true),
                ("count co 1", false),
                ("count ne 11", true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn presence_needs_a_non_empty_value() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                ("title pr", true),
                ("nickName pr", false),
                ("phoneNumbers pr", false),
                ("emails pr", true),
                ("name pr", true),
                ("name.middleName pr", false),
                ("locale pr", false),
                ("emails.display pr", false),
                ("title eq null", false),
                ("nickName eq null", true),
                ("title ne null", true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn absent_attributes_fail_every_test_but_ne() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                (r#"locale eq "en""#, false),
                (r#"locale co "e""#, false),
                (r#"locale ne "en""#, true),
                (r#"not (locale eq "en")"#, true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn unknown_attributes_match_nothing() {
        let user = json!({ "userName": "x", "shoeSize": "42", "name": { "nick": "y" } });
        let failures = mismatches(
            &user,
            &USER,
            &[
                (r#"shoeSize eq "42""#, false),
                (r#"shoeSize ne "41""#, false),
                ("shoeSize pr", false),
                ("name.nick pr", false),
                (r#"urn:example:Other:userName eq "x""#, false),
                (r#"not (shoeSize eq "42")"#, true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn extension_and_common_attributes_match_with_or_without_urn() {
        let failures = mismatches(
            &barbara(),
            &USER,
            &[
                (&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#), true),
                (
                    r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:EMPLOYEENUMBER eq "701984""#,
                    true,
                ),
                (r#"employeeNumber eq "701984""#, true),
                (
                    &format!(
                        r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#
                    ),
                    true,
                ),
                (
                    &format!(r#"{ENTERPRISE}:manager eq "26118915-6090-4610-87e4-49d8ca9f808d""#),
                    true,
                ),
                (
                    &format!(
                        r#"{ENTERPRISE}:manager.value eq "26118915-6090-4610-87E4-49D8CA9F808D""#
                    ),
                    false,
                ),
                (
                    &format!(r#"{USER_SCHEMA_ID}:userName eq "bjensen@example.com""#),
                    true,
                ),
                (r#"meta.resourceType eq "User""#, true),
                (r#"meta.resourceType eq "user""#, false),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn resource_keys_match_without_regard_to_case() {
        let user =
            json!({ "UserName": "x", "NAME": { "GivenName": "Y" }, "Emails": [{ "Value": "z" }] });
        let failures = mismatches(
            &user,
            &USER,
            &[
                (r#"userName eq "X""#, true),
                (r#"name.givenName eq "y""#, true),
                (r#"emails eq "Z""#, true),
                (r#"emails[value eq "z"]"#, true),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn group_members_match_by_exact_id() {
        let group = json!({
            "displayName": "Finance",
            "members": [{ "value": "abc-123", "type": "User" }, { "value": "def-456" }],
        });
        let failures = mismatches(
            &group,
            &GROUP,
            &[
                (r#"displayName eq "FINANCE""#, true),
                (r#"members eq "abc-123""#, true),
                (r#"members eq "ABC-123""#, false),
                (r#"members[value eq "def-456"]"#, true),
                (r#"members.value eq "def-456""#, true),
                (r#"members[type eq "user" and value eq "abc-123"]"#, true),
                (r#"members[type eq "Group"]"#, false),
                (r#"userName pr"#, false),
            ],
        );
        assert_eq!(failures, Vec::<String>::new());
    }

    #[test]
    fn eq_terms_come_from_the_and_chain_only() {
        let filter = parsed(
            r#"userName eq "x" and (title eq "a" or title eq "b") and not (id eq "y") and externalId EQ "e" and nickName eq null and emails[value eq "z"]"#,
        );
        let terms = filter.eq_terms();
        assert_eq!(
            terms,
            vec![
                (&path("userName"), &json!("x")),
                (&path("externalId"), &json!("e"))
            ]
        );
        assert_eq!(
            parsed(r#"userName eq "x" or userName eq "y""#).eq_terms(),
            vec![]
        );
        assert_eq!(parsed(r#"userName sw "x""#).eq_terms(), vec![]);
    }

    #[test]
    fn validate_reports_comparisons_the_rfc_forbids() {
        let results: Vec<(&str, bool)> = [
            r#"userName eq "x""#,
            "active gt true",
            "active eq false",
            r#"active eq "True""#,
            r#"active eq "yes""#,
            r#"meta.created gt "2011-05-13T04:42:34Z""#,
            r#"meta.created gt "yesterday""#,
            r#"name eq "x""#,
            r#"emails eq "x""#,
            "emails[primary gt false]",
            r#"emails[primary eq "maybe"]"#,
            r#"x509Certificates.value lt "a""#,
            "shoeSize gt true",
            "title eq null",
        ]
        .into_iter()
        .map(|input| (input, parsed(input).validate(&USER).is_ok()))
        .collect();
        assert_eq!(
            results,
            [
                (r#"userName eq "x""#, true),
                ("active gt true", false),
                ("active eq false", true),
                (r#"active eq "True""#, true),
                (r#"active eq "yes""#, false),
                (r#"meta.created gt "2011-05-13T04:42:34Z""#, true),
                (r#"meta.created gt "yesterday""#, false),
                (r#"name eq "x""#, false),
                (r#"emails eq "x""#, true),
                ("emails[primary gt false]", false),
                (r#"emails[primary eq "maybe"]"#, false),
                (r#"x509Certificates.value lt "a""#, false),
                ("shoeSize gt true", true),
                ("title eq null", true),
            ]
        );
        assert_eq!(
            parsed("active gt true")
                .validate(&USER)
                .map_err(|err| err.to_string()),
            Err(
                "failed to compare active: gt, ge, lt and le do not apply to boolean or binary \
                 attributes"
                    .into()
            )
        );
    }

    #[test]
    fn patch_paths_split_attribute_filter_and_sub_attribute() {
        let cases = [
            (
                "members",
                PatchPath {
                    attr: path("members"),
                    filter: None,
                    sub: None,
                },
            ),
            (
                "name.givenName",
                PatchPath {
                    attr: path("name"),
                    filter: None,
                    sub: Some("givenName".into()),
                },
            ),
            (
                r#"members[value eq "abc"]"#,
                PatchPath {
                    attr: path("members"),
                    filter: Some(eq("value", json!("abc"))),
                    sub: None,
                },
            ),
            (
                r#"emails[type eq "work"].value"#,
                PatchPath {
                    attr: path("emails"),
                    filter: Some(eq("type", json!("work"))),
                    sub: Some("value".into()),
                },
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                PatchPath {
                    attr: path(&format!("{ENTERPRISE}:manager")),
                    filter: None,
                    sub: None,
                },
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                PatchPath {
                    attr: path(&format!("{ENTERPRISE}:manager")),
                    filter: None,
                    sub: Some("value".into()),
                },
            ),
            (
                r#" Members[Value EQ "abc" or value eq def] "#,
                PatchPath {
                    attr: path("Members"),
                    filter: Some(or(eq("Value", json!("abc")), eq("value", json!("def")))),
                    sub: None,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_patch_path(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn patch_path_target_rejoins_the_sub_attribute() {
        let patch_path = parse_patch_path(r#"emails[type eq "work"].value"#).expect("valid path");
        assert_eq!(patch_path.target(), path("emails.value"));
        assert_eq!(patch_path.to_string(), r#"emails[type eq "work"].value"#);
        assert_eq!(
            parse_patch_path("name.givenName").map(|p| p.to_string()),
            Ok("name.givenName".into())
        );
    }

    #[test]
    fn malformed_patch_paths_are_errors() {
        for input in [
            "",
            "emails[",
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"]x"#,
            r#"emails[type eq "work"]."#,
            r#"emails[type eq "work"].value.display"#,
            r#"emails[type eq "work"].value eq "x""#,
            r#"name.givenName[type pr]"#,
            "members value",
            "a.b.c",
        ] {
            assert!(
                parse_patch_path(input).is_err(),
                "{input:?} should not parse"
            );
        }
        assert_eq!(
            parse_patch_path(r#"emails[type eq "work"] x"#).map_err(|err| err.to_string()),
            Err(
                "failed to parse path at position 24: expected the end of the path, found 'x'"
                    .into()
            )
        );
    }

    #[test]
    fn value_filters_select_elements_for_patch() {
        let emails = USER.resolve(&path("emails")).expect("emails exists").attr;
        let filter = parsed(r#"type eq "WORK" and primary eq true"#);
        assert!(filter.matches_element(&json!({ "type": "work", "primary": true }), emails));
        assert!(!filter.matches_element(&json!({ "type": "work" }), emails));
        assert!(!filter.matches_element(&json!("work"), emails));
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}".prop_filter("'not' opens a negation", |name| {
            !name.eq_ignore_ascii_case("not")
        })
    }

    fn arb_schema() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            Just(USER_SCHEMA_ID.to_owned()),
            Just(ENTERPRISE.to_owned()),
            "urn:[a-z]{1,5}(:[a-zA-Z0-9.]{1,5}){0,3}",
        ])
    }

    fn arb_path() -> impl Strategy<Value = AttrPath> {
        (arb_schema(), arb_name(), prop::option::of(arb_name()))
            .prop_map(|(schema, attr, sub)| AttrPath { schema, attr, sub })
    }

    fn arb_op() -> impl Strategy<Value = CompareOp> {
        prop::sample::select(CompareOp::ALL.to_vec())
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            "[ -~]{0,12}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    /// Trees of `not`, `and` and `or` over `leaf`.
    fn arb_tree(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
                (inner.clone(), inner).prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
            ]
        })
        .boxed()
    }

    /// Filters as they appear inside `[...]`: bare sub-attribute names, no value paths.
    fn arb_element_filter() -> BoxedStrategy<Filter> {
        let leaf = prop_oneof![
            (arb_name(), arb_op(), arb_value()).prop_map(|(name, op, value)| Filter::Compare {
                path: AttrPath::new(name),
                op,
                value
            }),
            arb_name().prop_map(|name| Filter::Present {
                path: AttrPath::new(name)
            }),
        ];
        arb_tree(leaf.boxed())
    }

    fn arb_filter() -> BoxedStrategy<Filter> {
        let value_path_attr = (arb_schema(), arb_name()).prop_map(|(schema, attr)| AttrPath {
            schema,
            attr,
            sub: None,
        });
        let leaf = prop_oneof![
            (arb_path(), arb_op(), arb_value()).prop_map(|(path, op, value)| Filter::Compare {
                path,
                op,
                value
            }),
            arb_path().prop_map(|path| Filter::Present { path }),
            (value_path_attr, arb_element_filter()).prop_map(|(attr, filter)| Filter::ValuePath {
                attr,
                filter: Box::new(filter)
            }),
        ];
        arb_tree(leaf.boxed())
    }

    fn arb_patch_path() -> impl Strategy<Value = PatchPath> {
        let attr = (arb_schema(), arb_name()).prop_map(|(schema, attr)| AttrPath {
            schema,
            attr,
            sub: None,
        });
        (
            attr,
            prop::option::of(arb_element_filter()),
            prop::option::of(arb_name()),
        )
            .prop_map(|(attr, filter, sub)| PatchPath { attr, filter, sub })
    }

    proptest! {
        #[test]
        fn printed_filters_parse_back_to_the_same_tree(filter in arb_filter()) {
            let printed = filter.to_string();
            prop_assert_eq!(parse(&printed), Ok(filter), "{}", printed);
        }

        #[test]
        fn printed_patch_paths_parse_back_to_the_same_path(patch_path in arb_patch_path()) {
            let printed = patch_path.to_string();
            prop_assert_eq!(parse_patch_path(&printed), Ok(patch_path), "{}", printed);
        }

        #[test]
        fn arbitrary_text_never_panics(input in any::<String>()) {
            let _ = parse(&input);
            let _ = parse_patch_path(&input);
        }

        #[test]
        fn filter_like_text_never_panics(
            input in r#"([a-zA-Z.:$\[\]()" \\]|eq|and|or|not|pr|\\u00e9|é){0,40}"#,
        ) {
            if let Ok(filter) = parse(&input) {
                let _ = filter.matches(&barbara(), &USER);
                prop_assert_eq!(parse(&filter.to_string()), Ok(filter));
            }
            let _ = parse_patch_path(&input);
        }

        #[test]
        fn random_filters_evaluate_without_panicking(filter in arb_filter()) {
            let _ = filter.matches(&barbara(), &USER);
            let _ = filter.validate(&USER);
            let _ = filter.eq_terms();
        }
    }
}
