//! PostgreSQL's date/time template patterns (`'YYYY-MM-DD HH24:MI:SS'`), which its `to_char`
//! takes, compiled once and applied to each row; in English, as PostgreSQL's C locale prints.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::{DAYS, MONTHS};

/// A field of a date-time that a template pattern prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Hour12,
    Hour24,
    Minute,
    Second,
    Millis,
    Micros,
    /// `FF1`..`FF6`: the first n digits of the fraction.
    Fraction(usize),
    SecondsOfDay,
    /// `AM`, `am`, `A.M.`, ... (`PM` prints the same as `AM`).
    Meridiem {
        upper: bool,
        dots: bool,
    },
    YearComma,
    Year4,
    Year3,
    Year2,
    Year1,
    IsoYear4,
    IsoYear3,
    IsoYear2,
    IsoYear1,
    /// `BC`, `AD`, `B.C.`, ...
    Era {
        upper: bool,
        dots: bool,
    },
    /// `MONTH`, `Month`, `month`: full name, blank-padded to 9.
    MonthName(Case),
    /// `MON`, `Mon`, `mon`.
    MonthShort(Case),
    Month,
    /// `DAY`, `Day`, `day`: full name, blank-padded to 9.
    DayName(Case),
    /// `DY`, `Dy`, `dy`.
    DayShort(Case),
    DayOfYear,
    IsoDayOfYear,
    DayOfMonth,
    /// `D`: 1 (Sunday) to 7.
    DayOfWeek,
    /// `ID`: 1 (Monday) to 7.
    IsoDayOfWeek,
    WeekOfMonth,
    WeekOfYear,
    IsoWeek,
    Century,
    Julian,
    Quarter,
    /// `RM`, `rm`: the month in Roman numerals.
    RomanMonth {
        upper: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Upper,
    Capitalized,
    Lower,
}

/// Keywords, longest first where one is a prefix of another (PostgreSQL matches the longest).
const KEYWORDS: &[(&str, Field)] = &[
    (
        "A.M.",
        Field::Meridiem {
            upper: true,
            dots: true,
        },
    ),
    (
        "P.M.",
        Field::Meridiem {
            upper: true,
            dots: true,
        },
    ),
    (
        "a.m.",
        Field::Meridiem {
            upper: false,
            dots: true,
        },
    ),
    (
        "p.m.",
        Field::Meridiem {
            upper: false,
            dots: true,
        },
    ),
    (
        "AM",
        Field::Meridiem {
            upper: true,
            dots: false,
        },
    ),
    (
        "PM",
        Field::Meridiem {
            upper: true,
            dots: false,
        },
    ),
    (
        "am",
        Field::Meridiem {
            upper: false,
            dots: false,
        },
    ),
    (
        "pm",
        Field::Meridiem {
            upper: false,
            dots: false,
        },
    ),
    (
        "A.D.",
        Field::Era {
            upper: true,
            dots: true,
        },
    ),
    (
        "B.C.",
        Field::Era {
            upper: true,
            dots: true,
        },
    ),
    (
        "a.d.",
        Field::Era {
            upper: false,
            dots: true,
        },
    ),
    (
        "b.c.",
        Field::Era {
            upper: false,
            dots: true,
        },
    ),
    (
        "AD",
        Field::Era {
            upper: true,
            dots: false,
        },
    ),
    (
        "BC",
        Field::Era {
            upper: true,
            dots: false,
        },
    ),
    (
        "ad",
        Field::Era {
            upper: false,
            dots: false,
        },
    ),
    (
        "bc",
        Field::Era {
            upper: false,
            dots: false,
        },
    ),
    ("MONTH", Field::MonthName(Case::Upper)),
    ("Month", Field::MonthName(Case::Capitalized)),
    ("month", Field::MonthName(Case::Lower)),
    ("MON", Field::MonthShort(Case::Upper)),
    ("Mon", Field::MonthShort(Case::Capitalized)),
    ("mon", Field::MonthShort(Case::Lower)),
    ("DAY", Field::DayName(Case::Upper)),
    ("Day", Field::DayName(Case::Capitalized)),
    ("day", Field::DayName(Case::Lower)),
    ("DY", Field::DayShort(Case::Upper)),
    ("Dy", Field::DayShort(Case::Capitalized)),
    ("dy", Field::DayShort(Case::Lower)),
    ("RM", Field::RomanMonth { upper: true }),
    ("rm", Field::RomanMonth { upper: false }),
];

/// Keywords matched without regard to case, longest first.
const ANY_CASE: &[(&str, Field)] = &[
    ("HH24", Field::Hour24),
    ("HH12", Field::Hour12),
    ("HH", Field::Hour12),
    ("MI", Field::Minute),
    ("SSSSS", Field::SecondsOfDay),
    ("SSSS", Field::SecondsOfDay),
    ("SS", Field::Second),
    ("MS", Field::Millis),
    ("US", Field::Micros),
    ("FF1", Field::Fraction(1)),
    ("FF2", Field::Fraction(2)),
    ("FF3", Field::Fraction(3)),
    ("FF4", Field::Fraction(4)),
    ("FF5", Field::Fraction(5)),
    ("FF6", Field::Fraction(6)),
    ("Y,YYY", Field::YearComma),
    ("YYYY", Field::Year4),
    ("YYY", Field::Year3),
    ("YY", Field::Year2),
    ("Y", Field::Year1),
    ("IYYY", Field::IsoYear4),
    ("IYY", Field::IsoYear3),
    ("IY", Field::IsoYear2),
    ("IDDD", Field::IsoDayOfYear),
    ("ID", Field::IsoDayOfWeek),
    ("IW", Field::IsoWeek),
    ("I", Field::IsoYear1),
    ("MM", Field::Month),
    ("DDD", Field::DayOfYear),
    ("DD", Field::DayOfMonth),
    ("D", Field::DayOfWeek),
    ("WW", Field::WeekOfYear),
    ("W", Field::WeekOfMonth),
    ("CC", Field::Century),
    ("J", Field::Julian),
    ("Q", Field::Quarter),
];

/// Time-zone keywords, which a timestamp without time zone cannot print.
const ZONES: &[&str] = &["TZH", "TZM", "TZ", "tz", "OF"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field {
        field: Field,
        /// `FM`: no padding.
        fill: bool,
        /// `FM` or `TM`: day and month names without padding.
        bare_names: bool,
        /// `TH` / `th`: an ordinal suffix, upper or lower case.
        ordinal: Option<bool>,
    },
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgPattern(Vec<Piece>);

const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

fn starts_with_any_case(text: &[char], keyword: &str) -> bool {
    let k: Vec<char> = keyword.chars().collect();
    text.len() >= k.len()
        && text
            .iter()
            .zip(&k)
            .all(|(a, b)| a.to_ascii_uppercase() == b.to_ascii_uppercase())
}

fn starts_with(text: &[char], keyword: &str) -> bool {
    let k: Vec<char> = keyword.chars().collect();
    text.len() >= k.len() && text[..k.len()] == k[..]
}

/// The keyword at the start of `rest`, with its length.
fn keyword(rest: &[char]) -> Option<(Field, usize)> {
    KEYWORDS
        .iter()
        .find(|(k, _)| starts_with(rest, k))
        .or_else(|| ANY_CASE.iter().find(|(k, _)| starts_with_any_case(rest, k)))
        .map(|(k, f)| (*f, k.chars().count()))
}

impl PgPattern {
    /// Compiles `template` as PostgreSQL's `to_char` reads it: keywords (the longest that
    /// matches), the `FM` prefix and `TH`/`th` suffix, `"..."` literal text (with `\"`), and
    /// any other character as itself. Time-zone keywords are refused.
    pub fn parse(template: &str) -> Result<Self, String> {
        let chars: Vec<char> = template.chars().collect();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            // As PostgreSQL reads a template: at each position at most one prefix (FM: no
            // padding; TM: names without padding), then a keyword or one literal character;
            // a prefix that no keyword follows is dropped.
            let r = &chars[i..];
            let fill = starts_with(r, "FM") || starts_with(r, "fm");
            let tm = starts_with(r, "TM") || starts_with(r, "tm");
            if fill || tm {
                i += 2;
                if i == chars.len() {
                    break;
                }
            }
            let rest = &chars[i..];
            if starts_with(rest, "FX") || starts_with(rest, "fx") {
                // Fixed-format matching, which only to_timestamp reads: prints nothing.
                i += 2;
                continue;
            }
            if let Some(zone) = ZONES.iter().find(|z| starts_with(rest, z)) {
                return Err(format!(
                    "template pattern \"{zone}\" prints a time zone, which a timestamp without time zone does not have"
                ));
            }
            if let Some((field, len)) = keyword(rest) {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                let mut k = i + len;
                // At most one suffix: TH / th (an ordinal), or SP (spell mode, which
                // PostgreSQL accepts and ignores).
                let ordinal = if starts_with(&chars[k..], "TH") {
                    k += 2;
                    Some(true)
                } else if starts_with(&chars[k..], "th") {
                    k += 2;
                    Some(false)
                } else {
                    if starts_with(&chars[k..], "SP") {
                        k += 2;
                    }
                    None
                };
                pieces.push(Piece::Field {
                    field,
                    fill,
                    bare_names: fill || tm,
                    ordinal,
                });
                i = k;
                continue;
            }
            if rest[0] == '"' {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            // Outside quotes a backslash is only special before a double quote.
            if rest[0] == '\\' && rest.get(1) == Some(&'"') {
                text.push('"');
                i += 2;
                continue;
            }
            text.push(rest[0]);
            i += 1;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }

    /// Appends `t` formatted by the template to `out`.
    pub fn format(&self, t: &NaiveDateTime, out: &mut String) {
        for piece in &self.0 {
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Field {
                    field,
                    fill,
                    bare_names,
                    ordinal,
                } => {
                    let number = format_field(*field, *fill, *bare_names, t, out);
                    if let (Some(upper), Some(n)) = (ordinal, number) {
                        let suffix = match (n % 100, n % 10) {
                            (11..=13, _) => "th",
                            (_, 1) => "st",
                            (_, 2) => "nd",
                            (_, 3) => "rd",
                            _ => "th",
                        };
                        out.push_str(&if *upper {
                            suffix.to_uppercase()
                        } else {
                            suffix.to_string()
                        });
                    }
                }
            }
        }
    }
}

fn cased(s: &str, case: Case) -> String {
    match case {
        Case::Upper => s.to_uppercase(),
        Case::Lower => s.to_lowercase(),
        Case::Capitalized => s.to_string(),
    }
}

/// Prints one field; returns its value when it is a number (for an ordinal suffix).
fn format_field(
    field: Field,
    fill: bool,
    bare_names: bool,
    t: &NaiveDateTime,
    out: &mut String,
) -> Option<i64> {
    let number = |out: &mut String, v: i64, width: usize| {
        if fill {
            let _ = write!(out, "{v}");
        } else {
            let _ = write!(out, "{v:0width$}");
        }
        Some(v)
    };
    let name = |out: &mut String, s: String| {
        if bare_names {
            out.push_str(&s);
        } else {
            let _ = write!(out, "{s:<9}");
        }
        None
    };
    let year = i64::from(t.year());
    let iso = t.iso_week();
    let micros = i64::from(t.nanosecond() % 1_000_000_000) / 1000;
    match field {
        Field::Hour12 => number(out, i64::from((t.hour() + 11) % 12 + 1), 2),
        Field::Hour24 => number(out, i64::from(t.hour()), 2),
        Field::Minute => number(out, i64::from(t.minute()), 2),
        Field::Second => number(out, i64::from(t.second()), 2),
        Field::Millis => number(out, micros / 1000, 3),
        Field::Micros => number(out, micros, 6),
        Field::Fraction(n) => {
            let digits = format!("{micros:06}");
            out.push_str(&digits[..n]);
            None
        }
        Field::SecondsOfDay => number(out, i64::from(t.num_seconds_from_midnight()), 0),
        Field::Meridiem { upper, dots } => {
            let am = t.hour() < 12;
            let s = match (am, dots) {
                (true, false) => "AM",
                (false, false) => "PM",
                (true, true) => "A.M.",
                (false, true) => "P.M.",
            };
            out.push_str(&if upper {
                s.to_string()
            } else {
                s.to_lowercase()
            });
            None
        }
        Field::YearComma => {
            let _ = write!(out, "{},{:03}", year / 1000, year.rem_euclid(1000));
            None
        }
        Field::Year4 => number(out, year, 4),
        Field::Year3 => number(out, year.rem_euclid(1000), 3),
        Field::Year2 => number(out, year.rem_euclid(100), 2),
        Field::Year1 => number(out, year.rem_euclid(10), 1),
        Field::IsoYear4 => number(out, i64::from(iso.year()), 4),
        Field::IsoYear3 => number(out, i64::from(iso.year()).rem_euclid(1000), 3),
        Field::IsoYear2 => number(out, i64::from(iso.year()).rem_euclid(100), 2),
        Field::IsoYear1 => number(out, i64::from(iso.year()).rem_euclid(10), 1),
        Field::Era { upper, dots } => {
            let s = match (year > 0, dots) {
                (true, false) => "AD",
                (false, false) => "BC",
                (true, true) => "A.D.",
                (false, true) => "B.C.",
            };
            out.push_str(&if upper {
                s.to_string()
            } else {
                s.to_lowercase()
            });
            None
        }
        Field::MonthName(case) => name(out, cased(MONTHS[t.month0() as usize], case)),
        Field::MonthShort(case) => {
            out.push_str(&cased(&MONTHS[t.month0() as usize][..3], case));
            None
        }
        Field::Month => number(out, i64::from(t.month()), 2),
        Field::DayName(case) => name(
            out,
            cased(DAYS[t.weekday().num_days_from_sunday() as usize], case),
        ),
        Field::DayShort(case) => {
            out.push_str(&cased(
                &DAYS[t.weekday().num_days_from_sunday() as usize][..3],
                case,
            ));
            None
        }
        Field::DayOfYear => number(out, i64::from(t.ordinal()), 3),
        Field::IsoDayOfYear => {
            let v = (i64::from(iso.week()) - 1) * 7 + i64::from(t.weekday().number_from_monday());
            number(out, v, 3)
        }
        Field::DayOfMonth => number(out, i64::from(t.day()), 2),
        Field::DayOfWeek => number(out, i64::from(t.weekday().number_from_sunday()), 0),
        Field::IsoDayOfWeek => number(out, i64::from(t.weekday().number_from_monday()), 0),
        Field::WeekOfMonth => number(out, i64::from((t.day() - 1) / 7 + 1), 0),
        Field::WeekOfYear => number(out, i64::from((t.ordinal() - 1) / 7 + 1), 2),
        Field::IsoWeek => number(out, i64::from(iso.week()), 2),
        Field::Century => {
            let c = if year > 0 {
                (year + 99) / 100
            } else {
                -((99 - year) / 100)
            };
            number(out, c, 2)
        }
        Field::Julian => number(out, i64::from(t.date().num_days_from_ce()) + 1_721_425, 0),
        Field::Quarter => number(out, i64::from(t.month0() / 3 + 1), 0),
        Field::RomanMonth { upper } => {
            let r = ROMAN[t.month0() as usize];
            let r = if upper {
                r.to_string()
            } else {
                r.to_lowercase()
            };
            if fill {
                out.push_str(&r);
            } else {
                let _ = write!(out, "{r:<4}");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(template: &str, at: &str) -> String {
        let t = NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f").expect("timestamp");
        let mut out = String::new();
        PgPattern::parse(template)
            .expect("template")
            .format(&t, &mut out);
        out
    }

    #[test]
    fn formats_as_postgres_does() {
        // Each expected value is what PostgreSQL 15 prints for the same to_char call.
        let at = "2026-03-07 08:05:09.012345";
        assert_eq!(fmt("YYYY-MM-DD HH24:MI:SS", at), "2026-03-07 08:05:09");
        assert_eq!(
            fmt("yyyy-mm-dd hh24:mi:ss.ms", at),
            "2026-03-07 08:05:09.012"
        );
        assert_eq!(fmt("HH12:MI AM", at), "08:05 AM");
        assert_eq!(fmt("HH:MI pm", "2026-03-07 20:05:09.0"), "08:05 pm");
        assert_eq!(
            fmt("Day, DD Month YYYY", at),
            "Saturday , 07 March     2026"
        );
        assert_eq!(
            fmt("FMDay, FMDD FMMonth YYYY", at),
            "Saturday, 7 March 2026"
        );
        assert_eq!(fmt("Dy Mon DY MON dy mon", at), "Sat Mar SAT MAR sat mar");
        assert_eq!(fmt("DDDth Q WW IW ID D", at), "066th 1 10 10 6 7");
        assert_eq!(fmt("US FF3 SSSS", at), "012345 012 29109");
        assert_eq!(fmt("\"Week\" IW \"of\" IYYY", at), "Week 10 of 2026");
        assert_eq!(fmt("Y,YYY CC J RM", at), "2,026 21 2461107 III ");
        assert_eq!(fmt("FMDDth FMMMth", "2026-01-02 00:00:00.0"), "2nd 1st");
        // Read off PostgreSQL 15's to_char for 2026-03-07 08:05:09: one prefix per position,
        // dropped when no keyword follows; TM names unpadded; FX and SP print nothing; a
        // backslash outside quotes is itself unless a double quote follows.
        let at = "2026-03-07 08:05:09.0";
        assert_eq!(fmt("FMxyz", at), "x6z");
        assert_eq!(fmt("Fmday", at), "Fmsaturday ");
        assert_eq!(fmt("TMMonth tmmonth TMDD", at), "March march 07");
        assert_eq!(fmt("FMTMDay", at), "TMSaturday ");
        assert_eq!(fmt("MI:SS FX fx", at), "05:09  ");
        assert_eq!(fmt("DDSP DDthSP DDsp", at), "07 07thSP 07sp");
        assert_eq!(fmt("x\\y x\\\"y", at), "x\\6 x\"6");
        assert_eq!(fmt("FMFM", at), "FM");
    }

    #[test]
    fn refuses_time_zones() {
        assert!(PgPattern::parse("YYYY TZ").is_err());
        assert!(PgPattern::parse("HH24 OF").is_err());
    }
}
