//! Text to statements: sqlparser's PostgreSQL dialect for standard SQL, plus Materialize-style
//! statements sqlparser does not know (`CREATE SOURCE`, `CREATE SINK`, `DROP SOURCE|SINK`,
//! `SHOW SOURCES`..., `SUBSCRIBE`/`TAIL`), parsed with sqlparser's token API so every error
//! still points into the text.

use std::sync::Arc;

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::{split_location, Positions, SqlError};
use crate::statement::{Format, LoadGenerator, LoadGeneratorKind};

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
}

#[derive(Clone, Debug)]
pub(crate) enum ShowAst {
    Items(crate::ItemKind),
    Objects,
    Columns(ast::ObjectName),
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
    let dialect = PostgreSqlDialect {};
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
        if eat_word(p, "WITH") {
            p.expect_token(&Token::LParen)?;
            loop {
                expect_word(p, "INCLUDE_METADATA")?;
                let _ = p.consume_token(&Token::Eq);
                include_metadata = parse_bool(p)?;
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen)?;
        }
        ConnectorAst::Sse { url, include_metadata }
    } else if eat_word(p, "WEBHOOK") {
        expect_word(p, "BODY")?;
        let format = parse_format(p)?;
        ConnectorAst::Webhook { format }
    } else if eat_word(p, "FILE") {
        let path = p.parse_literal_string()?;
        let mut tail = false;
        if eat_word(p, "WITH") {
            p.expect_token(&Token::LParen)?;
            loop {
                expect_word(p, "TAIL")?;
                let _ = p.consume_token(&Token::Eq);
                tail = parse_bool(p)?;
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen)?;
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

fn parse_bool(p: &mut Parser) -> CResult<bool> {
    if p.parse_keyword(Keyword::TRUE) || eat_word(p, "ON") {
        Ok(true)
    } else if p.parse_keyword(Keyword::FALSE) || eat_word(p, "OFF") {
        Ok(false)
    } else {
        expected(p, "TRUE or FALSE")
    }
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
    Ok(Ast::CreateSink(CreateSinkAst { name, if_not_exists, from, url }))
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
        } else {
            return expected(p, "SOURCE, TABLE, VIEW, MATERIALIZED VIEW or SINK");
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
        } else if eat_word(p, "WITH") {
            p.expect_token(&Token::LParen)?;
            loop {
                let snapshot = if eat_word(p, "SNAPSHOT") {
                    true
                } else if eat_word(p, "PROGRESS") {
                    false
                } else {
                    return expected(p, "SNAPSHOT or PROGRESS");
                };
                let _ = p.consume_token(&Token::Eq);
                let value =
                    if matches!(p.peek_token().token, Token::RParen | Token::Comma) { true } else { parse_bool(p)? };
                if snapshot {
                    sub.snapshot = value;
                } else {
                    sub.progress = value;
                }
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen)?;
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
