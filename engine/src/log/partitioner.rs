//! Which partition a row goes to: Kafka's murmur2 over the key's canonical bytes, so placement is
//! stable across restarts and versions.

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::datatypes::*;

use crate::{Error, Result};

/// Whether rows can be partitioned by a key column of this type.
pub fn supports_key_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Timestamp(_, _)
    )
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

fn partition_of(bytes: &[u8], partitions: u32) -> u32 {
    (murmur2(bytes) & 0x7fff_ffff) % partitions
}

/// The partition of every row of `key`; null keys go to partition 0.
pub fn partition_indices(key: &dyn Array, partitions: u32) -> Result<UInt32Array> {
    fn primitive<T: ArrowPrimitiveType>(
        key: &dyn Array,
        partitions: u32,
        to_bytes: impl Fn(T::Native) -> [u8; 8],
    ) -> UInt32Array {
        key.as_primitive::<T>()
            .iter()
            .map(|v| Some(v.map_or(0, |v| partition_of(&to_bytes(v), partitions))))
            .collect()
    }
    fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>, partitions: u32) -> UInt32Array {
        values
            .map(|v| Some(v.map_or(0, |v| partition_of(v.as_bytes(), partitions))))
            .collect()
    }
    let out = match key.data_type() {
        DataType::Boolean => key
            .as_boolean()
            .iter()
            .map(|v| Some(v.map_or(0, |v| partition_of(&[u8::from(v)], partitions))))
            .collect(),
        DataType::Int8 => primitive::<Int8Type>(key, partitions, |v| i64::from(v).to_be_bytes()),
        DataType::Int16 => primitive::<Int16Type>(key, partitions, |v| i64::from(v).to_be_bytes()),
        DataType::Int32 => primitive::<Int32Type>(key, partitions, |v| i64::from(v).to_be_bytes()),
        DataType::Int64 => primitive::<Int64Type>(key, partitions, |v| v.to_be_bytes()),
        DataType::UInt8 => primitive::<UInt8Type>(key, partitions, |v| u64::from(v).to_be_bytes()),
        DataType::UInt16 => {
            primitive::<UInt16Type>(key, partitions, |v| u64::from(v).to_be_bytes())
        }
        DataType::UInt32 => {
            primitive::<UInt32Type>(key, partitions, |v| u64::from(v).to_be_bytes())
        }
        DataType::UInt64 => primitive::<UInt64Type>(key, partitions, |v| v.to_be_bytes()),
        DataType::Date32 => {
            primitive::<Date32Type>(key, partitions, |v| i64::from(v).to_be_bytes())
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            primitive::<TimestampSecondType>(key, partitions, |v| v.to_be_bytes())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            primitive::<TimestampMillisecondType>(key, partitions, |v| v.to_be_bytes())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            primitive::<TimestampMicrosecondType>(key, partitions, |v| v.to_be_bytes())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            primitive::<TimestampNanosecondType>(key, partitions, |v| v.to_be_bytes())
        }
        DataType::Utf8 => strings(key.as_string::<i32>().iter(), partitions),
        DataType::LargeUtf8 => strings(key.as_string::<i64>().iter(), partitions),
        DataType::Utf8View => strings(key.as_string_view().iter(), partitions),
        other => {
            return Err(Error::InvalidArgument(format!(
                "a stream cannot be partitioned by a key of type {other}"
            )));
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Reference values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
    }

    #[test]
    fn same_key_same_partition() {
        let keys = Int64Array::from(vec![Some(1), Some(2), Some(1), None]);
        let p = partition_indices(&keys, 4).expect("int keys");
        assert_eq!(p.value(0), p.value(2));
        assert_eq!(p.value(3), 0);
        assert!(p.values().iter().all(|&v| v < 4));
        let s = StringArray::from(vec!["x", "y", "x"]);
        let p = partition_indices(&s, 7).expect("string keys");
        assert_eq!(p.value(0), p.value(2));
    }
}
