//! Encoding and validation of one log record: a framed, checksummed, compressed Arrow batch.

use std::io::Cursor;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::{StreamDecoder, StreamReader};
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::arrow::record_batch::RecordBatch;

use crate::{Error, Result};

/// Bytes before the payload: payload length (u32 LE) and CRC32C of the payload (u32 LE).
pub(crate) const FRAME_HEADER: usize = 8;
/// Bytes of a version 1 payload header: magic, version, base offset, row count, append time.
const PAYLOAD_HEADER_V1: usize = 4 + 8 + 4 + 8;
/// Version 2 adds the producer of the frame: id, epoch and first sequence number.
const PAYLOAD_HEADER_V2: usize = PAYLOAD_HEADER_V1 + 8 + 4 + 4;
/// Version 3 adds the position in an external source that follows the frame's rows.
const PAYLOAD_HEADER_V3: usize = PAYLOAD_HEADER_V2 + 8;
/// Version 4 adds the log transaction of the frame and the frame's kind (rows or a marker).
const PAYLOAD_HEADER: usize = PAYLOAD_HEADER_V3 + 8 + 1;
/// "WB" (Weir batch), format version 1 (still read).
const MAGIC_V1: [u8; 4] = [b'W', b'B', 0, 1];
/// "WB", format version 2 (still read).
const MAGIC_V2: [u8; 4] = [b'W', b'B', 0, 2];
/// "WB", format version 3 (still read).
const MAGIC_V3: [u8; 4] = [b'W', b'B', 0, 3];
/// "WB", format version 4 (written).
const MAGIC: [u8; 4] = [b'W', b'B', 0, 4];
/// Refuse frames claiming more than this, so a corrupt length cannot make recovery allocate wildly.
pub(crate) const MAX_FRAME: usize = 256 * 1024 * 1024;

/// What the header of a valid frame says; the batch itself is decoded only on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    /// Offset of the first row in the frame.
    pub base_offset: u64,
    /// Number of rows in the frame.
    pub rows: u32,
    /// Wall-clock time of the append, in milliseconds since the epoch (used by time retention).
    pub append_ms: i64,
    /// Total length of the frame on disk, headers included.
    pub len: u32,
    /// The idempotent producer that appended it, if one did.
    pub producer: Option<ProducerSeq>,
    /// For rows copied from an external source (a Kafka partition), the source offset to read
    /// next: stored in the same frame as the rows, so the two are durable together.
    pub source_next: Option<i64>,
    /// The log transaction the frame belongs to, and whether it holds rows or ends it.
    pub txn: Option<(u64, FrameKind)>,
}

/// What a frame of a log transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Rows, visible once the transaction's commit marker is durable.
    Rows,
    /// The transaction committed: its rows are visible.
    Commit,
    /// The transaction aborted: its rows are skipped by every reader.
    Abort,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            Self::Rows => 0,
            Self::Commit => 1,
            Self::Abort => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Rows),
            1 => Some(Self::Commit),
            2 => Some(Self::Abort),
            _ => None,
        }
    }
}

/// Who wrote a frame, and why: everything of the header but the offset and the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Wall-clock time of the append, in milliseconds since the epoch.
    pub append_ms: i64,
    /// The idempotent producer that appended it, if one did.
    pub producer: Option<ProducerSeq>,
    /// The external source position that follows the rows, for rows copied from a source.
    pub source_next: Option<i64>,
    /// The log transaction, for its rows and its markers.
    pub txn: Option<(u64, FrameKind)>,
}

/// An idempotent producer's batch: who sent it and the sequence number of its first row, so
/// that a retry of a batch already stored is recognised (as Kafka does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// The producer's id.
    pub id: i64,
    /// The producer's epoch.
    pub epoch: i16,
    /// Sequence number of the batch's first row; the rows take the following ones.
    pub base_sequence: i32,
}

/// Encodes `batch` as a frame, still to be [`seal`]ed with its base offset.
///
/// The expensive part (IPC encoding and compression) happens here, outside any lock; sealing is cheap.
pub(crate) fn encode(batch: &RecordBatch, stamp: Stamp) -> Result<Vec<u8>> {
    let rows = u32::try_from(batch.num_rows())
        .map_err(|_| Error::InvalidArgument("a batch may hold at most 2^32-1 rows".into()))?;
    let mut out = header(rows, stamp);
    // Version 3 compresses the whole IPC stream as one LZ4 block, rather than each buffer as
    // an LZ4 frame (versions 1 and 2): a read is then one decompression into one allocation,
    // from which the batch is decoded without copying.
    let mut ipc = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    {
        let mut writer = StreamWriter::try_new_with_options(
            &mut ipc,
            batch.schema_ref(),
            IpcWriteOptions::default(),
        )?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let compressed = lz4::block::compress(&ipc, None, true)
        .map_err(|e| Error::Internal(format!("LZ4 refused a frame of {} bytes: {e}", ipc.len())))?;
    out.extend_from_slice(&compressed);
    let payload_len = out.len() - FRAME_HEADER;
    if payload_len > MAX_FRAME {
        return Err(Error::InvalidArgument(format!(
            "a batch encodes to {payload_len} bytes; the limit per append is {MAX_FRAME}"
        )));
    }
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    seal(&mut out, 0);
    Ok(out)
}

/// Encodes the marker that ends log transaction `txn`: a frame of no rows and no batch.
pub(crate) fn encode_marker(txn: u64, kind: FrameKind, append_ms: i64) -> Vec<u8> {
    let stamp = Stamp {
        append_ms,
        producer: None,
        source_next: None,
        txn: Some((txn, kind)),
    };
    let mut out = header(0, stamp);
    let payload_len = out.len() - FRAME_HEADER;
    out[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    seal(&mut out, 0);
    out
}

/// The frame header and payload header of a frame of `rows` rows, base offset still 0.
fn header(rows: u32, stamp: Stamp) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER];
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
    out.extend_from_slice(&stamp.append_ms.to_le_bytes());
    let p = stamp.producer.unwrap_or(ProducerSeq {
        id: -1,
        epoch: -1,
        base_sequence: -1,
    });
    out.extend_from_slice(&p.id.to_le_bytes());
    out.extend_from_slice(&i32::from(p.epoch).to_le_bytes());
    out.extend_from_slice(&p.base_sequence.to_le_bytes());
    out.extend_from_slice(&stamp.source_next.unwrap_or(-1).to_le_bytes());
    // Transaction ids stay below 2^63, so -1 marks a frame outside any transaction.
    let (txn, kind) = stamp
        .txn
        .map_or((-1i64, 0u8), |(t, k)| (t as i64, k.code()));
    out.extend_from_slice(&txn.to_le_bytes());
    out.push(kind);
    out
}

/// Sets the base offset of an [`encode`]d frame and its checksum.
pub(crate) fn seal(frame: &mut [u8], base_offset: u64) {
    let at = FRAME_HEADER + MAGIC.len();
    frame[at..at + 8].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc32c::crc32c(&frame[FRAME_HEADER..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Validates the frame at the start of `bytes`; `None` when it is torn, corrupt or absent.
pub(crate) fn check(bytes: &[u8]) -> Option<FrameMeta> {
    if bytes.len() < FRAME_HEADER + PAYLOAD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    if !(PAYLOAD_HEADER_V1..=MAX_FRAME).contains(&len) || bytes.len() < FRAME_HEADER + len {
        return None;
    }
    let payload = &bytes[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(payload) != crc || payload_header_len(payload)? > len {
        return None;
    }
    let version = payload[3];
    let producer = if version >= 2 {
        let id = i64::from_le_bytes(payload[24..32].try_into().ok()?);
        let epoch = i32::from_le_bytes(payload[32..36].try_into().ok()?);
        let base_sequence = i32::from_le_bytes(payload[36..40].try_into().ok()?);
        (id >= 0).then_some(ProducerSeq {
            id,
            epoch: i16::try_from(epoch).ok()?,
            base_sequence,
        })
    } else {
        None
    };
    let source_next = if version >= 3 {
        let next = i64::from_le_bytes(payload[40..48].try_into().ok()?);
        (next >= 0).then_some(next)
    } else {
        None
    };
    let txn = if version >= 4 {
        let txn = i64::from_le_bytes(payload[48..56].try_into().ok()?);
        let kind = FrameKind::from_code(payload[56])?;
        (txn >= 0).then_some((txn as u64, kind))
    } else {
        None
    };
    let rows = u32::from_le_bytes(payload[12..16].try_into().ok()?);
    // A marker holds no rows; a frame of rows holds a batch.
    let marker = matches!(txn, Some((_, FrameKind::Commit | FrameKind::Abort)));
    if marker && (rows != 0 || len != PAYLOAD_HEADER) {
        return None;
    }
    Some(FrameMeta {
        base_offset: u64::from_le_bytes(payload[4..12].try_into().ok()?),
        rows,
        append_ms: i64::from_le_bytes(payload[16..24].try_into().ok()?),
        len: (FRAME_HEADER + len) as u32,
        producer,
        source_next,
        txn,
    })
}

/// The payload header's length for the payload's format version, `None` for an unknown one.
fn payload_header_len(payload: &[u8]) -> Option<usize> {
    match payload.get(0..4)? {
        m if m == MAGIC => Some(PAYLOAD_HEADER),
        m if m == MAGIC_V3 => Some(PAYLOAD_HEADER_V3),
        m if m == MAGIC_V2 => Some(PAYLOAD_HEADER_V2),
        m if m == MAGIC_V1 => Some(PAYLOAD_HEADER_V1),
        _ => None,
    }
}

/// Decodes the batch of a frame that [`check`] accepted.
pub(crate) fn decode(frame: &[u8]) -> Result<RecordBatch> {
    let payload = &frame[FRAME_HEADER..];
    let header = payload_header_len(payload)
        .ok_or_else(|| Error::Corrupt("a frame of an unknown format version".into()))?;
    let body = &payload[header..];
    if payload[0..4] != MAGIC && payload[0..4] != MAGIC_V3 {
        // Versions 1 and 2: an IPC stream with LZ4-frame compressed buffers.
        let mut reader = StreamReader::try_new(Cursor::new(body), None)?;
        return match reader.next() {
            Some(batch) => Ok(batch?),
            None => Err(Error::Corrupt("a frame holds no record batch".into())),
        };
    }
    let ipc = decompress(body)?;
    let mut buffer = Buffer::from_vec(ipc);
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !buffer.is_empty() && batch.is_none() {
        batch = decoder.decode(&mut buffer)?;
    }
    batch.ok_or_else(|| Error::Corrupt("a frame holds no record batch".into()))
}

/// Decompresses an LZ4 block behind its 4-byte little-endian size, as `lz4::block::compress`
/// (and lz4_flex's `compress_prepend_size`, which wrote the first version 3 frames) make it.
///
/// liblz4 rather than lz4_flex, which copies the short-offset matches that runs of zero bytes
/// in integer columns compress to a byte at a time: reading frames is what a query catching up
/// from the log spends its time on, and Nexmark q0 spent about 1.4 times as long in it.
fn decompress(body: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |why: &str| Error::Corrupt(format!("a frame does not decompress: {why}"));
    let (size, block) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("no size"))?;
    let size = u32::from_le_bytes(*size) as usize;
    // LZ4 expands by at most 255 times: a larger size is damage, not a reason to allocate.
    if size > block.len().saturating_mul(255) + 16 || size > i32::MAX as usize {
        return Err(corrupt("its size is impossible"));
    }
    let ipc =
        lz4::block::decompress(block, Some(size as i32)).map_err(|e| corrupt(&e.to_string()))?;
    if ipc.len() != size {
        return Err(corrupt("it is shorter than its size says"));
    }
    Ok(ipc)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .expect("valid batch")
    }

    #[test]
    fn round_trip() {
        let b = batch();
        let producer = ProducerSeq {
            id: 9,
            epoch: 2,
            base_sequence: 40,
        };
        let stamp = Stamp {
            append_ms: 7,
            producer: Some(producer),
            source_next: Some(1234),
            txn: Some((77, FrameKind::Rows)),
        };
        let mut frame = encode(&b, stamp).expect("encode");
        seal(&mut frame, 42);
        let meta = check(&frame).expect("valid frame");
        assert_eq!(meta.txn, Some((77, FrameKind::Rows)));
        assert_eq!(meta.producer, Some(producer));
        assert_eq!(meta.source_next, Some(1234));
        assert_eq!(meta.base_offset, 42);
        assert_eq!(meta.rows, 3);
        assert_eq!(meta.append_ms, 7);
        assert_eq!(meta.len as usize, frame.len());
        assert_eq!(decode(&frame).expect("decode"), b);
    }

    #[test]
    fn markers_hold_no_rows() {
        for kind in [FrameKind::Commit, FrameKind::Abort] {
            let mut marker = encode_marker(5, kind, 9);
            seal(&mut marker, 100);
            let meta = check(&marker).expect("valid marker");
            assert_eq!((meta.rows, meta.base_offset), (0, 100));
            assert_eq!(meta.txn, Some((5, kind)));
            assert_eq!(meta.len as usize, marker.len());
            for cut in 0..marker.len() {
                assert!(check(&marker[..cut]).is_none(), "truncated at {cut}");
            }
        }
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let stamp = Stamp {
            append_ms: 0,
            producer: None,
            source_next: Some(3),
            txn: None,
        };
        let frame = encode(&batch(), stamp).expect("encode");
        for cut in 0..frame.len() {
            assert!(check(&frame[..cut]).is_none(), "truncated at {cut}");
        }
        for byte in 0..frame.len() {
            let mut bad = frame.clone();
            bad[byte] ^= 0x10;
            assert!(check(&bad).is_none(), "bit flipped in byte {byte}");
        }
    }

    #[test]
    fn blocks_from_lz4_flex_decompress_and_impossible_sizes_are_refused() {
        // The first version 3 frames were compressed by lz4_flex.
        let ipc: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let block = lz4_flex::block::compress_prepend_size(&ipc);
        assert_eq!(decompress(&block).expect("decompress"), ipc);
        let mut huge = block.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompress(&huge), Err(Error::Corrupt(_))));
        let mut short = block.clone();
        short[..4].copy_from_slice(&(ipc.len() as u32 - 1).to_le_bytes());
        assert!(matches!(decompress(&short), Err(Error::Corrupt(_))));
        assert!(matches!(decompress(&block[..3]), Err(Error::Corrupt(_))));
        assert!(matches!(
            decompress(&block[..block.len() / 2]),
            Err(Error::Corrupt(_))
        ));
    }

    /// Segments written by earlier versions (without producers, or without source positions)
    /// still read.
    #[test]
    fn version_1_and_2_frames_still_read() {
        let b = batch();
        let producer = ProducerSeq {
            id: 3,
            epoch: 1,
            base_sequence: 8,
        };
        let stamp = Stamp {
            append_ms: 7,
            producer: Some(producer),
            source_next: Some(99),
            txn: None,
        };
        let v3 = encode(&b, stamp).expect("encode");
        // Older versions held an IPC stream with LZ4-frame compressed buffers.
        let mut body = Vec::new();
        {
            let options = IpcWriteOptions::default()
                .try_with_compression(Some(datafusion::arrow::ipc::CompressionType::LZ4_FRAME))
                .expect("lz4 frame");
            let mut w = StreamWriter::try_new_with_options(&mut body, b.schema_ref(), options)
                .expect("writer");
            w.write(&b).expect("write");
            w.finish().expect("finish");
        }
        let body = body.as_slice();
        // An older frame: the same header cut to its version's length, re-checksummed.
        let older = |magic: [u8; 4], header: usize| {
            let mut f = v3[..FRAME_HEADER].to_vec();
            f.extend_from_slice(&magic);
            f.extend_from_slice(&v3[FRAME_HEADER + 4..FRAME_HEADER + header]);
            f.extend_from_slice(body);
            let len = (f.len() - FRAME_HEADER) as u32;
            f[0..4].copy_from_slice(&len.to_le_bytes());
            seal(&mut f, 5);
            f
        };
        let v1 = older(MAGIC_V1, PAYLOAD_HEADER_V1);
        let meta = check(&v1).expect("valid v1 frame");
        assert_eq!((meta.base_offset, meta.rows, meta.producer), (5, 3, None));
        assert_eq!(meta.source_next, None);
        assert_eq!(decode(&v1).expect("decode"), b);
        let v2 = older(MAGIC_V2, PAYLOAD_HEADER_V2);
        let meta = check(&v2).expect("valid v2 frame");
        assert_eq!((meta.producer, meta.source_next), (Some(producer), None));
        assert_eq!(decode(&v2).expect("decode"), b);
    }
}
