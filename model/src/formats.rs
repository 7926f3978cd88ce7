//! The REPLAY.md input formats: events, queries and locations, one JSON object per line,
//! each field checked by name so that an error says `file:line: field `x`: reason`.
//!
//! Parsing reads from any `BufRead` (no file is opened here); `stockgrid_actors::replay` opens
//! the files.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use crate::catalog::{Location, LocationInput};
use crate::domain::{Arrival, PairKey, RawEvent, Surface};
use crate::time::Timestamp;

/// Longest accepted input line.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A bad line in an input file.
    #[error("{file}:{line}: field `{field}`: {reason}")]
    Input {
        /// The file.
        file: String,
        /// The 1-based line number.
        line: usize,
        /// The offending field (`<line>` for the line itself).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A validated query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// Echoed in the answer.
    pub query_id: String,
    /// When it is asked.
    pub time: Timestamp,
    /// The pair.
    pub pair: PairKey,
    /// Units wanted (>= 1).
    pub quantity: i64,
    /// Who asks.
    pub surface: Surface,
}

struct LineError {
    field: String,
    reason: String,
}

impl LineError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Typed access to one JSON object's fields, naming the field in every error.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn string(&self, field: &str) -> Result<Option<String>, LineError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(LineError::new(
                field,
                format!("must be a string, got {other}"),
            )),
        }
    }

    fn integer<T: TryFrom<i128>>(
        &self,
        field: &str,
        type_name: &str,
    ) -> Result<Option<T>, LineError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let number = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .ok_or_else(|| {
                LineError::new(
                    field,
                    format!("must be an integer ({type_name}), got {value}"),
                )
            })?;
        T::try_from(number)
            .map(Some)
            .map_err(|_| LineError::new(field, format!("{number} does not fit {type_name}")))
    }

    fn required_string(&self, field: &str) -> Result<String, LineError> {
        self.string(field)?
            .ok_or_else(|| LineError::new(field, "is required"))
    }

    fn required_integer<T: TryFrom<i128>>(
        &self,
        field: &str,
        type_name: &str,
    ) -> Result<T, LineError> {
        self.integer(field, type_name)?
            .ok_or_else(|| LineError::new(field, "is required"))
    }
}

/// Reads JSON Lines, handing each non-blank line's object and line number to `parse`.
fn read_jsonl<T>(
    mut reader: impl BufRead,
    file_name: &str,
    mut parse: impl FnMut(Fields<'_>) -> Result<T, LineError>,
) -> Result<Vec<(usize, T)>, FormatError> {
    let mut rows = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut line)
            .map_err(|source| FormatError::Io {
                context: "read",
                path: file_name.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        let error = |field: &str, reason: String| FormatError::Input {
            file: file_name.to_owned(),
            line: number,
            field: field.to_owned(),
            reason,
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(error(
                "<line>",
                format!("longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| error("<line>", format!("not valid JSON ({e})")))?;
        let Value::Object(object) = value else {
            return Err(error("<line>", "must be a JSON object".to_owned()));
        };
        let row = parse(Fields(&object)).map_err(|e| error(&e.field, e.reason))?;
        rows.push((number, row));
    }
    Ok(rows)
}

fn parse_event(fields: Fields<'_>) -> Result<Arrival, LineError> {
    let raw = RawEvent {
        event_id: fields.string("event_id")?,
        source: fields.string("source")?,
        kind: fields.string("kind")?,
        sku: fields.integer("sku", "u64")?,
        location: fields.integer("location", "u32")?,
        qty: fields.integer("qty", "i64")?,
        event_time: fields.string("event_time")?,
        ingest_time: fields.string("ingest_time")?,
        reservation_id: fields.string("reservation_id")?,
        counterparty_location: fields.integer("counterparty_location", "u32")?,
        expected_time: fields.string("expected_time")?,
    };
    raw.arrival().map_err(|e| LineError::new(e.field, e.reason))
}

fn parse_time(fields: &Fields<'_>, field: &str) -> Result<Timestamp, LineError> {
    Timestamp::parse_rfc3339(&fields.required_string(field)?)
        .map_err(|reason| LineError::new(field, reason))
}

fn parse_query(fields: Fields<'_>) -> Result<Query, LineError> {
    let query_id = fields.required_string("query_id")?;
    if query_id.is_empty() {
        return Err(LineError::new("query_id", "must not be empty"));
    }
    let time = parse_time(&fields, "time")?;
    let sku = fields.required_integer("sku", "u64")?;
    let location = fields.required_integer("location", "u32")?;
    let quantity: i64 = fields.required_integer("qty", "i64")?;
    if quantity < 1 {
        return Err(LineError::new(
            "qty",
            format!("must be at least 1, got {quantity}"),
        ));
    }
    let surface_text = fields.required_string("surface")?;
    let surface = Surface::parse(&surface_text).ok_or_else(|| {
        LineError::new(
            "surface",
            format!(
                "unknown surface {surface_text:?}; expected one of {}",
                Surface::expected()
            ),
        )
    })?;
    Ok(Query {
        query_id,
        time,
        pair: PairKey::new(sku, location),
        quantity,
        surface,
    })
}

fn parse_location(fields: Fields<'_>) -> Result<Location, LineError> {
    let sources = match fields.get("sources") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    LineError::new("sources", format!("{item} is not a source name"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(LineError::new(
                "sources",
                format!("must be a list of sources, got {other}"),
            ));
        }
    };
    LocationInput {
        location: fields.required_integer("location", "u32")?,
        kind: fields.string("kind")?,
        region: fields.string("region")?,
        timezone: fields.string("timezone")?,
        open_hour: fields.integer("open_hour", "u8")?,
        close_hour: fields.integer("close_hour", "u8")?,
        sources,
    }
    .validate()
    .map_err(|e| LineError::new(e.field, e.reason))
}

/// Reads and validates an events file, sorted by arrival (file order breaking ties); each
/// arrival keeps its line number.
pub fn events_from(
    reader: impl BufRead,
    file_name: &str,
) -> Result<Vec<(usize, Arrival)>, FormatError> {
    let mut events = read_jsonl(reader, file_name, parse_event)?;
    events.sort_by_key(|(_, arrival)| arrival.arrival_time); // Stable: file order breaks ties.
    Ok(events)
}

/// Reads and validates a queries file from `reader` (named `file_name` in errors), in file order.
pub fn queries_from(reader: impl BufRead, file_name: &str) -> Result<Vec<Query>, FormatError> {
    let rows = read_jsonl(reader, file_name, parse_query)?;
    let mut seen = std::collections::HashSet::new();
    for (line, query) in &rows {
        if !seen.insert(query.query_id.as_str()) {
            return Err(FormatError::Input {
                file: file_name.to_owned(),
                line: *line,
                field: "query_id".to_owned(),
                reason: format!("{:?} repeats an earlier query's id", query.query_id),
            });
        }
    }
    Ok(rows.into_iter().map(|(_, query)| query).collect())
}

/// Reads and validates a locations file from `reader` (named `file_name` in errors).
pub fn locations_from(reader: impl BufRead, file_name: &str) -> Result<Vec<Location>, FormatError> {
    let rows = read_jsonl(reader, file_name, parse_location)?;
    let mut seen = std::collections::HashSet::new();
    for (line, location) in &rows {
        if !seen.insert(location.location) {
            return Err(FormatError::Input {
                file: file_name.to_owned(),
                line: *line,
                field: "location".to_owned(),
                reason: format!("location {} is listed twice", location.location),
            });
        }
    }
    Ok(rows.into_iter().map(|(_, location)| location).collect())
}
