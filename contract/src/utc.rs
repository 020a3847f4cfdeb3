//! The one text form of an instant in the contract: RFC 3339, UTC, six fractional digits and `Z`
//! (`2026-12-01T09:00:00.123456Z`), as run records and replies carry it (contract: Run records).
//!
//! Written with a `time` format description rather than by hand, so the width of every field is
//! the crate's business; read with the crate's full RFC 3339 parser, so an instant another tool
//! wrote with an offset or fewer digits still reads, converted to UTC.

use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `YYYY-MM-DDThh:mm:ss.uuuuuuZ`, always in UTC.
pub const UTC_MICROS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats `at` in UTC with exactly six fractional digits (sub-microsecond digits are dropped).
pub fn format_utc_micros(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(UTC_MICROS)
        .expect("every component of the format is in OffsetDateTime")
}

/// Formats microseconds since the Unix epoch like [`format_utc_micros`]; `None` when the instant
/// lies beyond what `time` represents (years outside ±9999).
pub fn format_epoch_micros(micros: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
    Some(format_utc_micros(at))
}

/// Parses any RFC 3339 instant (offset, any number of fractional digits) and converts it to UTC.
pub fn parse_utc(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    Ok(OffsetDateTime::parse(text, &Rfc3339)?.to_offset(UtcOffset::UTC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_digits_always_and_utc() {
        assert_eq!(
            format_epoch_micros(1_000_001).unwrap(),
            "1970-01-01T00:00:01.000001Z"
        );
        assert_eq!(
            format_epoch_micros(0).unwrap(),
            "1970-01-01T00:00:00.000000Z"
        );
        let paris = parse_utc("2026-12-01T10:00:00.5+01:00").unwrap();
        assert_eq!(format_utc_micros(paris), "2026-12-01T09:00:00.500000Z");
        assert_eq!(paris.offset(), UtcOffset::UTC);
    }

    #[test]
    fn sub_microsecond_digits_are_dropped_not_rounded() {
        let at = parse_utc("2026-12-01T09:00:00.9999999Z").unwrap();
        assert_eq!(format_utc_micros(at), "2026-12-01T09:00:00.999999Z");
    }

    #[test]
    fn formatted_text_parses_back_to_the_same_instant() {
        let micros = 1_796_115_600_123_456;
        let text = format_epoch_micros(micros).unwrap();
        let back = parse_utc(&text).unwrap();
        assert_eq!(back.unix_timestamp_nanos(), i128::from(micros) * 1_000);
    }

    #[test]
    fn malformed_instants_are_errors() {
        for text in ["2026-12-01T09:00Z", "2026-12-01T09:00:00", "yesterday"] {
            assert!(parse_utc(text).is_err(), "{text}");
        }
        assert!(format_epoch_micros(i64::MAX).is_none());
    }
}
