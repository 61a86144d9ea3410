//! COPY data in Postgres' text and CSV formats. `COPY name FROM STDIN`: rows loaded atomically
//! into a stream or table (all rows in one append, or none and an error naming the bad line).
//! `COPY (query) TO STDOUT` / `COPY name TO STDOUT`: rows written as they are produced.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Query, Statement,
};

use crate::pg_text::PgText;
use crate::syntax::{normalize, object_name};
use crate::{Error, Result};

/// How the rows of a COPY are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Postgres' text format: tab-separated, `\N` for NULL, backslash escapes.
    Text,
    /// CSV: comma-separated, quoted with `"`, empty unquoted fields are NULL.
    Csv,
    /// PostgreSQL's binary format (`COPY ... TO` only): a signature, then each row as its
    /// field count and each field's length and value in the binary wire form.
    Binary,
}

/// A `COPY ... FROM STDIN` waiting for its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    /// The stream or table loaded.
    pub target: String,
    /// The columns the data holds, in order (all columns when the COPY names none).
    pub columns: Vec<String>,
    /// The data format.
    pub format: CopyFormat,
    /// The first line is a header, skipped.
    pub header: bool,
    /// The field separator.
    pub delimiter: u8,
    /// The text that stands for NULL.
    pub null: String,
}

fn bad_option(what: String) -> Error {
    Error::NotSupported(format!("COPY option {what} is not supported"))
}

/// An option only some forms of COPY take, kept with how it was written for their refusals.
enum Extra {
    Quote(char),
    Escape(char),
    ForceQuote(Vec<String>),
    Freeze,
}

/// The options of a COPY: those every form takes, resolved with CSV's defaults, and the rest
/// (`extras`) for each form to take or refuse.
struct CopyOptions {
    format: CopyFormat,
    header: bool,
    /// One ASCII character, not a line break.
    delimiter: char,
    null: String,
    extras: Vec<(Extra, String)>,
}

fn copy_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyOptions> {
    let mut o = CopyOptions {
        format: CopyFormat::Text,
        header: false,
        delimiter: '\t',
        null: "\\N".into(),
        extras: Vec::new(),
    };
    let (mut delimiter, mut null) = (None, None);
    let columns = |c: &[datafusion::sql::sqlparser::ast::Ident]| c.iter().map(normalize).collect();
    for option in options {
        let extra = match option {
            CopyOption::Format(f) => {
                o.format = match f.value.to_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    other => return Err(bad_option(format!("FORMAT {other}"))),
                };
                continue;
            }
            CopyOption::Header(h) => {
                o.header = *h;
                continue;
            }
            CopyOption::Delimiter(d) => {
                delimiter = Some(*d);
                continue;
            }
            CopyOption::Null(n) => {
                null = Some(n.clone());
                continue;
            }
            CopyOption::Quote(q) => Extra::Quote(*q),
            CopyOption::Escape(e) => Extra::Escape(*e),
            CopyOption::ForceQuote(c) => Extra::ForceQuote(columns(c)),
            CopyOption::Freeze(_) => Extra::Freeze,
            other => return Err(bad_option(other.to_string())),
        };
        o.extras.push((extra, option.to_string()));
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(csv) => {
                o.format = CopyFormat::Csv;
                for c in csv {
                    let extra = match c {
                        CopyLegacyCsvOption::Header => {
                            o.header = true;
                            continue;
                        }
                        CopyLegacyCsvOption::Quote(q) => Extra::Quote(*q),
                        CopyLegacyCsvOption::Escape(e) => Extra::Escape(*e),
                        CopyLegacyCsvOption::ForceQuote(c) => Extra::ForceQuote(columns(c)),
                        other => return Err(bad_option(other.to_string())),
                    };
                    o.extras.push((extra, c.to_string()));
                }
            }
            CopyLegacyOption::Header => o.header = true,
            CopyLegacyOption::Delimiter(d) => delimiter = Some(*d),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Binary => o.format = CopyFormat::Binary,
            other => return Err(bad_option(other.to_string())),
        }
    }
    if o.format == CopyFormat::Csv {
        o.delimiter = ',';
        o.null = String::new();
    }
    if o.format == CopyFormat::Binary {
        // The SQLSTATEs are PostgreSQL's.
        if o.header {
            return Err(Error::NotSupported(
                "cannot specify HEADER in BINARY mode".into(),
            ));
        }
        let given = [("DELIMITER", delimiter.is_some()), ("NULL", null.is_some())];
        if let Some((name, _)) = given.iter().find(|(_, g)| *g) {
            return Err(Error::Syntax(format!(
                "cannot specify {name} in BINARY mode"
            )));
        }
    }
    if let Some(d) = delimiter {
        if !d.is_ascii() || d == '\n' || d == '\r' {
            return Err(bad_option(format!(
                "DELIMITER {d:?} (a single ASCII character)"
            )));
        }
        o.delimiter = d;
    }
    if let Some(n) = null {
        o.null = n;
    }
    Ok(o)
}

/// The COPY FROM STDIN described by `stmt`, with the target's column names; other COPY forms
/// are refused with what works instead.
pub(crate) fn copy_in(
    stmt: &Statement,
    all_columns: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<CopyIn> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Err(Error::Internal(
            "not a COPY statement; this is a bug".into(),
        ));
    };
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Err(Error::NotSupported(
            "COPY (query) FROM is not valid; COPY (query) TO STDOUT writes a query's rows".into(),
        ));
    };
    if *to || *target != CopyTarget::Stdin {
        return Err(Error::Internal(
            "a COPY TO reached COPY FROM; this is a bug".into(),
        ));
    }
    let name = object_name(table_name)?;
    let all = all_columns(&name).ok_or_else(|| Error::UndefinedRelation(name.clone()))?;
    let columns: Vec<String> = if columns.is_empty() {
        all.clone()
    } else {
        columns.iter().map(normalize).collect()
    };
    for (i, c) in columns.iter().enumerate() {
        if !all.contains(c) {
            return Err(Error::UndefinedColumn(format!(
                "column \"{c}\" of relation {name} does not exist"
            )));
        }
        if columns[..i].contains(c) {
            return Err(Error::WrongObject {
                sqlstate: "42701",
                message: format!("column \"{c}\" specified more than once"),
            });
        }
    }
    let options = copy_options(options, legacy_options)?;
    if options.format == CopyFormat::Binary {
        return Err(Error::NotSupported(
            "COPY FROM in the binary format is not supported; send text or CSV".into(),
        ));
    }
    for (extra, written) in &options.extras {
        match extra {
            Extra::Quote('"') | Extra::Freeze => {}
            _ => return Err(bad_option(written.clone())),
        }
    }
    let copy = CopyIn {
        target: name,
        columns,
        format: options.format,
        header: options.header,
        // ASCII: checked with the options.
        delimiter: options.delimiter as u8,
        null: options.null,
    };
    Ok(copy)
}

/// A piece of COPY data: whole rows (a CSV value may hold line breaks, so rows are counted, not
/// lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyChunk {
    /// The rows it holds (a header line is not a row).
    pub rows: usize,
    /// The bytes, each row ending with a newline.
    pub data: Vec<u8>,
}

/// What a `COPY ... TO STDOUT` writes out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CopyToSource {
    /// `COPY (query) TO STDOUT`.
    Query(Box<Query>),
    /// `COPY name [(columns)] TO STDOUT`: a stream's, table's or view's rows.
    Relation {
        /// The relation.
        name: String,
        /// The columns written, in order (all when none are named).
        columns: Vec<String>,
    },
}

/// A `COPY ... TO STDOUT`: what is written, and how.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopyTo {
    /// The rows written.
    pub(crate) source: CopyToSource,
    /// Their format.
    pub(crate) format: CopyOutFormat,
}

/// How rows are written by `COPY ... TO STDOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyOutFormat {
    format: CopyFormat,
    header: bool,
    delimiter: char,
    null: String,
    quote: char,
    escape: char,
    /// CSV: columns whose non-NULL values are always quoted.
    pub(crate) force_quote: Vec<String>,
    /// The session's TimeZone, for `timestamptz` values.
    pub(crate) zone: Option<crate::pg_text::Zone>,
}

/// The COPY TO STDOUT described by `stmt`.
pub(crate) fn copy_to(stmt: &Statement) -> Result<CopyTo> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Err(Error::Internal(
            "not a COPY statement; this is a bug".into(),
        ));
    };
    if !*to {
        return Err(Error::Internal(
            "a COPY FROM reached COPY TO; this is a bug".into(),
        ));
    }
    if *target != CopyTarget::Stdout {
        return Err(Error::NotSupported(
            "COPY TO a file or program on the server is not supported; COPY ... TO STDOUT \
             (psql's \\copy ... TO 'file') writes to the client"
                .into(),
        ));
    }
    let source = match source {
        CopySource::Query(q) => CopyToSource::Query(q.clone()),
        CopySource::Table {
            table_name,
            columns,
        } => CopyToSource::Relation {
            name: object_name(table_name)?,
            columns: columns.iter().map(normalize).collect(),
        },
    };
    let options = copy_options(options, legacy_options)?;
    let mut f = CopyOutFormat {
        format: options.format,
        header: options.header,
        delimiter: options.delimiter,
        null: options.null,
        quote: '"',
        escape: '"',
        force_quote: Vec::new(),
        zone: None,
    };
    let mut escape = None;
    for (extra, written) in options.extras {
        let csv_only = match extra {
            Extra::Quote(q) => {
                f.quote = q;
                "QUOTE"
            }
            Extra::Escape(e) => {
                escape = Some(e);
                "ESCAPE"
            }
            Extra::ForceQuote(columns) => {
                f.force_quote = columns;
                "FORCE_QUOTE"
            }
            Extra::Freeze => return Err(bad_option(written)),
        };
        if f.format != CopyFormat::Csv {
            return Err(Error::WrongObject {
                sqlstate: "0A000",
                message: format!("COPY {csv_only} is available only in CSV mode"),
            });
        }
    }
    if f.delimiter == '\\' {
        return Err(bad_option(
            "DELIMITER '\\\\' (a single ASCII character)".into(),
        ));
    }
    f.escape = escape.unwrap_or(f.quote);
    if f.format == CopyFormat::Csv && (f.quote == f.delimiter || !f.quote.is_ascii()) {
        return Err(Error::WrongObject {
            sqlstate: "22023",
            message: "COPY QUOTE must be one ASCII character other than the delimiter".into(),
        });
    }
    Ok(CopyTo { source, format: f })
}

impl CopyOutFormat {
    /// The header line, if asked for: the column names, quoted where CSV needs it.
    pub(crate) fn header(&self, names: &[String]) -> Option<CopyChunk> {
        if self.format == CopyFormat::Binary {
            // The signature, no flags (no OIDs), no header extension.
            let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
            data.extend_from_slice(&[0; 8]);
            return Some(CopyChunk { rows: 0, data });
        }
        if !self.header {
            return None;
        }
        let mut line = String::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                line.push(self.delimiter);
            }
            self.field(&mut line, name, false);
        }
        line.push('\n');
        Some(CopyChunk {
            rows: 0,
            data: line.into_bytes(),
        })
    }

    /// Whether the data is in the binary format.
    pub(crate) fn is_binary(&self) -> bool {
        self.format == CopyFormat::Binary
    }

    /// `batch`'s rows as COPY data; `forced[i]` says column `i` is always quoted (CSV).
    pub(crate) fn rows(&self, batch: &RecordBatch, forced: &[bool]) -> Result<CopyChunk> {
        if self.format == CopyFormat::Binary {
            return binary_rows(batch);
        }
        let columns = batch
            .columns()
            .iter()
            .map(|c| PgText::try_new(Arc::clone(c)).map(|t| t.in_zone(self.zone)))
            .collect::<Result<Vec<_>>>()?;
        let mut out = String::with_capacity(batch.num_rows() * 16 * columns.len().max(1));
        let mut value = String::new();
        for row in 0..batch.num_rows() {
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(self.delimiter);
                }
                if column.is_null(row) {
                    out.push_str(&self.null);
                    continue;
                }
                value.clear();
                column.write(row, &mut value);
                self.field(&mut out, &value, forced.get(i).copied().unwrap_or(false));
            }
            out.push('\n');
        }
        Ok(CopyChunk {
            rows: batch.num_rows(),
            data: out.into_bytes(),
        })
    }

    /// Appends one non-NULL value: escaped (text) or quoted where needed (CSV).
    fn field(&self, out: &mut String, value: &str, force: bool) {
        match self.format {
            CopyFormat::Binary => out.push_str(value),
            CopyFormat::Text => {
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        '\u{8}' => out.push_str("\\b"),
                        '\u{c}' => out.push_str("\\f"),
                        '\u{b}' => out.push_str("\\v"),
                        c if c == self.delimiter => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
            }
            CopyFormat::Csv => {
                let needs = force
                    || value.is_empty() && self.null.is_empty()
                    || value == self.null
                    || value == "\\."
                    || value.contains(|c| {
                        c == self.delimiter || c == self.quote || c == '\n' || c == '\r'
                    });
                if !needs {
                    out.push_str(value);
                    return;
                }
                out.push(self.quote);
                for c in value.chars() {
                    if c == self.quote || c == self.escape {
                        out.push(self.escape);
                    }
                    out.push(c);
                }
                out.push(self.quote);
            }
        }
    }
}

/// `batch`'s rows in the binary COPY format. A binary DataRow's body is exactly a binary COPY
/// tuple (a field count, then each field's length, -1 for NULL, and bytes), so the values are
/// encoded as binary results are, by arrow-pg.
fn binary_rows(batch: &RecordBatch) -> Result<CopyChunk> {
    use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use pgwire::api::portal::Format;
    let wire = |e: pgwire::error::PgWireError| Error::NotSupported(format!("COPY BINARY: {e}"));
    let fields =
        arrow_schema_to_pg_fields(&batch.schema(), &Format::UnifiedBinary, None).map_err(wire)?;
    let mut data = Vec::with_capacity(batch.num_rows() * (2 + 8 * fields.len()));
    for row in encode_recordbatch(Arc::new(fields), batch.clone()) {
        let row = row.map_err(wire)?;
        data.extend_from_slice(&row.field_count.to_be_bytes());
        data.extend_from_slice(&row.data);
    }
    Ok(CopyChunk {
        rows: batch.num_rows(),
        data,
    })
}

/// Parsed rows, column by column as text (NULL for NULL), with the line each row started on:
/// one builder per column rather than a string per field, which is what made COPY slow.
struct Fields {
    lines: Vec<u64>,
    columns: Vec<StringBuilder>,
}

impl Fields {
    fn new(width: usize, data_bytes: usize) -> Self {
        Self {
            lines: Vec::new(),
            columns: (0..width)
                .map(|_| StringBuilder::with_capacity(1024, data_bytes / width.max(1)))
                .collect(),
        }
    }

    /// Appends the row starting on `line` whose fields `fields` yields (`None` for NULL); fails
    /// with the line's number unless it has exactly as many fields as the COPY has columns.
    fn push<'a>(
        &mut self,
        copy: &CopyIn,
        line: u64,
        fields: impl Iterator<Item = Result<Option<Cow<'a, str>>>>,
    ) -> Result<()> {
        let width = self.columns.len();
        let mut found = 0;
        for field in fields {
            let field = field?;
            if let Some(column) = self.columns.get_mut(found) {
                column.append_option(field);
            }
            found += 1;
        }
        if found != width {
            return Err(line_error(
                line,
                format!(
                    "expected {width} fields ({}), found {found}",
                    copy.columns.join(", "),
                ),
            ));
        }
        self.lines.push(line);
        Ok(())
    }

    fn len(&self) -> usize {
        self.lines.len()
    }
}

fn line_error(line: u64, message: impl std::fmt::Display) -> Error {
    Error::WrongObject {
        sqlstate: "22P04",
        message: format!("COPY: line {line}: {message}"),
    }
}

/// Undoes the backslash escapes of the text format.
fn unescape(field: &str, line: u64) -> Result<Cow<'_, str>> {
    if !field.contains('\\') {
        return Ok(Cow::Borrowed(field));
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(other) => out.push(other),
            None => return Err(line_error(line, "a field ends with a lone backslash")),
        }
    }
    Ok(Cow::Owned(out))
}

/// The rows of text-format `data` whose first line is line `first` of the COPY, skipping a
/// header line if `header`; and whether the end marker (`\.`) came.
fn parse_text(copy: &CopyIn, data: &str, first: u64, header: bool) -> Result<(Fields, bool)> {
    let mut rows = Fields::new(copy.columns.len(), data.len());
    let delimiter = copy.delimiter as char;
    let body = data.strip_suffix('\n').unwrap_or(data);
    if body.is_empty() {
        return Ok((rows, false));
    }
    for (i, line) in body.split('\n').enumerate() {
        let number = first + i as u64;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            return Ok((rows, true));
        }
        if i == 0 && header {
            continue;
        }
        let fields = line.split(delimiter).map(|f| {
            if f == copy.null {
                Ok(None)
            } else {
                unescape(f, number).map(Some)
            }
        });
        rows.push(copy, number, fields)?;
    }
    Ok((rows, false))
}

/// The rows of CSV `data`, as [`parse_text`] reads text.
fn parse_csv(copy: &CopyIn, data: &str, first: u64, header: bool) -> Result<(Fields, bool)> {
    let offset = first - 1;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(header)
        .delimiter(copy.delimiter)
        .flexible(true)
        .from_reader(data.as_bytes());
    let mut rows = Fields::new(copy.columns.len(), data.len());
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, csv::Position::line);
                return Err(line_error(line + offset, e));
            }
        }
        let line = record.position().map_or(line, csv::Position::line) + offset;
        if record.len() == 1 && record.get(0) == Some(b"\\.") {
            return Ok((rows, true));
        }
        // A field equal to the NULL text (empty by default) is NULL. Postgres reads a quoted
        // empty string ("") as an empty string; the csv crate does not report quoting, so here
        // it is NULL too.
        let fields = record.iter().map(|f| {
            let s = std::str::from_utf8(f).map_err(|_| line_error(line, "invalid UTF-8"))?;
            Ok((s != copy.null).then_some(Cow::Borrowed(s)))
        });
        rows.push(copy, line, fields)?;
    }
    Ok((rows, false))
}

/// A BYTEA column from COPY text (rows starting on `lines`): `\x` then hex digits, as Postgres
/// writes and reads it.
fn bytea(text: &StringArray, lines: &[u64], name: &str, data_type: &DataType) -> Result<ArrayRef> {
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(text.len());
    for (text, &line) in text.iter().zip(lines) {
        let Some(text) = text else {
            values.push(None);
            continue;
        };
        let hex = text.strip_prefix("\\x").ok_or_else(|| {
            line_error(
                line,
                format!("column {name} is BYTEA: write its value as \\x followed by hex digits"),
            )
        })?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| line_error(line, format!("invalid hex in BYTEA column {name}")))?;
        values.push(Some(bytes));
    }
    let array = datafusion::arrow::array::BinaryArray::from_iter(values);
    Ok(cast(&array, data_type)?)
}

/// Parses `data` into a batch of `schema` (the target's columns; those the COPY does not name
/// are NULL). Any bad row fails the whole COPY with its line number.
#[cfg(test)]
pub(crate) fn parse(copy: &CopyIn, schema: &SchemaRef, data: &[u8]) -> Result<RecordBatch> {
    Ok(parse_chunk(copy, schema, data, 1, copy.header)?.0)
}

/// Parses a piece of the data that starts at line `first` and holds whole rows, skipping a
/// header line if `header`; and says whether the end marker (`\.`) came.
fn parse_chunk(
    copy: &CopyIn,
    schema: &SchemaRef,
    data: &[u8],
    first: u64,
    header: bool,
) -> Result<(RecordBatch, bool)> {
    let data = std::str::from_utf8(data).map_err(|e| {
        let line = data[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + first;
        line_error(line, "invalid UTF-8")
    })?;
    let (mut rows, ended) = match copy.format {
        CopyFormat::Text => parse_text(copy, data, first, header)?,
        CopyFormat::Csv => parse_csv(copy, data, first, header)?,
        CopyFormat::Binary => {
            return Err(Error::NotSupported(
                "COPY FROM in the binary format is not supported; send text or CSV".into(),
            ));
        }
    };
    let n = rows.len();
    let lines = std::mem::take(&mut rows.lines);
    let mut texts: Vec<Option<StringArray>> =
        rows.columns.iter_mut().map(|b| Some(b.finish())).collect();
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let Some(position) = copy.columns.iter().position(|c| c == f.name()) else {
                return Ok(new_null_array(f.data_type(), n));
            };
            let text = texts[position].take().ok_or_else(|| {
                Error::Internal(format!(
                    "COPY names column {} twice; this is a bug",
                    f.name()
                ))
            })?;
            if !f.is_nullable() && text.null_count() > 0 {
                let i = (0..n).find(|&i| text.is_null(i)).unwrap_or_default();
                return Err(Error::WrongObject {
                    sqlstate: "23502",
                    message: format!(
                        "COPY: line {}: null value in column \"{}\" violates not-null constraint",
                        lines[i],
                        f.name()
                    ),
                });
            }
            if f.data_type() == &DataType::Utf8 {
                return Ok(Arc::new(text) as ArrayRef);
            }
            if matches!(f.data_type(), DataType::Binary | DataType::LargeBinary) {
                return bytea(&text, &lines, f.name(), f.data_type());
            }
            cast_with_options(&text, f.data_type(), &options).map_err(|e| {
                // Find the first value that does not convert, for its line number.
                let bad = text.iter().zip(&lines).find(|(v, _)| {
                    v.is_some_and(|v| {
                        cast_with_options(&StringArray::from(vec![v]), f.data_type(), &options)
                            .is_err()
                    })
                });
                match bad {
                    Some((v, &line)) => line_error(
                        line,
                        format!(
                            "invalid value {:?} for column {} of type {}",
                            v.unwrap_or_default(),
                            f.name(),
                            f.data_type()
                        ),
                    ),
                    None => Error::from(e),
                }
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let nullable: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(nullable)),
        columns,
    )?;
    Ok((batch, ended))
}

/// How much COPY data is parsed at a time: the rows of about this many bytes.
const CHUNK_BYTES: usize = 4 << 20;

/// The most memory one COPY's parsed rows may hold before it commits, where they are held
/// (a COPY into a table; one into a stream hands them to its [`CopySink`] as they come).
pub const COPY_MEMORY_LIMIT_BYTES: usize = 512 << 20;

/// Where a COPY's rows go as they are parsed, for a target that can take them before the COPY
/// ends without showing them (a stream: a log transaction).
pub trait CopySink: Send + std::fmt::Debug {
    /// Takes the rows parsed so far; none may be visible before [`CopySink::commit`].
    fn write(&mut self, batches: Vec<RecordBatch>) -> Result<()>;
    /// Takes the last rows and makes all of them visible at once; returns the rows loaded.
    /// Dropping the sink without committing throws every row away.
    fn commit(self: Box<Self>, batches: Vec<RecordBatch>) -> Result<u64>;
}

/// How a COPY's data ended well (see [`CopyLoader::end`]).
#[derive(Debug)]
pub enum CopyEnd {
    /// The sink committed this many rows.
    Committed(u64),
    /// Every row, held: for the caller to load all together.
    Rows(Vec<RecordBatch>),
}

/// A `COPY ... FROM STDIN`'s data, parsed into batches as it arrives (a few MiB of text at a
/// time), so that the text is never held whole. The rows go to a [`CopySink`] as they are
/// parsed, or are held and appended together, all or none, by [`CopyLoader::finish`]'s
/// caller. The first bad row (or the memory limit) is kept and reported at the end, when
/// PostgreSQL's protocol lets the server answer.
#[derive(Debug)]
pub struct CopyLoader {
    copy: CopyIn,
    schema: SchemaRef,
    /// Data not yet parsed: the start of a row at most, once a chunk is parsed.
    pending: Vec<u8>,
    /// The line number of `pending`'s first line.
    line: u64,
    /// The header line is still to be skipped.
    header: bool,
    /// The end marker (`\.`) came: what follows is ignored.
    ended: bool,
    batches: Vec<RecordBatch>,
    bytes: usize,
    /// Parse once this much data waits.
    chunk: usize,
    limit: usize,
    failed: Option<Error>,
    sink: Option<Box<dyn CopySink>>,
}

impl CopyLoader {
    /// A loader of `copy`'s data into rows of `schema` (its target's).
    pub fn new(copy: CopyIn, schema: SchemaRef) -> Self {
        let header = copy.header;
        Self {
            copy,
            schema,
            pending: Vec::new(),
            line: 1,
            header,
            ended: false,
            batches: Vec::new(),
            bytes: 0,
            chunk: CHUNK_BYTES,
            limit: COPY_MEMORY_LIMIT_BYTES,
            failed: None,
            sink: None,
        }
    }

    /// The loader handing its rows to `sink` as they are parsed, so that it holds no more
    /// than a chunk of them whatever the data's size.
    pub fn with_sink(mut self, sink: Box<dyn CopySink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The loader with a chunk size and a memory limit of its own, for tests.
    #[cfg(test)]
    fn with_sizes(mut self, chunk: usize, limit: usize) -> Self {
        self.chunk = chunk;
        self.limit = limit;
        self
    }

    /// The COPY being loaded.
    pub fn copy(&self) -> &CopyIn {
        &self.copy
    }

    /// Takes the next piece of data, and parses the whole rows once a chunk's worth waits.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_some() || self.ended {
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() < self.chunk {
            return;
        }
        let parsed = match self.last_row_end() {
            Some(cut) => self.parse_up_to(cut),
            // One row (or an unclosed CSV quote) as large as the limit: no row ends in sight.
            None if self.pending.len() > self.limit => Err(self.over_limit()),
            None => Ok(()),
        };
        let written = parsed.and_then(|()| self.hand_over());
        if let Err(e) = written {
            // Nothing of it will load: its memory (and its transaction) goes now, not when
            // the data ends.
            self.failed = Some(e);
            self.pending = Vec::new();
            self.batches = Vec::new();
            self.sink = None;
        }
    }

    /// Whether the rows go to a sink as they are parsed (a log transaction, which holds back
    /// the readers of the partitions it wrote until it ends).
    pub fn holds_back_readers(&self) -> bool {
        self.sink.is_some()
    }

    /// Gives up the COPY because its client sent nothing for `idle`: its rows (and its
    /// transaction) go now, and the error is told when the data ends.
    pub fn abandon_idle(&mut self, idle: std::time::Duration) {
        if self.failed.is_some() || self.ended {
            return;
        }
        self.failed = Some(Error::WrongObject {
            sqlstate: "25P03",
            message: format!(
                "COPY into {} was aborted: its client sent no data for {} s while its rows held \
                 back the stream's readers, so none of its rows were kept (SET \
                 copy_idle_timeout to allow longer pauses, 0 for none)",
                self.copy.target,
                idle.as_secs_f64()
            ),
        });
        self.pending = Vec::new();
        self.batches = Vec::new();
        self.sink = None;
    }

    /// Gives the rows parsed so far to the sink, if there is one.
    fn hand_over(&mut self) -> Result<()> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        if self.batches.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        sink.write(std::mem::take(&mut self.batches))
    }

    /// The error of a COPY that needs more memory than its limit.
    fn over_limit(&self) -> Error {
        Error::WrongObject {
            sqlstate: "54000",
            message: format!(
                "COPY into {}: its rows take more than {} MiB of memory before it commits (a \
                 COPY is held until its end, to load all of its rows or none); split the data \
                 into several COPYs",
                self.copy.target,
                self.limit >> 20
            ),
        }
    }

    /// Where the last whole row in `pending` ends (after its newline), outside CSV quotes.
    fn last_row_end(&self) -> Option<usize> {
        if self.copy.format != CopyFormat::Csv {
            return self
                .pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1);
        }
        let mut quoted = false;
        let mut end = None;
        for (i, &b) in self.pending.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => end = Some(i + 1),
                _ => {}
            }
        }
        end
    }

    fn parse_up_to(&mut self, cut: usize) -> Result<()> {
        let rest = self.pending.split_off(cut);
        let chunk = std::mem::replace(&mut self.pending, rest);
        let lines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        let (batch, ended) = parse_chunk(&self.copy, &self.schema, &chunk, self.line, self.header)?;
        self.header = false;
        self.line += lines;
        self.ended = ended;
        if ended {
            self.pending = Vec::new();
        }
        self.bytes += batch.get_array_memory_size();
        if self.bytes > self.limit {
            return Err(self.over_limit());
        }
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }

    /// The rows of all the data, in batches; or the first error.
    pub fn finish(mut self) -> Result<Vec<RecordBatch>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !self.ended && !self.pending.is_empty() {
            let all = self.pending.len();
            self.parse_up_to(all)?;
        }
        Ok(self.batches)
    }

    /// Ends the data: the sink commits every row (see [`CopySink::commit`]), or, without one,
    /// the rows are returned as [`CopyLoader::finish`] does. A bad row drops the sink, and
    /// with it every row it took.
    pub fn end(mut self) -> Result<CopyEnd> {
        let sink = self.sink.take();
        let batches = self.finish()?;
        match sink {
            Some(sink) => Ok(CopyEnd::Committed(sink.commit(batches)?)),
            None => Ok(CopyEnd::Rows(batches)),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    fn copy(format: CopyFormat, header: bool) -> CopyIn {
        CopyIn {
            target: "t".into(),
            columns: vec!["id".into(), "name".into(), "ts".into()],
            format,
            header,
            delimiter: if format == CopyFormat::Csv {
                b','
            } else {
                b'\t'
            },
            null: if format == CopyFormat::Csv {
                String::new()
            } else {
                "\\N".into()
            },
        }
    }

    #[test]
    fn text_format_with_nulls_and_escapes() {
        let data =
            "1\tada\t2026-01-01 00:00:01\n2\t\\N\t\\N\n3\ttab\\there\t2026-01-01 00:00:03\n\\.\n";
        let b = parse(&copy(CopyFormat::Text, false), &schema(), data.as_bytes()).expect("parse");
        assert_eq!(b.num_rows(), 3);
        assert!(b.column(1).is_null(1));
        let names = b
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("strings");
        assert_eq!(names.value(2), "tab\there");
    }

    #[test]
    fn csv_with_header_quotes_and_a_bad_line() {
        let data = "id,name,ts\n1,\"a, b\",2026-01-01 00:00:01\n2,,\n";
        let b = parse(&copy(CopyFormat::Csv, true), &schema(), data.as_bytes()).expect("parse");
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(1).is_null(1));
        let bad = "id,name,ts\n1,a,2026-01-01 00:00:01\nx,b,2026-01-01 00:00:02\n";
        let e = parse(&copy(CopyFormat::Csv, true), &schema(), bad.as_bytes()).expect_err("bad id");
        assert!(e.to_string().contains("line 3"), "{e}");
        assert_eq!(e.sqlstate(), "22P04");
        let short = "1,a\n";
        let e = parse(&copy(CopyFormat::Csv, false), &schema(), short.as_bytes())
            .expect_err("missing field");
        assert!(e.to_string().contains("line 1: expected 3 fields"), "{e}");
        let null_id = ",a,\n";
        let e = parse(&copy(CopyFormat::Csv, false), &schema(), null_id.as_bytes())
            .expect_err("null id");
        assert_eq!(e.sqlstate(), "23502");
    }

    /// Loads `data` fed in pieces of `piece` bytes, parsing every `chunk` bytes.
    fn load(copy: CopyIn, data: &str, piece: usize, chunk: usize) -> Result<Vec<RecordBatch>> {
        let mut loader = CopyLoader::new(copy, schema()).with_sizes(chunk, usize::MAX);
        for p in data.as_bytes().chunks(piece) {
            loader.feed(p);
        }
        loader.finish()
    }

    #[test]
    fn a_loader_fed_in_pieces_parses_as_the_whole_data_does() {
        let mut csv = String::from("id,name,ts\n");
        let mut text = String::new();
        for i in 0..200 {
            // A quoted field with a line break and a quote in it, every so often.
            let name = if i % 7 == 0 {
                format!("\"n{i}\nwith \"\"q\"\"\"")
            } else {
                format!("n{i}")
            };
            csv.push_str(&format!("{i},{name},2026-01-01 00:00:{:02}\n", i % 60));
            text.push_str(&format!("{i}\tt{i}\\tx\t\\N\n"));
        }
        text.push_str("\\.\nignored after the end marker\n");
        for (copy, data) in [
            (copy(CopyFormat::Csv, true), csv.as_str()),
            (copy(CopyFormat::Text, false), text.as_str()),
        ] {
            let whole = parse(&copy, &schema(), data.as_bytes()).expect("whole");
            for (piece, chunk) in [(1, 1), (7, 50), (64, 300), (1000, 10_000)] {
                let batches = load(copy.clone(), data, piece, chunk).expect("pieces");
                let all = datafusion::arrow::compute::concat_batches(&whole.schema(), &batches)
                    .expect("concat");
                assert_eq!(all, whole, "pieces of {piece}, chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_loader_names_the_line_of_a_bad_row_and_keeps_to_its_memory_limit() {
        let mut data = String::new();
        for i in 1..=100 {
            data.push_str(&format!("{i},n,\n"));
        }
        data.push_str("seven,n,\n");
        let e = load(copy(CopyFormat::Csv, false), &data, 13, 100).expect_err("bad row");
        assert!(e.to_string().contains("line 101"), "{e}");
        let mut loader =
            CopyLoader::new(copy(CopyFormat::Csv, false), schema()).with_sizes(100, 2_000);
        for _ in 0..100 {
            loader.feed(
                data.lines()
                    .next()
                    .map(|l| format!("{l}\n"))
                    .unwrap_or_default()
                    .as_bytes(),
            );
        }
        let e = loader.finish().expect_err("over the limit");
        assert_eq!(e.sqlstate(), "54000", "{e}");
        // A row that never ends (no line break, or an unclosed quote) is held to the limit too.
        let mut loader =
            CopyLoader::new(copy(CopyFormat::Csv, false), schema()).with_sizes(100, 2_000);
        loader.feed(b"1,\"");
        for _ in 0..100 {
            loader.feed(&[b'x'; 100]);
        }
        assert!(
            loader.pending.is_empty(),
            "the endless row's bytes were let go"
        );
        let e = loader.finish().expect_err("over the limit");
        assert_eq!(e.sqlstate(), "54000", "{e}");
    }
}
