//! Postgres session settings (`SET`, `SHOW`, `current_setting`, `set_config`) that clients and
//! drivers read and write, and `version()` as Postgres tools expect it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The Postgres version Weir speaks as (what `server_version` and `version()` report).
pub const PG_VERSION: &str = "15.0";

/// The settings a new session starts with: Postgres' defaults for the ones clients look at.
fn defaults() -> BTreeMap<String, String> {
    [
        ("application_name", ""),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
        ("client_min_messages", "notice"),
        // Weir's: how long a COPY into a stream may wait for data before it is aborted (its
        // rows hold back the stream's readers); milliseconds, or with a unit (`30s`, `5min`).
        ("copy_idle_timeout", "60s"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("idle_in_transaction_session_timeout", "0"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("lc_collate", "C.UTF-8"),
        ("lc_ctype", "C.UTF-8"),
        ("lc_messages", "C.UTF-8"),
        ("lc_monetary", "C.UTF-8"),
        ("lc_numeric", "C.UTF-8"),
        ("lc_time", "C.UTF-8"),
        ("lock_timeout", "0"),
        ("max_identifier_length", "63"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", PG_VERSION),
        ("server_version_num", "150000"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        // Weir's: how many rows a subscriber may fall behind before it is cut off.
        ("subscribe_buffer_rows", "1000000"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A session's settings; clones share them.
#[derive(Debug, Clone)]
pub struct Settings {
    values: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            values: Arc::new(Mutex::new(defaults())),
        }
    }
}

/// Setting names are case-insensitive; `TimeZone` and `timezone` are one setting.
fn key(name: &str) -> String {
    name.trim_matches('"').to_ascii_lowercase()
}

impl Settings {
    /// A setting's value, if it exists.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(name))
            .cloned()
    }

    /// Sets a setting (any name: clients set their own, like `application_name`).
    pub fn set(&self, name: &str, value: &str) {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(name), value.to_string());
    }

    /// Puts a setting back to its default (or removes one a client invented).
    pub fn reset(&self, name: &str) {
        let k = key(name);
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        match defaults().remove(&k) {
            Some(v) => {
                values.insert(k, v);
            }
            None => {
                values.remove(&k);
            }
        }
    }

    /// `copy_idle_timeout` (`None`: no limit), or why it is not a duration.
    pub fn copy_idle_timeout(&self) -> crate::Result<Option<std::time::Duration>> {
        let value = self.get("copy_idle_timeout").unwrap_or_default();
        let v = value.trim().trim_matches('\'').to_ascii_lowercase();
        let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (number, unit) = v.split_at(digits);
        let scale = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1000,
            "min" => 60_000,
            "h" => 3_600_000,
            _ => 0,
        };
        match number.parse::<u64>() {
            Ok(n) if scale > 0 => {
                Ok((n > 0).then(|| std::time::Duration::from_millis(n.saturating_mul(scale))))
            }
            _ => Err(crate::Error::InvalidValue(format!(
                "copy_idle_timeout is a duration (milliseconds, or with ms, s, min or h), not \
                 {value}"
            ))),
        }
    }

    /// The session's `TimeZone`, in which `timestamptz` values are written as text.
    pub fn time_zone(&self) -> Option<crate::pg_text::Zone> {
        self.get("timezone")
            .and_then(|v| crate::pg_text::Zone::named(&v))
    }

    /// Every setting, by name.
    pub fn all(&self) -> Vec<(String, String)> {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `current_setting(name [, missing_ok])` and `set_config(name, value, is_local)`.
#[derive(Debug)]
struct SettingFunction {
    settings: Settings,
    set: bool,
    signature: Signature,
}

impl PartialEq for SettingFunction {
    fn eq(&self, other: &Self) -> bool {
        self.set == other.set && Arc::ptr_eq(&self.settings.values, &other.settings.values)
    }
}

impl Eq for SettingFunction {}

impl std::hash::Hash for SettingFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.set.hash(state);
        Arc::as_ptr(&self.settings.values).hash(state);
    }
}

impl ScalarUDFImpl for SettingFunction {
    fn name(&self) -> &str {
        if self.set {
            "set_config"
        } else {
            "current_setting"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = |i: usize| -> DfResult<StringArray> {
            let a = datafusion::arrow::compute::cast(&arrays[i], &DataType::Utf8)?;
            Ok(a.as_string::<i32>().clone())
        };
        let names = text(0)?;
        let mut out = Vec::with_capacity(n);
        if self.set {
            let values = text(1)?;
            for row in 0..n {
                if names.is_null(row) {
                    out.push(None);
                    continue;
                }
                let value = if values.is_null(row) {
                    ""
                } else {
                    values.value(row)
                };
                self.settings.set(names.value(row), value);
                out.push(Some(value.to_string()));
            }
        } else {
            let missing_ok = match arrays.get(1) {
                Some(a) => {
                    let b = datafusion::arrow::compute::cast(a, &DataType::Boolean)?;
                    b.as_boolean().iter().any(|v| v == Some(true))
                }
                None => false,
            };
            for row in 0..n {
                if names.is_null(row) {
                    out.push(None);
                    continue;
                }
                match self.settings.get(names.value(row)) {
                    Some(v) => out.push(Some(v)),
                    None if missing_ok => out.push(None),
                    None => {
                        return Err(datafusion::error::DataFusionError::Plan(format!(
                            "unrecognized configuration parameter \"{}\"",
                            names.value(row)
                        )));
                    }
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `version()`: a Postgres-shaped version string, which tools parse for the major version.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let v = format!(
            "PostgreSQL {PG_VERSION} (Weir {}) on {}-linux, a continuous SQL engine",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        );
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(vec![
            v;
            args.number_rows
        ]))))
    }
}

/// The functions over `settings` for a session's context, and `version()`.
pub(crate) fn functions(settings: &Settings) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(SettingFunction {
            settings: settings.clone(),
            set: false,
            signature: Signature::variadic_any(Volatility::Volatile),
        }),
        ScalarUDF::from(SettingFunction {
            settings: settings.clone(),
            set: true,
            signature: Signature::variadic_any(Volatility::Volatile),
        }),
        ScalarUDF::from(Version {
            signature: Signature::nullary(Volatility::Stable),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Settings;

    #[test]
    fn copy_idle_timeout_reads_milliseconds_and_units() {
        let s = Settings::default();
        assert_eq!(
            s.copy_idle_timeout().ok(),
            Some(Some(Duration::from_secs(60)))
        );
        for (value, expected) in [
            ("1500", Some(Duration::from_millis(1500))),
            ("'250ms'", Some(Duration::from_millis(250))),
            ("30s", Some(Duration::from_secs(30))),
            ("5 min", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("0", None),
        ] {
            s.set("copy_idle_timeout", value);
            assert_eq!(s.copy_idle_timeout().ok(), Some(expected), "{value}");
        }
        for bad in ["soon", "", "5 days", "-1s"] {
            s.set("Copy_Idle_Timeout", bad);
            assert!(s.copy_idle_timeout().is_err(), "{bad}");
        }
    }
}
