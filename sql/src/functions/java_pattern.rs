//! Java's `DateTimeFormatter` patterns (`yyyy-MM-dd HH:mm:ss.SSS`), which Flink's `DATE_FORMAT`
//! takes, compiled once and applied to each row.

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::{DAYS, MONTHS};

/// A field of a date-time that a pattern letter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `y`: year of era (never negative).
    YearOfEra,
    /// `u`: the proleptic year, with a sign before year 1.
    Year,
    /// `M` or `L`: month of year.
    Month,
    /// `d`: day of month.
    DayOfMonth,
    /// `D`: day of year.
    DayOfYear,
    /// `Q` or `q`: quarter of year.
    Quarter,
    /// `E`: day of week as text.
    DayOfWeek,
    /// `a`: AM or PM.
    AmPm,
    /// `H`: hour of day, 0-23.
    Hour,
    /// `k`: clock hour of day, 1-24.
    ClockHour,
    /// `K`: hour of AM/PM, 0-11.
    HourOfAmPm,
    /// `h`: clock hour of AM/PM, 1-12.
    ClockHourOfAmPm,
    /// `m`: minute of hour.
    Minute,
    /// `s`: second of minute.
    Second,
    /// `S`: fraction of second, as many leading digits as letters.
    Fraction,
    /// `n`: nanosecond of second.
    NanoOfSecond,
    /// `A`: millisecond of day.
    MilliOfDay,
    /// `N`: nanosecond of day.
    NanoOfDay,
}

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field, usize),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaPattern(Vec<Piece>);

/// The field of a pattern letter and the largest count Java accepts for it, or why Weir
/// refuses the letter.
fn letter(c: char) -> Result<(Field, usize), String> {
    Ok(match c {
        'y' => (Field::YearOfEra, 19),
        'u' => (Field::Year, 19),
        'M' | 'L' => (Field::Month, 5),
        'd' => (Field::DayOfMonth, 2),
        'D' => (Field::DayOfYear, 3),
        'Q' | 'q' => (Field::Quarter, 5),
        'E' => (Field::DayOfWeek, 5),
        'a' => (Field::AmPm, 1),
        'H' => (Field::Hour, 2),
        'k' => (Field::ClockHour, 2),
        'K' => (Field::HourOfAmPm, 2),
        'h' => (Field::ClockHourOfAmPm, 2),
        'm' => (Field::Minute, 2),
        's' => (Field::Second, 2),
        'S' => (Field::Fraction, 9),
        'n' => (Field::NanoOfSecond, 19),
        'A' => (Field::MilliOfDay, 19),
        'N' => (Field::NanoOfDay, 19),
        'z' | 'Z' | 'O' | 'X' | 'x' | 'V' | 'v' => {
            return Err(format!(
                "pattern letter '{c}' prints a time zone, which a TIMESTAMP without time zone does not have"
            ));
        }
        'G' | 'Y' | 'w' | 'W' | 'e' | 'c' | 'F' | 'B' | 'g' => {
            return Err(format!(
                "pattern letter '{c}' depends on a locale's calendar rules, which Weir does not apply"
            ));
        }
        _ => return Err(format!("unknown pattern letter '{c}'")),
    })
}

impl JavaPattern {
    /// Compiles `pattern` as `DateTimeFormatter.ofPattern` reads it: runs of a letter are a
    /// field, `'...'` is literal text (`''` is one quote), `[` and `]` mark optional sections
    /// (whose fields a timestamp always has), and any other character is itself. Letters Weir
    /// cannot honour (time zones, week-based and era fields) are refused with the reason.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_alphabetic() {
                let run = chars[i..].iter().take_while(|&&x| x == c).count();
                let (field, max) = letter(c)?;
                if run > max {
                    return Err(format!("too many pattern letters: '{c}' × {run}"));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(field, run));
                i += run;
            } else if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    text.push('\'');
                    i += 2;
                    continue;
                }
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err("pattern has an unclosed quote (')".into()),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            text.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&x) => {
                            text.push(x);
                            j += 1;
                        }
                    }
                }
                i = j + 1;
            } else if matches!(c, '{' | '}' | '#') {
                return Err(format!("pattern character '{c}' is reserved"));
            } else {
                if !matches!(c, '[' | ']') {
                    text.push(c);
                }
                i += 1;
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }

    /// Appends `t` formatted by the pattern to `out`, in English (Java's `Locale.US`).
    pub fn format(&self, t: &NaiveDateTime, out: &mut String) {
        use std::fmt::Write as _;
        for piece in &self.0 {
            let (field, n) = match piece {
                Piece::Text(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Field(f, n) => (*f, *n),
            };
            let hour = t.hour();
            let number = |out: &mut String, v: i64| {
                let _ = write!(out, "{v:0n$}");
            };
            match field {
                Field::YearOfEra | Field::Year => {
                    let year = i64::from(t.year());
                    let v = if field == Field::YearOfEra && year <= 0 {
                        1 - year
                    } else {
                        year
                    };
                    if n == 2 {
                        let _ = write!(out, "{:02}", v.rem_euclid(100));
                    } else {
                        // Four or more letters pad and print a sign once the value outgrows them.
                        let digits = v.unsigned_abs().to_string().len();
                        if v < 0 {
                            out.push('-');
                        } else if n >= 4 && digits > n {
                            out.push('+');
                        }
                        let _ = write!(out, "{:0n$}", v.unsigned_abs());
                    }
                }
                Field::Month => {
                    let m = t.month() as usize;
                    match n {
                        1 | 2 => number(out, m as i64),
                        3 => out.push_str(&MONTHS[m - 1][..3]),
                        4 => out.push_str(MONTHS[m - 1]),
                        _ => out.push_str(&MONTHS[m - 1][..1]),
                    }
                }
                Field::DayOfMonth => number(out, i64::from(t.day())),
                Field::DayOfYear => number(out, i64::from(t.ordinal())),
                Field::Quarter => {
                    let q = (t.month() - 1) / 3 + 1;
                    match n {
                        1 | 2 => number(out, i64::from(q)),
                        3 => {
                            let _ = write!(out, "Q{q}");
                        }
                        4 => {
                            let th = ["1st", "2nd", "3rd", "4th"][q as usize - 1];
                            let _ = write!(out, "{th} quarter");
                        }
                        _ => {
                            let _ = write!(out, "{q}");
                        }
                    }
                }
                Field::DayOfWeek => {
                    let d = DAYS[t.weekday().num_days_from_sunday() as usize];
                    match n {
                        1..=3 => out.push_str(&d[..3]),
                        4 => out.push_str(d),
                        _ => out.push_str(&d[..1]),
                    }
                }
                Field::AmPm => out.push_str(if hour < 12 { "AM" } else { "PM" }),
                Field::Hour => number(out, i64::from(hour)),
                Field::ClockHour => number(out, i64::from(if hour == 0 { 24 } else { hour })),
                Field::HourOfAmPm => number(out, i64::from(hour % 12)),
                Field::ClockHourOfAmPm => {
                    number(out, i64::from(if hour % 12 == 0 { 12 } else { hour % 12 }))
                }
                Field::Minute => number(out, i64::from(t.minute())),
                Field::Second => number(out, i64::from(t.second())),
                Field::Fraction => {
                    let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
                    out.push_str(&nanos[..n]);
                }
                Field::NanoOfSecond => number(out, i64::from(t.nanosecond() % 1_000_000_000)),
                Field::MilliOfDay | Field::NanoOfDay => {
                    let nanos = i64::from(t.num_seconds_from_midnight()) * 1_000_000_000
                        + i64::from(t.nanosecond() % 1_000_000_000);
                    let v = if field == Field::MilliOfDay {
                        nanos / 1_000_000
                    } else {
                        nanos
                    };
                    number(out, v);
                }
            }
        }
    }
}

/// The digits of one numeric field read from `text` at `at`: exactly `width` of them, or
/// between `min` and `max` (greedy) when the width is free.
fn digits(text: &[u8], at: &mut usize, min: usize, max: usize) -> Result<(i64, usize), String> {
    let run = text[*at..]
        .iter()
        .take(max)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if run < min {
        return Err(format!("expected {min} digit(s) at position {}", *at + 1));
    }
    let s = std::str::from_utf8(&text[*at..*at + run]).unwrap_or("0");
    let v = s.parse::<i64>().map_err(|e| e.to_string())?;
    *at += run;
    Ok((v, run))
}

impl JavaPattern {
    /// Reads `text` as `DateTimeFormatter.parse` with this pattern would, for numeric fields
    /// (year, month, day, hour, minute, second, fraction): a field of one letter takes one or
    /// two digits, more letters exactly that many (a year at least that many; `yy` is 2000 to
    /// 2099), and a field followed at once by another takes exactly its width. Fields not
    /// given are the start of their unit (1970-01-01 00:00:00). The whole text must match.
    pub fn parse_datetime(&self, text: &str) -> Result<NaiveDateTime, String> {
        let bytes = text.as_bytes();
        let mut at = 0;
        let (mut year, mut month, mut day) = (1970i64, 1i64, 1i64);
        let (mut hour, mut minute, mut second, mut nanos) = (0i64, 0i64, 0i64, 0i64);
        for (i, piece) in self.0.iter().enumerate() {
            let (field, n) = match piece {
                Piece::Text(t) => {
                    if !text[at..].starts_with(t.as_str()) {
                        return Err(format!("expected {t:?} at position {}", at + 1));
                    }
                    at += t.len();
                    continue;
                }
                Piece::Field(f, n) => (*f, *n),
            };
            let adjacent = matches!(self.0.get(i + 1), Some(Piece::Field(..)));
            let (min, max) = match (field, n) {
                _ if adjacent => (n, n),
                (Field::YearOfEra | Field::Year, 2) => (2, 2),
                (Field::YearOfEra | Field::Year, _) => (n, 19),
                (Field::Fraction, _) => (n, n),
                (_, 1) => (1, 2),
                _ => (n, n),
            };
            let numeric = matches!(
                field,
                Field::YearOfEra
                    | Field::Year
                    | Field::DayOfMonth
                    | Field::Hour
                    | Field::Minute
                    | Field::Second
                    | Field::Fraction
            ) || (field == Field::Month && n <= 2);
            if !numeric {
                return Err(format!(
                    "Weir reads only numeric fields (years, months as numbers, days, hours, \
                     minutes, seconds, fractions), not {field:?}"
                ));
            }
            let (v, _) = digits(bytes, &mut at, min, max)?;
            match field {
                Field::YearOfEra | Field::Year if n == 2 => year = 2000 + v,
                Field::YearOfEra | Field::Year => year = v,
                Field::Month => month = v,
                Field::DayOfMonth => day = v,
                Field::Hour => hour = v,
                Field::Minute => minute = v,
                Field::Second => second = v,
                Field::Fraction => nanos = v * 10i64.pow(9 - n as u32),
                _ => {}
            }
        }
        if at != bytes.len() {
            return Err(format!("unexpected text at position {}", at + 1));
        }
        let date = i32::try_from(year)
            .ok()
            .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, month as u32, day as u32))
            .ok_or_else(|| format!("no such date: {year}-{month}-{day}"))?;
        let time = chrono::NaiveTime::from_hms_nano_opt(
            hour as u32,
            minute as u32,
            second as u32,
            nanos as u32,
        )
        .ok_or_else(|| format!("no such time: {hour}:{minute}:{second}"))?;
        Ok(NaiveDateTime::new(date, time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(pattern: &str, at: &str) -> String {
        let t = NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f").expect("timestamp");
        let mut out = String::new();
        JavaPattern::parse(pattern)
            .expect("pattern")
            .format(&t, &mut out);
        out
    }

    #[test]
    fn formats_as_java_does() {
        // Values as java.time.format.DateTimeFormatter prints them (Locale.US).
        let at = "2026-03-07 08:05:09.012345678";
        assert_eq!(fmt("yyyy-MM-dd", at), "2026-03-07");
        assert_eq!(fmt("HH:mm", at), "08:05");
        assert_eq!(
            fmt("yyyy-MM-dd HH:mm:ss.SSS", at),
            "2026-03-07 08:05:09.012"
        );
        assert_eq!(fmt("yy/M/d H:m:s S", at), "26/3/7 8:5:9 0");
        assert_eq!(fmt("EEE, d MMM yyyy h:mm a", at), "Sat, 7 Mar 2026 8:05 AM");
        assert_eq!(fmt("EEEE MMMM QQQ D", at), "Saturday March Q1 66");
        assert_eq!(fmt("'at' HH 'o''clock' ''", at), "at 08 o'clock '");
        assert_eq!(fmt("[yyyy]", at), "2026");
        assert_eq!(fmt("k K h", "2026-03-07 00:30:00.0"), "24 0 12");
        assert_eq!(fmt("SSSSSSSSS n", at), "012345678 12345678");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "yyyy-MM-dd z",
            "YYYY",
            "ww",
            "'open",
            "ddd",
            "HHH",
            "{",
            "aa",
            "b",
        ] {
            assert!(JavaPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_numeric_fields_as_java_does() {
        let at = |p: &str, t: &str| {
            JavaPattern::parse(p)
                .expect("pattern")
                .parse_datetime(t)
                .map(|d| d.to_string())
        };
        assert_eq!(
            at("yyyy-MM-dd HH:mm:ss", "2026-03-07 08:05:09").as_deref(),
            Ok("2026-03-07 08:05:09")
        );
        assert_eq!(
            at("yyyy-MM-dd", "2026-03-07").as_deref(),
            Ok("2026-03-07 00:00:00")
        );
        assert_eq!(
            at("yyyyMMddHHmm", "202603070805").as_deref(),
            Ok("2026-03-07 08:05:00")
        );
        assert_eq!(at("d/M/yy", "7/3/26").as_deref(), Ok("2026-03-07 00:00:00"));
        assert_eq!(
            at("HH:mm:ss.SSS", "08:05:09.012").as_deref(),
            Ok("1970-01-01 08:05:09.012")
        );
        assert!(at("yyyy-MM-dd", "2026-3-07").is_err());
        assert!(at("yyyy-MM-dd", "2026-02-30").is_err());
        assert!(at("yyyy-MM-dd", "2026-03-07 extra").is_err());
        assert!(at("EEE yyyy", "Sat 2026").is_err());
    }
}
