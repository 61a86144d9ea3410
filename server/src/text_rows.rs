//! Query rows in PostgreSQL's own text form (`weir_sql::pg_text`), for clients that read
//! results as text (psql, and drivers in text mode), so that values print as PostgreSQL prints
//! them: `2026-01-01 00:00:00`, `1e+10` as `10000000000`, `t` / `f`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;
use weir_sql::datafusion::arrow::record_batch::RecordBatch;
use weir_sql::pg_text::{PgText, Zone};

/// `batch`'s rows as DataRows in text form, when every field goes out as text and every column
/// has a PostgreSQL text form here; `None` otherwise (the caller encodes them another way).
/// `timestamptz` values are written in `zone`, the session's TimeZone.
pub(crate) fn text_rows(
    fields: &[FieldInfo],
    batch: &RecordBatch,
    zone: Option<Zone>,
) -> Option<Vec<DataRow>> {
    if fields.len() != batch.num_columns() || fields.iter().any(|f| f.format() != FieldFormat::Text)
    {
        return None;
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| PgText::try_new(Arc::clone(c)).ok().map(|t| t.in_zone(zone)))
        .collect::<Option<Vec<_>>>()?;
    let width = i16::try_from(columns.len()).ok()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut text = String::new();
    let mut buffer = BytesMut::new();
    for row in 0..batch.num_rows() {
        for column in &columns {
            if column.is_null(row) {
                buffer.put_i32(-1);
            } else {
                text.clear();
                column.write(row, &mut text);
                buffer.put_i32(i32::try_from(text.len()).ok()?);
                buffer.put_slice(text.as_bytes());
            }
        }
        rows.push(DataRow::new(buffer.split(), width));
    }
    Some(rows)
}
