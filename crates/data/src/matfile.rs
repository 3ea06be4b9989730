//! Just enough of MATLAB's Level 5 MAT-file format to read the ImageNet devkit's `meta.mat`
//! (MathWorks, "MAT-File Format", Level 5): top-level variables, zlib-compressed or not, that
//! are numeric arrays, character arrays, cell arrays or struct arrays. Sparse, complex, object
//! and function-handle variables are refused with an error; v7.3 (HDF5) files too.

use std::collections::BTreeMap;
use std::io::Read;

/// One MATLAB value (a matrix of any dimensions, flattened in MATLAB's column-major order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MatValue {
    /// Any numeric class, as `f64`.
    Numeric(Vec<f64>),
    Char(String),
    Cell(Vec<MatValue>),
    /// A struct array: one map of field values per element.
    Struct(Vec<BTreeMap<String, MatValue>>),
}

impl MatValue {
    /// The first number of a numeric array.
    pub(crate) fn first_number(&self) -> Option<f64> {
        match self {
            MatValue::Numeric(v) => v.first().copied(),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            MatValue::Char(s) => Some(s),
            _ => None,
        }
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;
const MX_SPARSE: u8 = 5;

/// The variables of a MAT-file, by name. Errors are plain messages; the caller names the file.
pub(crate) fn read(bytes: &[u8]) -> Result<BTreeMap<String, MatValue>, String> {
    if bytes.len() < 128 {
        return Err("too short for a MAT-file header (128 bytes)".into());
    }
    if bytes.starts_with(b"\x89HDF") || bytes[..128].windows(4).any(|w| w == b"7.3 ") {
        return Err("a MATLAB v7.3 (HDF5) file, which is not read here: save it with -v7".into());
    }
    if &bytes[126..128] != b"IM" {
        return Err(if &bytes[126..128] == b"MI" {
            "a big-endian MAT-file, which is not read here".into()
        } else {
            "not a Level 5 MAT-file (no `IM` endian mark at byte 126)".into()
        });
    }
    let mut out = BTreeMap::new();
    let mut rest = &bytes[128..];
    while !rest.is_empty() {
        let (kind, body, next) = element(rest)?;
        rest = next;
        let inflated;
        let (kind, body) = if kind == MI_COMPRESSED {
            let mut buf = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut buf)
                .map_err(|e| format!("a compressed variable does not inflate: {e}"))?;
            inflated = buf;
            let (kind, body, _) = element(&inflated)?;
            (kind, body)
        } else {
            (kind, body)
        };
        if kind != MI_MATRIX {
            return Err(format!(
                "a top-level element of type {kind} (expected a matrix)"
            ));
        }
        let (name, value) = matrix(body)?;
        out.insert(name, value);
    }
    Ok(out)
}

/// One data element at the start of `buf`: its type, its data and what follows it (8-byte
/// aligned; a small element packs type, size and up to 4 bytes of data in 8 bytes).
fn element(buf: &[u8]) -> Result<(u32, &[u8], &[u8]), String> {
    let word = |at: usize| -> Result<u32, String> {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| "truncated: a data element's tag runs past the end".to_string())
    };
    let tag = word(0)?;
    if tag >> 16 != 0 {
        let (kind, len) = (tag & 0xffff, (tag >> 16) as usize);
        if len > 4 || buf.len() < 8 {
            return Err("truncated or malformed small data element".into());
        }
        return Ok((kind, &buf[4..4 + len], &buf[8..]));
    }
    let len = word(4)? as usize;
    let end = 8usize
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| format!("truncated: an element of {len} bytes runs past the end"))?;
    // Compressed elements are not padded; the others end on an 8-byte boundary.
    let next = if tag == MI_COMPRESSED {
        end
    } else {
        end.next_multiple_of(8).min(buf.len())
    };
    Ok((tag, &buf[8..end], &buf[next..]))
}

/// The name and value of a matrix element's data.
fn matrix(body: &[u8]) -> Result<(String, MatValue), String> {
    if body.is_empty() {
        // An empty matrix in a cell or struct field.
        return Ok((String::new(), MatValue::Numeric(Vec::new())));
    }
    let (_, flags, rest) = element(body)?;
    let class = *flags.first().ok_or("a matrix without its flags")?;
    let complex = flags.get(1).is_some_and(|f| f & 0x08 != 0);
    let (_, dims, rest) = element(rest)?;
    let count = numbers(MI_INT32, dims)?
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d.max(0.0) as usize))
        .ok_or("a matrix's dimensions overflow")?;
    // Each element takes at least 8 bytes: a count beyond that is a damaged file, and must
    // not size an allocation.
    if count > body.len() / 8 && matches!(flags.first(), Some(&(MX_CELL | MX_STRUCT))) {
        return Err(format!(
            "a matrix of {count} elements in {} bytes",
            body.len()
        ));
    }
    let (_, name, mut rest) = element(rest)?;
    let name = String::from_utf8_lossy(name).into_owned();
    if complex {
        return Err(format!(
            "variable `{name}` is complex, which is not read here"
        ));
    }
    let value = match class {
        MX_CELL => {
            let mut cells = Vec::with_capacity(count);
            for _ in 0..count {
                let (_, sub, next) = element(rest)?;
                rest = next;
                cells.push(matrix(sub)?.1);
            }
            MatValue::Cell(cells)
        }
        MX_STRUCT => {
            let (_, width, next) = element(rest)?;
            let width = numbers(MI_INT32, width)?.first().copied().unwrap_or(0.0) as usize;
            let (_, names, next) = element(next)?;
            rest = next;
            if width == 0 {
                return Err(format!("struct `{name}` has a field-name length of 0"));
            }
            let fields: Vec<String> = names
                .chunks(width)
                .map(|c| {
                    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                    String::from_utf8_lossy(&c[..end]).into_owned()
                })
                .collect();
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let mut record = BTreeMap::new();
                for field in &fields {
                    let (_, sub, next) = element(rest)?;
                    rest = next;
                    record.insert(field.clone(), matrix(sub)?.1);
                }
                records.push(record);
            }
            MatValue::Struct(records)
        }
        MX_CHAR => {
            let (kind, data, _) = element(rest)?;
            MatValue::Char(text(kind, data)?)
        }
        MX_SPARSE => {
            return Err(format!(
                "variable `{name}` is sparse, which is not read here"
            ))
        }
        6..=15 => {
            let (kind, data, _) = element(rest)?;
            MatValue::Numeric(numbers(kind, data)?)
        }
        other => {
            return Err(format!(
                "variable `{name}` is of MATLAB class {other} (an object or a function \
                 handle), which is not read here"
            ))
        }
    };
    Ok((name, value))
}

fn numbers(kind: u32, data: &[u8]) -> Result<Vec<f64>, String> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect()
    }
    Ok(match kind {
        MI_INT8 => each::<1>(data, |b| i8::from_le_bytes(b) as f64),
        MI_UINT8 => each::<1>(data, |b| b[0] as f64),
        MI_INT16 => each::<2>(data, |b| i16::from_le_bytes(b) as f64),
        MI_UINT16 => each::<2>(data, |b| u16::from_le_bytes(b) as f64),
        MI_INT32 => each::<4>(data, |b| i32::from_le_bytes(b) as f64),
        MI_UINT32 => each::<4>(data, |b| u32::from_le_bytes(b) as f64),
        MI_SINGLE => each::<4>(data, |b| f32::from_le_bytes(b) as f64),
        MI_DOUBLE => each::<8>(data, f64::from_le_bytes),
        MI_INT64 => each::<8>(data, |b| i64::from_le_bytes(b) as f64),
        MI_UINT64 => each::<8>(data, |b| u64::from_le_bytes(b) as f64),
        other => return Err(format!("numeric data of element type {other}")),
    })
}

/// A character array's text (a row vector: MATLAB's column-major order is the text's order).
fn text(kind: u32, data: &[u8]) -> Result<String, String> {
    Ok(match kind {
        MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(data).into_owned(),
        MI_UTF16 | MI_UINT16 => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        other => return Err(format!("character data of element type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn compressed_and_plain_files_read_the_same_struct_array() {
        let compressed = read(&fixture("devkit_meta.mat")).unwrap();
        assert_eq!(compressed, read(&fixture("devkit_meta_plain.mat")).unwrap());
        let Some(MatValue::Struct(synsets)) = compressed.get("synsets") else {
            panic!("{compressed:?}")
        };
        assert_eq!(synsets.len(), 4);
        assert_eq!(synsets[0]["WNID"], MatValue::Char("n03".into()));
        assert_eq!(synsets[0]["words"], MatValue::Char("c, third".into()));
        assert_eq!(synsets[3]["ILSVRC2012_ID"], MatValue::Numeric(vec![4.0]));
        assert_eq!(
            synsets[3]["children"],
            MatValue::Numeric(vec![1.0, 2.0, 3.0])
        );
        assert_eq!(synsets[0]["children"], MatValue::Numeric(vec![]));
    }

    #[test]
    fn files_that_are_not_level_5_mat_files_are_refused() {
        assert!(read(b"short").unwrap_err().contains("too short"));
        let mut bytes = fixture("devkit_meta_plain.mat");
        bytes[126..128].copy_from_slice(b"MI");
        assert!(read(&bytes).unwrap_err().contains("big-endian"));
        bytes[126..128].copy_from_slice(b"xx");
        assert!(read(&bytes).unwrap_err().contains("not a Level 5"));
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_panic() {
        let bytes = fixture("devkit_meta_plain.mat");
        for len in [130, 200, 1000, bytes.len() - 3] {
            assert!(read(&bytes[..len]).is_err(), "{len}");
        }
        let bytes = fixture("devkit_meta.mat");
        assert!(read(&bytes[..bytes.len() - 10]).is_err());
    }
}
