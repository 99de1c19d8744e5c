//! The one reader for the fixed-size little-endian records that the BPF
//! programs write (iterator output, map keys and values, ring buffer
//! entries), and the one error type for records that do not fit.
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordError {
    /// A stream of records whose length is not a multiple of the record size.
    #[error("{what}: {len} bytes are not a whole number of {rec}-byte records: the BPF object and the exporter binary disagree on the record layout (rebuild both from one tree)")]
    Truncated {
        what: &'static str,
        len: usize,
        rec: usize,
    },
    /// One record of the wrong size.
    #[error("{what}: a {len}-byte record where {want} bytes were expected: the BPF object and the exporter binary disagree on the record layout (rebuild both from one tree)")]
    Length {
        what: &'static str,
        len: usize,
        want: usize,
    },
    /// A field whose value the exporter cannot use.
    #[error("{what}: value {value} out of range")]
    Range { what: &'static str, value: u64 },
}

/// One record of exactly the size its layout says. Field reads index inside
/// that size, so an offset past the end is a bug in the layout constants
/// (and panics in the unit tests that decode every record type).
#[derive(Clone, Copy)]
pub struct Rec<'a>(&'a [u8]);

impl<'a> Rec<'a> {
    /// `b` as one record of `want` bytes.
    pub fn exact(what: &'static str, b: &'a [u8], want: usize) -> Result<Rec<'a>, RecordError> {
        if b.len() != want {
            return Err(RecordError::Length {
                what,
                len: b.len(),
                want,
            });
        }
        Ok(Rec(b))
    }

    pub fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes(self.0[off..off + 2].try_into().expect("2 bytes"))
    }
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
    pub fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.0[off..off + 8].try_into().expect("8 bytes"))
    }
    pub fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.0[off..off + 8].try_into().expect("8 bytes"))
    }
    /// `len` bytes at `off`.
    pub fn bytes(&self, off: usize, len: usize) -> &'a [u8] {
        &self.0[off..off + len]
    }
    /// A fixed-size char array: its bytes up to the first NUL.
    pub fn cstr(&self, off: usize, len: usize) -> &'a [u8] {
        cstr(&self.0[off..off + len])
    }
}

/// Split a stream of `rec`-byte records.
pub fn stream<'a>(
    what: &'static str,
    buf: &'a [u8],
    rec: usize,
) -> Result<impl Iterator<Item = Rec<'a>>, RecordError> {
    if buf.len() % rec != 0 {
        return Err(RecordError::Truncated {
            what,
            len: buf.len(),
            rec,
        });
    }
    Ok(buf.chunks_exact(rec).map(Rec))
}

/// Bytes up to the first NUL.
pub fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Sum of a per-CPU u64 value (wrapping, as the kernel counters do).
pub fn sum_percpu(vals: &[Vec<u8>]) -> u64 {
    vals.iter()
        .filter(|v| v.len() >= 8)
        .map(|v| u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
        .fold(0u64, |a, b| a.wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rejects_other_sizes_naming_the_record() {
        let e = Rec::exact("create_rec", &[0; 3], 4).err().unwrap();
        assert_eq!(
            e,
            RecordError::Length {
                what: "create_rec",
                len: 3,
                want: 4
            }
        );
        assert!(e.to_string().contains("create_rec: a 3-byte record"));
    }

    #[test]
    fn fields_are_little_endian() {
        let b = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'a', 0, b'b'];
        let r = Rec::exact("t", &b, b.len()).unwrap();
        assert_eq!(r.u16(0), 1);
        assert_eq!(r.u32(2), 2);
        assert_eq!(r.u64(6), 3);
        assert_eq!(r.cstr(14, 3), b"a");
    }

    #[test]
    fn stream_needs_whole_records() {
        assert_eq!(stream("m", &[0; 8], 4).unwrap().count(), 2);
        let e = stream("m", &[0; 7], 4).err().unwrap();
        assert_eq!(
            e,
            RecordError::Truncated {
                what: "m",
                len: 7,
                rec: 4
            }
        );
        assert!(e.to_string().contains("record layout"));
    }

    #[test]
    fn percpu_sum_skips_short_values() {
        let v = vec![
            5u64.to_le_bytes().to_vec(),
            vec![1, 2],
            7u64.to_le_bytes().to_vec(),
        ];
        assert_eq!(sum_percpu(&v), 12);
    }
}
