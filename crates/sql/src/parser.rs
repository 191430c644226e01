//! Text to statements: sqlparser's PostgreSQL dialect for standard SQL, plus Materialize-style
//! statements sqlparser does not know (`CREATE SOURCE`, `CREATE SINK`, `DROP SOURCE|SINK`,
//! `SHOW SOURCES`..., `SUBSCRIBE`/`TAIL`), parsed with sqlparser's token API so every error
//! still points into the text.

use std::sync::Arc;

use sqlparser::ast;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::{split_location, Positions, SqlError};
use crate::statement::{Format, LoadGenerator, LoadGeneratorKind};

/// Where sqlparser's dialect for viewcast is made (kept private: the generated type has no docs).
mod dialect {
    use sqlparser::derive_dialect;
    use sqlparser::dialect::PostgreSqlDialect;

    // PostgreSQL's dialect (still recognized as it by sqlparser's `dialect_of!` checks) that also
    // accepts an empty `IN ()` list, SQLite's extension: `x IN ()` is false and `x NOT IN ()` true,
    // whatever `x` is (sqllogictest's evidence files use it without marking it SQLite-only).
    derive_dialect!(
        ViewcastDialect,
        PostgreSqlDialect,
        preserve_type_id = true,
        overrides = { supports_in_empty_list = true }
    );
}
use dialect::ViewcastDialect;

/// Deepest expression nesting accepted; deeper input is a syntax error rather than a stack overflow.
const RECURSION_LIMIT: usize = 64;

/// One parsed statement, with the text it came from so planning errors can point into it.
#[derive(Clone, Debug)]
pub struct Parsed {
    text: Arc<str>,
    positions: Arc<Positions>,
    /// Byte range of this statement within `text`.
    range: (usize, usize),
    /// 1-based character offset of the statement's first token.
    start: Option<usize>,
    pub(crate) ast: Ast,
}

impl Parsed {
    /// This statement's own text (without the trailing semicolon).
    pub fn sql(&self) -> &str {
        &self.text[self.range.0..self.range.1]
    }

    pub(crate) fn start(&self) -> Option<usize> {
        self.start
    }

    pub(crate) fn offset(&self, loc: Location) -> Option<usize> {
        self.positions.offset(loc)
    }
}

/// The statement forms the planner understands.
#[derive(Clone, Debug)]
pub(crate) enum Ast {
    Standard(Box<ast::Statement>),
    CreateSource(CreateSourceAst),
    CreateSink(CreateSinkAst),
    Drop { kind: crate::ItemKind, names: Vec<ast::ObjectName>, if_exists: bool, cascade: bool },
    Show(ShowAst),
    Subscribe(SubscribeAst),
}

#[derive(Clone, Debug)]
pub(crate) struct CreateSourceAst {
    pub name: ast::ObjectName,
    pub if_not_exists: bool,
    pub connector: ConnectorAst,
}

#[derive(Clone, Debug)]
pub(crate) enum ConnectorAst {
    LoadGenerator(LoadGenerator),
    Sse { url: String, include_metadata: bool },
    Webhook { format: Format },
    File { path: String, tail: bool, format: Format },
    Upstream { url: String, view: String },
}

#[derive(Clone, Debug)]
pub(crate) struct CreateSinkAst {
    pub name: ast::ObjectName,
    pub if_not_exists: bool,
    pub from: ast::ObjectName,
    pub url: String,
    /// `WITH (SNAPSHOT = b)`: POST the view's contents first (default true).
    pub snapshot: bool,
    /// `WITH (TOKEN = '...')`: sent as `Authorization: Bearer ...`.
    pub token: Option<String>,
    /// `WITH (TIMEOUT = '10s')`: per-request timeout.
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) enum ShowAst {
    Items(crate::ItemKind),
    Objects,
    Columns(ast::ObjectName),
    Indexes(Option<ast::ObjectName>),
    Create(crate::ItemKind, ast::ObjectName),
    Variable(String),
}

#[derive(Clone, Debug)]
pub(crate) enum SubscribeTargetAst {
    Name(ast::ObjectName),
    Query(Box<ast::Query>),
}

#[derive(Clone, Debug)]
pub(crate) struct SubscribeAst {
    pub target: SubscribeTargetAst,
    pub upsert_key: Option<Vec<ast::Ident>>,
    pub snapshot: bool,
    pub progress: bool,
    pub as_of: Option<u64>,
    pub up_to: Option<u64>,
}

/// Parses `sql` into statements. Empty statements (`;;`) are skipped.
pub fn parse(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let text: Arc<str> = Arc::from(sql);
    let positions = Arc::new(Positions::new(sql));
    let to_error = |e: ParserError| -> SqlError {
        let message = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "statement is too deeply nested".to_string(),
        };
        let (message, loc) = split_location(&message);
        // Errors at the end of input carry no location; Postgres points just past the text.
        let at_end = message.ends_with("found: EOF").then(|| sql.chars().count() + 1);
        SqlError::syntax(message).at(loc.and_then(|l| positions.offset(l)).or(at_end))
    };
    let dialect = ViewcastDialect::new();
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(e.message.clone()).at(positions.offset(e.location)))?;
    let byte_offsets = ByteOffsets::new(sql);
    let mut parser = Parser::new(&dialect).with_recursion_limit(RECURSION_LIMIT).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let first = parser.peek_token();
        if first.token == Token::EOF {
            break;
        }
        let ast = parse_one(&mut parser).map_err(|e| match e {
            Custom::Parser(e) => to_error(e),
            Custom::Sql(e, loc) => e.at(loc.and_then(|l| positions.offset(l))),
        })?;
        let last = parser.get_current_token().span.end;
        let range = (byte_offsets.of(first.span.start).unwrap_or(0), byte_offsets.of(last).unwrap_or(sql.len()));
        let range = (range.0.min(sql.len()), range.1.clamp(range.0.min(sql.len()), sql.len()));
        let start = positions.offset(first.span.start);
        out.push(Parsed { text: text.clone(), positions: positions.clone(), range, start, ast });
        let next = parser.peek_token();
        if next.token != Token::EOF && next.token != Token::SemiColon {
            return Err(SqlError::syntax(format!("Expected: end of statement, found: {next}"))
                .at(positions.offset(next.span.start)));
        }
    }
    Ok(out)
}

/// Maps sqlparser locations to byte offsets, to slice a statement's text.
struct ByteOffsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> ByteOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        ByteOffsets { text, line_starts }
    }

    /// Byte offset of the character at `loc` (or the end of the text just past the last one).
    fn of(&self, loc: Location) -> Option<usize> {
        let start = *self.line_starts.get(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let line = &self.text[start..];
        Some(start + line.char_indices().nth(col).map(|(i, _)| i).unwrap_or(line.len()))
    }
}

enum Custom {
    Parser(ParserError),
    Sql(SqlError, Option<Location>),
}

impl From<ParserError> for Custom {
    fn from(e: ParserError) -> Self {
        Custom::Parser(e)
    }
}

type CResult<T> = Result<T, Custom>;

fn word_is(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn peek_word(p: &Parser, word: &str) -> bool {
    word_is(&p.peek_token(), word)
}

fn peek_nth_word(p: &Parser, n: usize, word: &str) -> bool {
    word_is(&p.peek_nth_token(n), word)
}

fn eat_word(p: &mut Parser, word: &str) -> bool {
    if peek_word(p, word) {
        p.next_token();
        true
    } else {
        false
    }
}

fn eat_words(p: &mut Parser, words: &[&str]) -> bool {
    if words.iter().enumerate().all(|(i, w)| peek_nth_word(p, i, w)) {
        for _ in words {
            p.next_token();
        }
        true
    } else {
        false
    }
}

fn expected<T>(p: &Parser, what: &str) -> CResult<T> {
    Err(Custom::Parser(p.expected::<()>(what, p.peek_token()).unwrap_err()))
}

fn expect_word(p: &mut Parser, word: &str) -> CResult<()> {
    if eat_word(p, word) {
        Ok(())
    } else {
        expected(p, word)
    }
}

fn parse_one(p: &mut Parser) -> CResult<Ast> {
    if peek_word(p, "CREATE") {
        let mut n = 1;
        if peek_nth_word(p, n, "OR") && peek_nth_word(p, n + 1, "REPLACE") {
            n += 2;
        }
        if peek_nth_word(p, n, "SOURCE") {
            return parse_create_source(p);
        }
        if peek_nth_word(p, n, "SINK") {
            return parse_create_sink(p);
        }
    }
    if peek_word(p, "DROP") && (peek_nth_word(p, 1, "SOURCE") || peek_nth_word(p, 1, "SINK")) {
        p.next_token();
        let kind = if eat_word(p, "SOURCE") {
            crate::ItemKind::Source
        } else {
            p.next_token();
            crate::ItemKind::Sink
        };
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = p.parse_comma_separated(|p| p.parse_object_name(false))?;
        let cascade = eat_word(p, "CASCADE");
        if !cascade {
            eat_word(p, "RESTRICT");
        }
        return Ok(Ast::Drop { kind, names, if_exists, cascade });
    }
    if peek_word(p, "SHOW") {
        return parse_show(p);
    }
    if peek_word(p, "SUBSCRIBE") || peek_word(p, "TAIL") {
        return parse_subscribe(p);
    }
    let start = p.peek_token().span.start;
    let stmt = p.parse_statement()?;
    Ok(match stmt {
        ast::Statement::Drop { object_type, if_exists, names, cascade, .. } => {
            let kind = match object_type {
                ast::ObjectType::Table => crate::ItemKind::Table,
                ast::ObjectType::View => crate::ItemKind::View,
                ast::ObjectType::MaterializedView => crate::ItemKind::MaterializedView,
                ast::ObjectType::Index => crate::ItemKind::Index,
                other => {
                    return Err(Custom::Sql(SqlError::unsupported(format!("DROP {other}")), Some(start)));
                }
            };
            Ast::Drop { kind, names, if_exists, cascade }
        }
        other => Ast::Standard(Box::new(other)),
    })
}

fn parse_if_not_exists(p: &mut Parser) -> bool {
    p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
}

fn parse_create_source(p: &mut Parser) -> CResult<Ast> {
    expect_word(p, "CREATE")?;
    if peek_word(p, "OR") {
        let at = p.peek_token().span.start;
        return Err(Custom::Sql(SqlError::unsupported("CREATE OR REPLACE SOURCE"), Some(at)));
    }
    expect_word(p, "SOURCE")?;
    let if_not_exists = parse_if_not_exists(p);
    let name = p.parse_object_name(false)?;
    expect_word(p, "FROM")?;
    let connector = if eat_words(p, &["LOAD", "GENERATOR"]) {
        ConnectorAst::LoadGenerator(parse_load_generator(p)?)
    } else if eat_word(p, "SSE") {
        let url = p.parse_literal_string()?;
        let mut include_metadata = false;
        for (_, value) in parse_with_options(p, &["INCLUDE_METADATA"])? {
            include_metadata = value.boolean()?;
        }
        ConnectorAst::Sse { url, include_metadata }
    } else if eat_word(p, "WEBHOOK") {
        expect_word(p, "BODY")?;
        let format = parse_format(p)?;
        ConnectorAst::Webhook { format }
    } else if eat_word(p, "FILE") {
        let path = p.parse_literal_string()?;
        let mut tail = false;
        for (_, value) in parse_with_options(p, &["TAIL"])? {
            tail = value.boolean()?;
        }
        let format = parse_format(p)?;
        ConnectorAst::File { path, tail, format }
    } else if eat_word(p, "UPSTREAM") {
        let url = p.parse_literal_string()?;
        expect_word(p, "SUBSCRIBE")?;
        // Kept as written (quotes included): it is SQL for the upstream, not a name here.
        let view = p.parse_object_name(false)?.to_string();
        ConnectorAst::Upstream { url, view }
    } else {
        return expected(p, "LOAD GENERATOR, SSE, WEBHOOK, FILE or UPSTREAM");
    };
    Ok(Ast::CreateSource(CreateSourceAst { name, if_not_exists, connector }))
}

/// The value of one `WITH (NAME [=] value)` option: omitted (a bare name means true), or a token.
enum OptionValue {
    Omitted(Location),
    Given(TokenWithSpan),
}

impl OptionValue {
    fn boolean(self) -> CResult<bool> {
        match self {
            OptionValue::Omitted(_) => Ok(true),
            OptionValue::Given(t) if word_is(&t, "TRUE") || word_is(&t, "ON") => Ok(true),
            OptionValue::Given(t) if word_is(&t, "FALSE") || word_is(&t, "OFF") => Ok(false),
            other => other.error("TRUE or FALSE"),
        }
    }

    fn string(self) -> CResult<String> {
        match self {
            OptionValue::Given(TokenWithSpan { token: Token::SingleQuotedString(s), .. }) => Ok(s),
            other => other.error("a string literal"),
        }
    }

    fn error<T>(self, what: &str) -> CResult<T> {
        let (found, at) = match self {
            OptionValue::Omitted(at) => ("nothing".to_string(), at),
            OptionValue::Given(t) => (t.token.to_string(), t.span.start),
        };
        Err(Custom::Sql(SqlError::syntax(format!("Expected: {what}, found: {found}")), Some(at)))
    }
}

/// `WITH (NAME [=] value, ...)`, if present, for option names in `allowed` (upper case, matched
/// case-insensitively). Returns each option with its name as written in `allowed`, in order.
fn parse_with_options(p: &mut Parser, allowed: &[&'static str]) -> CResult<Vec<(&'static str, OptionValue)>> {
    let mut out = Vec::new();
    if !eat_word(p, "WITH") {
        return Ok(out);
    }
    p.expect_token(&Token::LParen)?;
    loop {
        let Some(&name) = allowed.iter().find(|n| eat_word(p, n)) else {
            return expected(p, &format!("one of the options {}", allowed.join(", ")));
        };
        let _ = p.consume_token(&Token::Eq);
        let next = p.peek_token();
        let value = if matches!(next.token, Token::RParen | Token::Comma) {
            OptionValue::Omitted(next.span.start)
        } else {
            OptionValue::Given(p.next_token())
        };
        out.push((name, value));
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)?;
    Ok(out)
}

fn parse_format(p: &mut Parser) -> CResult<Format> {
    expect_word(p, "FORMAT")?;
    if eat_word(p, "JSON") {
        Ok(Format::Json)
    } else if eat_word(p, "TEXT") {
        Ok(Format::Text)
    } else if eat_word(p, "REGEX") {
        Ok(Format::Regex { pattern: p.parse_literal_string()? })
    } else {
        expected(p, "JSON, TEXT or REGEX")
    }
}

fn parse_number(p: &mut Parser) -> CResult<f64> {
    let tok = p.peek_token();
    let v = p.parse_number_value()?;
    match v.value {
        ast::Value::Number(n, _) => match n.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
            _ => Err(Custom::Parser(p.expected::<()>("a non-negative number", tok).unwrap_err())),
        },
        _ => Err(Custom::Parser(p.expected::<()>("a number", tok).unwrap_err())),
    }
}

fn parse_load_generator(p: &mut Parser) -> CResult<LoadGenerator> {
    let kind = if eat_word(p, "WIKIPEDIA") {
        LoadGeneratorKind::Wikipedia
    } else {
        let t = p.peek_token();
        return match t.token {
            Token::Word(_) => {
                Err(Custom::Sql(SqlError::unsupported(format!("LOAD GENERATOR {t}")), Some(t.span.start)))
            }
            _ => expected(p, "WIKIPEDIA"),
        };
    };
    let mut gen = LoadGenerator { kind, events_per_second: None, seed: None, max_events: None, tick_ms: None };
    if !p.consume_token(&Token::LParen) {
        return Ok(gen);
    }
    loop {
        if eat_words(p, &["EVENTS", "PER", "SECOND"]) {
            gen.events_per_second = Some(parse_number(p)?);
        } else if eat_word(p, "SEED") {
            gen.seed = Some(p.parse_literal_uint()?);
        } else if eat_words(p, &["MAX", "EVENTS"]) || eat_words(p, &["TOTAL", "EVENTS"]) {
            gen.max_events = Some(p.parse_literal_uint()?);
        } else if eat_words(p, &["TICK", "INTERVAL"]) {
            let tok = p.peek_token();
            let text = p.parse_literal_string()?;
            gen.tick_ms = Some(parse_millis(&text).ok_or_else(|| {
                Custom::Parser(p.expected::<()>("a duration such as '100ms' or '1s'", tok).unwrap_err())
            })?);
        } else if eat_words(p, &["AS", "FAST", "AS", "POSSIBLE"]) || eat_words(p, &["MAX", "SPEED"]) {
            gen.events_per_second = Some(0.0);
        } else {
            return expected(
                p,
                "a load generator option (EVENTS PER SECOND, SEED, MAX EVENTS, TICK INTERVAL, MAX SPEED)",
            );
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)?;
    Ok(gen)
}

/// `'250ms'`, `'1s'`, `'2 s'`, `'100'` (milliseconds).
fn parse_millis(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0 && v * scale < 1e15).then(|| (v * scale).round() as u64)
}

fn parse_create_sink(p: &mut Parser) -> CResult<Ast> {
    expect_word(p, "CREATE")?;
    if peek_word(p, "OR") {
        let at = p.peek_token().span.start;
        return Err(Custom::Sql(SqlError::unsupported("CREATE OR REPLACE SINK"), Some(at)));
    }
    expect_word(p, "SINK")?;
    let if_not_exists = parse_if_not_exists(p);
    let name = p.parse_object_name(false)?;
    expect_word(p, "FROM")?;
    let from = p.parse_object_name(false)?;
    expect_word(p, "INTO")?;
    expect_word(p, "WEBHOOK")?;
    let url = p.parse_literal_string()?;
    let mut sink = CreateSinkAst { name, if_not_exists, from, url, snapshot: true, token: None, timeout_ms: None };
    for (option, value) in parse_with_options(p, &["SNAPSHOT", "TOKEN", "TIMEOUT"])? {
        match option {
            "SNAPSHOT" => sink.snapshot = value.boolean()?,
            "TOKEN" => sink.token = Some(value.string()?),
            _ => {
                let text = value.string()?;
                sink.timeout_ms = Some(parse_millis(&text).ok_or_else(|| {
                    let msg = format!("invalid TIMEOUT '{text}': expected a duration such as '500ms' or '10s'");
                    Custom::Sql(SqlError::new(crate::code::INVALID_PARAMETER_VALUE, msg), None)
                })?);
            }
        }
    }
    Ok(Ast::CreateSink(sink))
}

fn parse_show(p: &mut Parser) -> CResult<Ast> {
    expect_word(p, "SHOW")?;
    let show = if eat_word(p, "SOURCES") {
        ShowAst::Items(crate::ItemKind::Source)
    } else if eat_word(p, "TABLES") {
        ShowAst::Items(crate::ItemKind::Table)
    } else if eat_word(p, "VIEWS") {
        ShowAst::Items(crate::ItemKind::View)
    } else if eat_words(p, &["MATERIALIZED", "VIEWS"]) {
        ShowAst::Items(crate::ItemKind::MaterializedView)
    } else if eat_word(p, "SINKS") {
        ShowAst::Items(crate::ItemKind::Sink)
    } else if eat_word(p, "OBJECTS") {
        ShowAst::Objects
    } else if eat_word(p, "INDEXES") || eat_word(p, "INDEX") || eat_word(p, "KEYS") {
        let on = if eat_word(p, "FROM") || eat_word(p, "IN") || eat_word(p, "ON") {
            Some(p.parse_object_name(false)?)
        } else {
            None
        };
        ShowAst::Indexes(on)
    } else if eat_word(p, "COLUMNS") {
        if !eat_word(p, "FROM") {
            expect_word(p, "IN")?;
        }
        ShowAst::Columns(p.parse_object_name(false)?)
    } else if eat_word(p, "CREATE") {
        let kind = if eat_word(p, "SOURCE") {
            crate::ItemKind::Source
        } else if eat_word(p, "TABLE") {
            crate::ItemKind::Table
        } else if eat_word(p, "VIEW") {
            crate::ItemKind::View
        } else if eat_words(p, &["MATERIALIZED", "VIEW"]) {
            crate::ItemKind::MaterializedView
        } else if eat_word(p, "SINK") {
            crate::ItemKind::Sink
        } else if eat_word(p, "INDEX") {
            crate::ItemKind::Index
        } else {
            return expected(p, "SOURCE, TABLE, VIEW, MATERIALIZED VIEW, SINK or INDEX");
        };
        ShowAst::Create(kind, p.parse_object_name(false)?)
    } else {
        let ident = p.parse_identifier()?;
        ShowAst::Variable(normalize_ident(&ident))
    };
    Ok(Ast::Show(show))
}

fn parse_subscribe(p: &mut Parser) -> CResult<Ast> {
    p.next_token();
    eat_word(p, "TO");
    let target = if p.consume_token(&Token::LParen) {
        let q = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        SubscribeTargetAst::Query(q)
    } else {
        SubscribeTargetAst::Name(p.parse_object_name(false)?)
    };
    let mut sub = SubscribeAst { target, upsert_key: None, snapshot: true, progress: false, as_of: None, up_to: None };
    loop {
        if eat_word(p, "ENVELOPE") {
            expect_word(p, "UPSERT")?;
            p.expect_token(&Token::LParen)?;
            expect_word(p, "KEY")?;
            p.expect_token(&Token::LParen)?;
            sub.upsert_key = Some(p.parse_comma_separated(|p| p.parse_identifier())?);
            p.expect_token(&Token::RParen)?;
            p.expect_token(&Token::RParen)?;
        } else if peek_word(p, "WITH") {
            for (name, value) in parse_with_options(p, &["SNAPSHOT", "PROGRESS"])? {
                let value = value.boolean()?;
                match name {
                    "SNAPSHOT" => sub.snapshot = value,
                    _ => sub.progress = value,
                }
            }
        } else if eat_words(p, &["AS", "OF"]) {
            eat_word(p, "AT");
            eat_word(p, "LEAST");
            sub.as_of = Some(p.parse_literal_uint()?);
        } else if eat_words(p, &["UP", "TO"]) {
            sub.up_to = Some(p.parse_literal_uint()?);
        } else {
            break;
        }
    }
    Ok(Ast::Subscribe(sub))
}

/// Postgres identifier folding: unquoted identifiers are lower-cased, quoted ones kept verbatim.
pub(crate) fn normalize_ident(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}
