//! Batches that hold only their own rows, and what they take in memory. A slice of a larger
//! batch (one group's rows, a few stored join rows) shares its parent's buffers: kept for long,
//! it would hold them all, and Arrow IPC writes some of them whole.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, StructArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;

/// The bytes `batch`'s rows take: its slice of each column's buffers (a batch sliced from a
/// larger one counts its own rows, not its parent's).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// `batch` with columns that hold only its own rows. A slice of a larger batch (one group's
/// rows, a few stored join rows) shares its parent's buffers, and Arrow IPC writes some of them
/// whole: the values of view and dictionary arrays and of nested children. Columns that are
/// already compact are kept as they are.
pub fn compact(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for column in batch.columns() {
        // A dictionary's size counts its whole dictionary as needed: judged by its values.
        let sparse = match column.as_any_dictionary_opt() {
            Some(d) => d.values().len() > 2 * d.len() + 64,
            None => {
                let needed = column.to_data().get_slice_memory_size()?;
                column.get_array_memory_size() > 2 * needed + 4096
            }
        };
        if sparse {
            columns.push(compact_array(column)?);
            changed = true;
        } else {
            columns.push(Arc::clone(column));
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// A list array with rebased offsets and only the values its rows use, themselves compacted.
fn compact_list<O: OffsetSizeTrait>(array: &ArrayRef, field: &FieldRef) -> Result<ArrayRef> {
    let all = UInt32Array::from_iter_values(0..array.len() as u32);
    let copied = take(array, &all, None)?;
    let list = copied.as_list::<O>();
    Ok(Arc::new(GenericListArray::<O>::try_new(
        Arc::clone(field),
        list.offsets().clone(),
        compact_array(list.values())?,
        list.nulls().cloned(),
    )?))
}

/// A copy of `array` that holds only its own rows, child arrays included.
fn compact_array(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(match array.data_type() {
        DataType::Utf8View => Arc::new(array.as_string_view().gc()),
        DataType::BinaryView => Arc::new(array.as_binary_view().gc()),
        DataType::Dictionary(_, values) => {
            // Through the values' type and back: the dictionary keeps only the values used.
            let plain = cast(array, values)?;
            cast(&plain, array.data_type())?
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let children = s
                .columns()
                .iter()
                .map(compact_array)
                .collect::<Result<_>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            )?)
        }
        DataType::List(field) => compact_list::<i32>(array, field)?,
        DataType::LargeList(field) => compact_list::<i64>(array, field)?,
        _ => take(
            array,
            &UInt32Array::from_iter_values(0..array.len() as u32),
            None,
        )?,
    })
}
