//! The location catalog's vocabulary: kind, region, time zone, opening hours and expected
//! feeds of each location, validated in one place (for the replay files and the `Catalog` API
//! alike).

use serde::{Deserialize, Serialize};

use crate::domain::{Source, excerpt};

/// Most locations one upsert may carry.
pub const MAX_LOCATIONS_PER_UPSERT: usize = 10_000;
/// Most locations one page lists.
pub const MAX_PAGE: usize = 1_000;

/// A validated location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Its number.
    pub location: u32,
    /// `store`, `fc` or `warehouse`.
    pub kind: String,
    /// Its region.
    pub region: Option<String>,
    /// IANA time zone name (default UTC).
    pub timezone: String,
    /// Opening hour, local time.
    pub open_hour: u8,
    /// Closing hour, local time.
    pub close_hour: u8,
    /// Feeds it is expected to send.
    pub sources: Vec<Source>,
}

/// A location as given, before validation (missing optional fields are `None`).
#[derive(Clone, Debug, Default)]
pub struct LocationInput {
    /// Its number.
    pub location: u32,
    /// Default `store`.
    pub kind: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Default `UTC`.
    pub timezone: Option<String>,
    /// Default 0.
    pub open_hour: Option<i64>,
    /// Default 24.
    pub close_hour: Option<i64>,
    /// Source names.
    pub sources: Vec<String>,
}

/// A field of a location that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidLocation {
    /// The field's name.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn invalid(field: &'static str, reason: String) -> InvalidLocation {
    InvalidLocation { field, reason }
}

impl LocationInput {
    /// Validates, naming the first bad field.
    pub fn validate(self) -> Result<Location, InvalidLocation> {
        let kind = self.kind.unwrap_or_else(|| "store".to_owned());
        if !matches!(kind.as_str(), "store" | "fc" | "warehouse") {
            return Err(invalid(
                "kind",
                format!(
                    "unknown kind {}; expected one of store, fc, warehouse",
                    excerpt(&kind)
                ),
            ));
        }
        let timezone = self.timezone.unwrap_or_else(|| "UTC".to_owned());
        if timezone.len() > 64 || !stockgrid_inference::hours::is_time_zone(&timezone) {
            return Err(invalid(
                "timezone",
                format!(
                    "{} is not a time zone of the IANA database (e.g. America/Chicago, UTC)",
                    excerpt(&timezone)
                ),
            ));
        }
        if let Some(region) = &self.region
            && region.len() > 64
        {
            return Err(invalid(
                "region",
                format!("must be at most 64 bytes, got {}", region.len()),
            ));
        }
        let open_hour = self.open_hour.unwrap_or(0);
        let close_hour = self.close_hour.unwrap_or(24);
        if !(0..=23).contains(&open_hour) {
            return Err(invalid(
                "open_hour",
                format!("must be 0 to 23, got {open_hour}"),
            ));
        }
        if !(1..=24).contains(&close_hour) || close_hour == open_hour {
            return Err(invalid(
                "close_hour",
                format!("must be 1 to 24 and differ from open_hour, got {close_hour}"),
            ));
        }
        let sources = self
            .sources
            .iter()
            .map(|name| {
                Source::parse(name).ok_or_else(|| {
                    invalid(
                        "sources",
                        format!(
                            "{} is not a source; expected one of {}",
                            excerpt(name),
                            Source::expected()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Location {
            location: self.location,
            kind,
            region: self.region.filter(|r| !r.is_empty()),
            timezone,
            open_hour: open_hour as u8,
            close_hour: close_hour as u8,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_field() {
        let location = LocationInput {
            location: 7,
            ..LocationInput::default()
        }
        .validate()
        .expect("defaults are valid");
        assert_eq!(
            (location.kind.as_str(), location.timezone.as_str()),
            ("store", "UTC")
        );
        assert_eq!((location.open_hour, location.close_hour), (0, 24));
        let bad = LocationInput {
            location: 7,
            sources: vec!["pos".to_owned(), "fax".to_owned()],
            ..LocationInput::default()
        }
        .validate()
        .expect_err("unknown source");
        assert_eq!(bad.field, "sources");
        let bad = LocationInput {
            location: 7,
            open_hour: Some(9),
            close_hour: Some(9),
            ..LocationInput::default()
        }
        .validate()
        .expect_err("empty opening hours");
        assert_eq!(bad.field, "close_hour");
    }
}
