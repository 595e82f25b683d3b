//! [`SegmentEncoder`]: an object of unknown length, pulled from a reader segment by segment.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::codec::MAX_SEGMENT_SIZE;
use crate::{Codec, CodecError, EncodeError, EncodedSegment, MaskKey, SegmentNonce};

/// Reads an object from `reader` and encodes it one segment at a time.
///
/// Memory is bounded by the segment size, not the object: the encoder holds only the
/// segment it is filling, and each [`EncodedSegment`] it returns is the caller's to send and
/// drop. A caller that drops each segment before asking for the next holds about
/// `(k + m) / k` segments at the peak; one that keeps one in flight, about twice that.
///
/// Reed-Solomon coding and hashing run on tokio's blocking pool so that a large upload
/// never stalls the async threads serving other requests.
pub struct SegmentEncoder<R> {
    codec: Codec,
    segment_size: u64,
    reader: R,
    next_index: u64,
    offset: u64,
    finished: bool,
    mask: Option<MaskKey>,
}

impl<R: AsyncRead + Unpin> SegmentEncoder<R> {
    /// An encoder cutting `reader` into segments of `segment_size` bytes (the last one
    /// shorter) and coding each with `codec`.
    pub fn new(codec: Codec, segment_size: u64, reader: R) -> Result<Self, CodecError> {
        if segment_size == 0 || segment_size > MAX_SEGMENT_SIZE {
            return Err(CodecError::InvalidSegmentSize(segment_size));
        }
        Ok(Self {
            codec,
            segment_size,
            reader,
            next_index: 0,
            offset: 0,
            finished: false,
            mask: None,
        })
    }

    /// Masks every segment with `key` and a fresh random nonce before coding it (see
    /// [`Codec::encode_masked_segment`]); each segment's [`EncodedSegment::mask`] names its
    /// nonce.
    pub fn masked(mut self, key: MaskKey) -> Self {
        self.mask = Some(key);
        self
    }

    /// The next encoded segment, or `None` once the reader is exhausted.
    ///
    /// An empty object yields no segment at all. After an error the stream is unusable:
    /// the bytes of the failed segment are gone.
    pub async fn next_segment(&mut self) -> Result<Option<EncodedSegment>, EncodeError> {
        if self.finished {
            return Ok(None);
        }
        // Drawn before any byte is read, so a failure loses nothing of the object.
        let mask = match &self.mask {
            Some(key) => {
                let nonce =
                    SegmentNonce::random().map_err(|err| EncodeError::Random(err.to_string()))?;
                Some((key.clone(), nonce))
            }
            None => None,
        };
        // Room for the padding and the read loop's final zero-byte read: the vector never
        // reallocates (and briefly doubles) a full segment.
        let mut buf = self.codec.segment_buffer(self.segment_size);
        let read = (&mut self.reader)
            .take(self.segment_size)
            .read_to_end(&mut buf)
            .await;
        if let Err(err) = read {
            self.finished = true;
            return Err(err.into());
        }
        if (buf.len() as u64) < self.segment_size {
            self.finished = true;
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let (codec, index, offset) = (self.codec, self.next_index, self.offset);
        let len = buf.len() as u64;
        let segment = tokio::task::spawn_blocking(move || match mask {
            Some((key, nonce)) => codec.encode_masked_segment(index, offset, buf, &key, nonce),
            None => codec.encode_segment(index, offset, buf),
        })
        .await
        .map_err(|err| EncodeError::Task(err.to_string()))?;
        self.next_index += 1;
        self.offset += len;
        Ok(Some(segment))
    }

    /// Object bytes consumed so far (the sum of the lengths of the segments returned).
    pub fn bytes_encoded(&self) -> u64 {
        self.offset
    }

    /// The reader back, for example to check what followed the object.
    pub fn into_inner(self) -> R {
        self.reader
    }
}
