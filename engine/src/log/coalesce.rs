//! Column buffers that gather the rows of many small appends into one batch per group.
//!
//! Concatenating thousands of one-row batches at write time costs more per row than writing
//! them (each array is type-checked, measured and freed on its own), and it all lands on the one
//! thread that writes the group. Here each appender copies its rows into the open group's
//! buffers on its own thread instead: a few bytes per column for the common types, which leaves
//! the writer one array per column to build.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, BooleanArray, BooleanBufferBuilder, GenericByteArray,
    NullBufferBuilder, RecordBatch, RecordBatchOptions, downcast_primitive_array, make_array,
};
use datafusion::arrow::buffer::{Buffer, MutableBuffer};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{
    BinaryType, ByteArrayType, DataType, LargeBinaryType, LargeUtf8Type, SchemaRef, Utf8Type,
};

use crate::{Error, Result};

/// The rows gathered for one group.
#[derive(Debug)]
pub(super) struct RowBuffer {
    columns: Vec<Column>,
    rows: usize,
}

impl RowBuffer {
    /// An empty buffer for rows of `schema`.
    pub(super) fn new(schema: &SchemaRef) -> Self {
        Self {
            columns: schema
                .fields()
                .iter()
                .map(|f| Column::new(f.data_type()))
                .collect(),
            rows: 0,
        }
    }

    /// Rows gathered so far.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Appends the rows of `batch`, whose columns have exactly the types the buffer was made
    /// for, and returns about how many bytes their values take; on an error nothing of
    /// `batch` stays.
    pub(super) fn push(&mut self, batch: &RecordBatch) -> Result<usize> {
        if batch.num_columns() != self.columns.len() {
            return Err(Error::Internal(format!(
                "{} columns appended to a buffer of {}; this is a bug",
                batch.num_columns(),
                self.columns.len()
            )));
        }
        let mut bytes = 0;
        for (column, array) in self.columns.iter_mut().zip(batch.columns()) {
            match column.push(array) {
                Ok(b) => bytes += b,
                Err(e) => {
                    self.truncate(self.rows);
                    return Err(e);
                }
            }
        }
        self.rows += batch.num_rows();
        Ok(bytes)
    }

    /// Takes back every push after the first `rows` rows (a count some push ended at).
    pub(super) fn truncate(&mut self, rows: usize) {
        for column in &mut self.columns {
            column.truncate(rows);
        }
        self.rows = self.rows.min(rows);
    }

    /// The gathered rows as one batch of `schema`.
    pub(super) fn finish(self, schema: &SchemaRef) -> Result<RecordBatch> {
        let rows = self.rows;
        let columns = self
            .columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| c.finish(f.data_type(), rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// One column's values and validity.
#[derive(Debug)]
struct Column {
    values: Values,
    nulls: NullBufferBuilder,
}

#[derive(Debug)]
enum Values {
    /// Any primitive type: integers, floats, decimals, dates, times, timestamps, durations,
    /// intervals; the values as little-endian bytes of `width` each, in a buffer aligned for
    /// any of them.
    Fixed {
        width: usize,
        values: MutableBuffer,
    },
    Bool(BooleanBufferBuilder),
    /// Utf8 and Binary.
    Bytes(ByteBuffer<i32>),
    /// LargeUtf8 and LargeBinary.
    LargeBytes(ByteBuffer<i64>),
    /// Every other type (lists, structs, views, dictionaries...), concatenated at the end.
    Arrays(Vec<ArrayRef>),
}

impl Column {
    fn new(data_type: &DataType) -> Self {
        let values = match data_type {
            DataType::Boolean => Values::Bool(BooleanBufferBuilder::new(0)),
            DataType::Utf8 | DataType::Binary => Values::Bytes(ByteBuffer::default()),
            DataType::LargeUtf8 | DataType::LargeBinary => {
                Values::LargeBytes(ByteBuffer::default())
            }
            t => match t.primitive_width() {
                Some(width) => Values::Fixed {
                    width,
                    values: MutableBuffer::new(0),
                },
                None => Values::Arrays(Vec::new()),
            },
        };
        Self {
            values,
            nulls: NullBufferBuilder::new(0),
        }
    }

    /// Cuts the column back to its first `rows` rows, which a push ended at.
    fn truncate(&mut self, rows: usize) {
        match &mut self.values {
            Values::Fixed { width, values } => values.truncate(rows * *width),
            Values::Bool(b) => b.truncate(rows),
            Values::Bytes(b) => b.truncate(rows),
            Values::LargeBytes(b) => b.truncate(rows),
            Values::Arrays(arrays) => {
                let mut len: usize = arrays.iter().map(|a| a.len()).sum();
                while len > rows {
                    match arrays.pop() {
                        Some(a) => len -= a.len(),
                        None => break,
                    }
                }
            }
        }
        self.nulls.truncate(rows);
    }

    /// Appends `array`'s values; returns about how many bytes they take.
    fn push(&mut self, column: &ArrayRef) -> Result<usize> {
        let array = column.as_ref();
        let bytes = match &mut self.values {
            Values::Fixed { values, .. } => {
                let slice = fixed_bytes(array)?;
                values.extend_from_slice(slice);
                slice.len()
            }
            Values::Bool(b) => {
                let values = array
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| mismatch(array))?
                    .values();
                b.append_buffer(values);
                values.len().div_ceil(8)
            }
            Values::Bytes(b) => match array.data_type() {
                DataType::Utf8 => b.push(byte_array::<Utf8Type>(array)?),
                _ => b.push(byte_array::<BinaryType>(array)?),
            }?,
            Values::LargeBytes(b) => match array.data_type() {
                DataType::LargeUtf8 => b.push(byte_array::<LargeUtf8Type>(array)?),
                _ => b.push(byte_array::<LargeBinaryType>(array)?),
            }?,
            Values::Arrays(a) => {
                a.push(Arc::clone(column));
                array.get_buffer_memory_size()
            }
        };
        match array.nulls() {
            Some(n) => self.nulls.append_buffer(n),
            None => self.nulls.append_n_non_nulls(array.len()),
        }
        Ok(bytes)
    }

    fn finish(self, data_type: &DataType, rows: usize) -> Result<ArrayRef> {
        let Self { values, mut nulls } = self;
        let nulls = nulls.finish();
        let data = match values {
            Values::Arrays(arrays) => {
                if arrays.is_empty() {
                    return Ok(datafusion::arrow::array::new_empty_array(data_type));
                }
                let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                return Ok(concat(&refs)?);
            }
            Values::Bool(mut b) => {
                return Ok(Arc::new(BooleanArray::new(b.finish(), nulls)));
            }
            Values::Fixed { values, .. } => ArrayData::builder(data_type.clone())
                .len(rows)
                .nulls(nulls)
                .add_buffer(values.into()),
            Values::Bytes(b) => ArrayData::builder(data_type.clone())
                .len(rows)
                .nulls(nulls)
                .add_buffer(Buffer::from_vec(b.offsets))
                .add_buffer(Buffer::from_vec(b.data)),
            Values::LargeBytes(b) => ArrayData::builder(data_type.clone())
                .len(rows)
                .nulls(nulls)
                .add_buffer(Buffer::from_vec(b.offsets))
                .add_buffer(Buffer::from_vec(b.data)),
        };
        // Validation checks the offsets and, for strings, UTF-8 once per group: the rows came
        // from valid arrays, so a failure here is a bug in the gathering.
        Ok(make_array(data.build()?))
    }
}

/// The values of a primitive array as bytes.
fn fixed_bytes(array: &dyn Array) -> Result<&[u8]> {
    downcast_primitive_array!(
        array => Ok(array.values().inner().as_slice()),
        _ => Err(mismatch(array))
    )
}

fn byte_array<T: ByteArrayType>(array: &dyn Array) -> Result<&GenericByteArray<T>> {
    array
        .as_any()
        .downcast_ref::<GenericByteArray<T>>()
        .ok_or_else(|| mismatch(array))
}

fn mismatch(array: &dyn Array) -> Error {
    Error::Internal(format!(
        "a column of type {} reached the wrong buffer; this is a bug",
        array.data_type()
    ))
}

/// Offsets and data of variable-length values.
#[derive(Debug)]
struct ByteBuffer<O> {
    offsets: Vec<O>,
    data: Vec<u8>,
}

impl<O: Default> Default for ByteBuffer<O> {
    fn default() -> Self {
        Self {
            offsets: vec![O::default()],
            data: Vec::new(),
        }
    }
}

impl<O> ByteBuffer<O>
where
    O: datafusion::arrow::array::OffsetSizeTrait,
{
    fn push<T: ByteArrayType<Offset = O>>(&mut self, array: &GenericByteArray<T>) -> Result<usize> {
        let offsets = array.value_offsets();
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
            return Ok(0);
        };
        let (start, end) = (first.as_usize(), last.as_usize());
        let too_big = || {
            Error::LimitExceeded(format!(
                "{} bytes of values do not fit one {} column",
                self.data.len() + (end - start),
                T::DATA_TYPE
            ))
        };
        O::from_usize(self.data.len() + (end - start)).ok_or_else(too_big)?;
        let base = O::from_usize(self.data.len()).ok_or_else(too_big)?;
        self.data
            .extend_from_slice(&array.values().as_slice()[start..end]);
        self.offsets
            .extend(offsets[1..].iter().map(|&o| base + (o - first)));
        Ok(end - start)
    }

    /// Cuts back to the first `rows` values.
    fn truncate(&mut self, rows: usize) {
        self.offsets.truncate(rows + 1);
        if let Some(end) = self.offsets.last() {
            self.data.truncate(end.as_usize());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Decimal128Array, Int32Array, LargeStringArray, ListArray,
        RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};

    use super::RowBuffer;

    /// Sliced, nullable batches of every kind of column come out as their concatenation.
    #[test]
    fn gathered_rows_equal_the_concatenation() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+01:00".into())),
                false,
            ),
            Field::new("l", DataType::LargeUtf8, true),
            Field::new("d", DataType::Decimal128(12, 2), true),
            Field::new("bin", DataType::Binary, true),
            Field::new(
                "list",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
        ]));
        let batch = |start: i32, n: i32| {
            let ids: Vec<i32> = (start..start + n).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int32Array::from_iter(
                        ids.iter().map(|&i| (i % 3 != 0).then_some(i)),
                    )),
                    Arc::new(StringArray::from_iter(
                        ids.iter()
                            .map(|&i| (i % 4 != 1).then(|| "é".repeat(i as usize % 5))),
                    )),
                    Arc::new(BooleanArray::from_iter(
                        ids.iter().map(|&i| (i % 5 != 2).then_some(i % 2 == 0)),
                    )),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            ids.iter().map(|&i| i64::from(i) * 1000).collect::<Vec<_>>(),
                        )
                        .with_timezone("+01:00"),
                    ),
                    Arc::new(LargeStringArray::from_iter(
                        ids.iter()
                            .map(|&i| (i % 2 == 0).then(|| format!("row {i}"))),
                    )),
                    Arc::new(
                        Decimal128Array::from_iter(
                            ids.iter()
                                .map(|&i| (i % 6 != 5).then_some(i128::from(i) * 101)),
                        )
                        .with_precision_and_scale(12, 2)
                        .expect("decimal type"),
                    ),
                    Arc::new(BinaryArray::from_iter(
                        ids.iter()
                            .map(|&i| (i % 3 != 1).then(|| vec![i as u8; i as usize % 4])),
                    )),
                    Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                        ids.iter()
                            .map(|&i| (i % 3 != 2).then(|| vec![Some(i), None])),
                    )),
                ],
            )
            .expect("valid batch")
        };
        let pieces: Vec<RecordBatch> = (0..20)
            .map(|k| {
                let whole = batch(k * 10, 9);
                // Slices start mid-buffer, so offsets and validity bits are not at zero.
                whole.slice((k % 4) as usize, 1 + (k % 5) as usize)
            })
            .collect();
        let mut buffer = RowBuffer::new(&schema);
        for p in &pieces {
            buffer.push(p).expect("push");
        }
        assert_eq!(
            buffer.rows(),
            pieces.iter().map(|p| p.num_rows()).sum::<usize>()
        );
        let got = buffer.finish(&schema).expect("finish");
        let want = concat_batches(&schema, &pieces).expect("concat");
        assert_eq!(got, want);
    }

    /// A schema without columns still counts its rows; an empty buffer finishes empty.
    #[test]
    fn empty_buffers_and_schemas() {
        let schema = Arc::new(Schema::new(vec![Field::new("i", DataType::Int32, true)]));
        let got = RowBuffer::new(&schema).finish(&schema).expect("finish");
        assert_eq!(got.num_rows(), 0);
        let none = Arc::new(Schema::empty());
        let mut buffer = RowBuffer::new(&none);
        let rows = RecordBatch::try_new_with_options(
            Arc::clone(&none),
            vec![],
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(3)),
        )
        .expect("batch");
        buffer.push(&rows).expect("push");
        assert_eq!(buffer.finish(&none).expect("finish").num_rows(), 3);
    }
}
