//! Calendar arithmetic and fast RFC 3339 text for the simulator's output.
//!
//! `sim generate` writes millions of timestamps a second; formatting each through a general
//! date library would dominate its run time, so days are converted with Howard Hinnant's
//! `days_from_civil` / `civil_from_days` and digits are written by hand. The text is the
//! same as `Timestamp::to_rfc3339` for whole milliseconds (`2026-03-02T10:00:00.123Z`), which
//! a test checks.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number (days since 1970-01-01).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day of the week of a day number: 0 = Monday ... 6 = Sunday.
pub fn weekday(days: i64) -> usize {
    // 1970-01-01 was a Thursday (3).
    (days + 3).rem_euclid(7) as usize
}

fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buffer = [b'0'; 10];
    let mut rest = value;
    for slot in buffer[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&buffer[..width]);
}

thread_local! {
    /// The last day formatted on this thread and its `YYYY-MM-DDT` text: consecutive
    /// timestamps mostly share a day, and the calendar conversion is the costly part.
    static LAST_DAY: std::cell::Cell<(i64, [u8; 11])> = const { std::cell::Cell::new((i64::MIN, [0; 11])) };
}

/// Appends `millis` (since the epoch, UTC) as RFC 3339 with milliseconds.
pub fn push_rfc3339(out: &mut Vec<u8>, millis: i64) {
    let days = millis.div_euclid(DAY_MS);
    let in_day = millis.rem_euclid(DAY_MS);
    let (cached_day, mut prefix) = LAST_DAY.get();
    if cached_day != days {
        let (year, month, day) = civil_from_days(days);
        let mut text = Vec::with_capacity(11);
        push_digits(&mut text, year.clamp(0, 9999) as u32, 4);
        text.push(b'-');
        push_digits(&mut text, month, 2);
        text.push(b'-');
        push_digits(&mut text, day, 2);
        text.push(b'T');
        prefix.copy_from_slice(&text);
        LAST_DAY.set((days, prefix));
    }
    out.extend_from_slice(&prefix);
    push_digits(out, (in_day / HOUR_MS) as u32, 2);
    out.push(b':');
    push_digits(out, (in_day / 60_000 % 60) as u32, 2);
    out.push(b':');
    push_digits(out, (in_day / 1000 % 60) as u32, 2);
    out.push(b'.');
    push_digits(out, (in_day % 1000) as u32, 3);
    out.push(b'Z');
}

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut buffer = [0u8; 20];
    let mut at = buffer.len();
    let mut rest = value;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&buffer[at..]);
}

/// Appends a signed integer in decimal.
pub fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockgrid_actors::time::Timestamp;

    #[test]
    fn dates_round_trip_and_match_the_engine_text() {
        for days in [-1000, 0, 1, 59, 365, 10_957, 20_514, 20_600, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(weekday(days_from_civil(2026, 3, 2)), 0, "a Monday");
        for millis in [0, 1_772_431_200_123, 1_700_000_000_999, 1_772_431_259_001] {
            let mut text = Vec::new();
            push_rfc3339(&mut text, millis);
            let text = String::from_utf8(text).expect("ascii");
            assert_eq!(
                Timestamp::parse_rfc3339(&text),
                Ok(Timestamp(millis)),
                "{text}"
            );
        }
        let mut number = Vec::new();
        push_i64(&mut number, -1234);
        push_u64(&mut number, 0);
        assert_eq!(number, b"-12340");
    }
}
