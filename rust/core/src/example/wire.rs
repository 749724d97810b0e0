//! The protobuf wire format of tf.train.Example, read by hand.
//!
//! Why not a protobuf crate: prost or protobuf-rs materialise each record as a tree of owned
//! messages (a `HashMap<String, Feature>` with a `Vec` per value list), i.e. several allocations
//! per record, and only then could we copy values into columns. Here a record is walked once and
//! each value list is handed out as a borrowed slice, so the caller copies payload bytes straight
//! into preallocated columns with no allocation at all.
//!
//! The rules follow TensorFlow's fast Example parser (`example_proto_fast_parsing.cc`), which is
//! what `tf.io.parse_example` runs, rather than general protobuf merging, because matching
//! `parse_example` is the point:
//! - `Example`: field 1 (`Features`) may occur several times (its entries add up); unknown fields
//!   are skipped. TF knows field 1 only by its one-byte tag `0x0a`: the same tag written as a
//!   longer varint (`8a 00`) is an unknown field to it, skipped, so we skip it too.
//! - `Features`: only map entries, each tagged by the byte `0x0a`; anything else (a longer varint
//!   for that tag included) fails the record.
//! - a map entry: exactly one key (field 1) and one value (field 2), in either order; here the
//!   tags are read as varints, so `8a 00` is a key.
//! - `Feature`: its first byte names the list kind (`0x0a` bytes, `0x12` float, `0x1a` int64); an
//!   empty `Feature` has no kind and counts as absent; bytes after the first list are ignored.
//!   Of a name the spec wants, the last non-empty `Feature` gives the values, but an unknown kind
//!   in any of them fails the record (TF reads the kind of each).
//! - a float or int64 list is either one packed run (bytes after it are ignored) or unpacked
//!   values only; a packed float run holds `len / 4` values.
//!
//! Where TF accepts what is not a well-formed Example, we refuse it (README, "Dense Examples
//! without TensorFlow"): a map entry of two keys or two values (TF reads two fields, whatever
//! they are, and leaves the other default), field number 0, and a length running past the end of
//! its message (TF stops at the end, or skips nothing where the length overflows an `int`).

use std::fmt;

/// Why a record is not a well-formed Example (TF: "Could not parse example input").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A value read off the wire, or why the record is not an Example.
pub type WireResult<T> = Result<T, Malformed>;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

const fn tag(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

/// The first byte of a `Feature` holding a `BytesList` (TF reads the kind of a value list from
/// this one byte).
pub const BYTES_LIST: u8 = tag(1, WIRE_LEN);
/// The first byte of a `Feature` holding a `FloatList`.
pub const FLOAT_LIST: u8 = tag(2, WIRE_LEN);
/// The first byte of a `Feature` holding an `Int64List`.
pub const INT64_LIST: u8 = tag(3, WIRE_LEN);

/// The tag of `Example.features` and of a `Features` map entry, as TF expects it: this one byte.
const FEATURES_TAG: u8 = tag(1, WIRE_LEN);

/// A forward-only reader over one message's bytes.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`, which hold one whole message.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether the whole message has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not read yet, borrowed from the message (not from the cursor).
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// A protobuf varint of at most 10 bytes; bits beyond 64 are dropped, as protobuf does.
    #[inline]
    pub fn varint(&mut self) -> WireResult<u64> {
        // One-byte varints (tags, small lengths, small labels) are the common case.
        if let Some(&first) = self.rest.first() {
            if first < 0x80 {
                self.rest = &self.rest[1..];
                return Ok(u64::from(first));
            }
        }
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed("truncated or overlong varint"))
    }

    /// A length or tag: protobuf keeps the low 32 bits of the varint.
    #[inline]
    pub fn varint32(&mut self) -> WireResult<u32> {
        Ok(self.varint()? as u32)
    }

    /// Consumes the next byte if it is `byte` (protobuf's `ExpectTag`, which compares bytes,
    /// not decoded tags).
    #[inline]
    pub fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&first, rest)) if first == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// The next `n` bytes; fewer left is malformed, since a length must not run past its message.
    #[inline]
    pub fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        if n > self.rest.len() {
            return Err(Malformed("a length runs past the end of its message"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The payload of a length-delimited field whose tag has been read.
    #[inline]
    pub fn delimited(&mut self) -> WireResult<&'a [u8]> {
        let len = self.varint32()? as usize;
        self.take(len)
    }

    /// Skips the value of an unknown field (groups are not accepted, as in TF).
    fn skip(&mut self, wire_type: u8) -> WireResult<()> {
        match wire_type {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            _ => Err(Malformed("unsupported wire type")),
        }
    }
}

/// Calls `visit(key, feature)` for every map entry of the Example, in wire order. `feature` is
/// the serialized `Feature` message (see [`FeatureList::parse`]).
pub fn for_each_entry<'a>(
    example: &'a [u8],
    mut visit: impl FnMut(&'a [u8], &'a [u8]),
) -> WireResult<()> {
    let mut cursor = Cursor::new(example);
    while !cursor.is_empty() {
        if cursor.eat(FEATURES_TAG) {
            let mut features = Cursor::new(cursor.delimited()?);
            while !features.is_empty() {
                if !features.eat(FEATURES_TAG) {
                    return Err(Malformed("unexpected field in Features"));
                }
                let (name, feature) = map_entry(features.delimited()?)?;
                visit(name, feature);
            }
        } else {
            let key = cursor.varint32()?;
            if key >> 3 == 0 {
                return Err(Malformed("field number 0"));
            }
            cursor.skip((key & 7) as u8)?;
        }
    }
    Ok(())
}

fn map_entry(entry: &[u8]) -> WireResult<(&[u8], &[u8])> {
    let mut cursor = Cursor::new(entry);
    let (mut name, mut feature) = (None, None);
    while !cursor.is_empty() {
        let slot = match cursor.varint32()? {
            k if k == u32::from(tag(1, WIRE_LEN)) => &mut name,
            k if k == u32::from(tag(2, WIRE_LEN)) => &mut feature,
            _ => return Err(Malformed("unexpected field in a feature map entry")),
        };
        if slot.replace(cursor.delimited()?).is_some() {
            return Err(Malformed("a feature map entry repeats its key or value"));
        }
    }
    match (name, feature) {
        (Some(name), Some(feature)) => Ok((name, feature)),
        _ => Err(Malformed("a feature map entry lacks its key or value")),
    }
}

/// The value list of one `Feature`, not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureList<'a> {
    /// An empty `Feature`: TF treats the feature as absent.
    Absent,
    /// A `BytesList`: the bytes after the kind byte, for [`parse_bytes`].
    Bytes(&'a [u8]),
    /// A `FloatList`: the bytes after the kind byte, for [`parse_floats`].
    Float(&'a [u8]),
    /// An `Int64List`: the bytes after the kind byte, for [`parse_int64s`].
    Int64(&'a [u8]),
}

/// A `Feature` whose first byte is no known list kind (TF: "Unsupported datatype").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKind(pub u8);

/// A value list that does not parse (TF: "Can't parse serialized Example").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadList;

impl<'a> FeatureList<'a> {
    /// Reads only the kind byte of the serialized `feature`; the list itself is checked when
    /// it is decoded, so a list the spec does not want costs nothing.
    pub fn parse(feature: &'a [u8]) -> Result<Self, UnknownKind> {
        let Some((&kind, rest)) = feature.split_first() else {
            return Ok(FeatureList::Absent);
        };
        let make = match kind {
            BYTES_LIST => FeatureList::Bytes,
            FLOAT_LIST => FeatureList::Float,
            INT64_LIST => FeatureList::Int64,
            other => return Err(UnknownKind(other)),
        };
        Ok(make(rest))
    }

    /// Whether `feature` is empty or starts with a known list kind, i.e. [`Self::parse`] takes it.
    pub fn has_known_kind(feature: &'a [u8]) -> bool {
        Self::parse(feature).is_ok()
    }

    /// The list kind as error messages name it ("a float_list").
    pub fn kind_name(&self) -> &'static str {
        match self {
            FeatureList::Absent => "no value list",
            FeatureList::Bytes(_) => "a bytes_list",
            FeatureList::Float(_) => "a float_list",
            FeatureList::Int64(_) => "an int64_list",
        }
    }
}

/// The body of a value list: a length, then that many bytes. Like protobuf's `PushLimit`, a
/// length beyond the Feature's end is cut at the end rather than refused.
fn list_body(after_kind: &[u8]) -> Result<Cursor<'_>, BadList> {
    let mut cursor = Cursor::new(after_kind);
    let len = cursor.varint32().map_err(|_| BadList)? as usize;
    let rest = cursor.remaining();
    Ok(Cursor::new(&rest[..len.min(rest.len())]))
}

/// The values of a float list.
pub enum Floats<'a> {
    /// Packed little-endian `f32`s, ready to copy as they are.
    Packed(&'a [u8]),
    /// Unpacked values, one fixed32 field each: `(tag, 4 bytes)` pairs, already checked.
    Unpacked(&'a [u8]),
}

impl Floats<'_> {
    /// The number of values (not bytes).
    pub fn len(&self) -> usize {
        match self {
            Floats::Packed(bytes) => bytes.len() / 4,
            Floats::Unpacked(pairs) => pairs.len() / 5,
        }
    }

    /// Whether the list holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the values, in native byte order, into `out` (exactly `4 * len()` bytes).
    pub fn copy_to(&self, out: &mut [u8]) {
        match self {
            Floats::Packed(bytes) => copy_le_words::<4>(bytes, out),
            Floats::Unpacked(pairs) => {
                for (pair, dst) in pairs.chunks_exact(5).zip(out.chunks_exact_mut(4)) {
                    copy_le_words::<4>(&pair[1..], dst);
                }
            }
        }
    }
}

/// The values of the `FloatList` in [`FeatureList::Float`]'s bytes, checked for their shape
/// once here, so copying them out cannot fail.
pub fn parse_floats(after_kind: &[u8]) -> Result<Floats<'_>, BadList> {
    let mut body = list_body(after_kind)?;
    match body.remaining().first() {
        Some(&t) if t == tag(1, WIRE_LEN) => {
            body.take(1).map_err(|_| BadList)?;
            let len = body.varint32().map_err(|_| BadList)? as usize;
            // TF sizes the list from the packed length, then reads it whole.
            let bytes = body.take(len).map_err(|_| BadList)?;
            Ok(Floats::Packed(&bytes[..len / 4 * 4]))
        }
        Some(&t) if t == tag(1, WIRE_FIXED32) => {
            let pairs = body.remaining();
            let well_formed = pairs.len() % 5 == 0
                && pairs
                    .chunks_exact(5)
                    .all(|pair| pair[0] == tag(1, WIRE_FIXED32));
            if well_formed {
                Ok(Floats::Unpacked(pairs))
            } else {
                Err(BadList)
            }
        }
        Some(_) => Err(BadList),
        None => Ok(Floats::Packed(&[])),
    }
}

/// The values of an int64 list, decoded lazily: varints cannot be counted without reading them.
pub struct Int64s<'a> {
    body: Cursor<'a>,
    packed: bool,
}

impl Iterator for Int64s<'_> {
    type Item = Result<i64, BadList>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.body.is_empty() {
            return None;
        }
        if !self.packed && self.body.take(1) != Ok(&[tag(1, WIRE_VARINT)][..]) {
            return Some(Err(BadList));
        }
        Some(self.body.varint().map(|v| v as i64).map_err(|_| BadList))
    }
}

/// The values of the `Int64List` in [`FeatureList::Int64`]'s bytes; a malformed value surfaces
/// as an `Err` item when it is reached.
pub fn parse_int64s(after_kind: &[u8]) -> Result<Int64s<'_>, BadList> {
    let mut body = list_body(after_kind)?;
    match body.remaining().first() {
        Some(&t) if t == tag(1, WIRE_LEN) => {
            body.take(1).map_err(|_| BadList)?;
            let packed = body.delimited().map_err(|_| BadList)?;
            Ok(Int64s {
                body: Cursor::new(packed),
                packed: true,
            })
        }
        Some(&t) if t == tag(1, WIRE_VARINT) => Ok(Int64s {
            body,
            packed: false,
        }),
        Some(_) => Err(BadList),
        None => Ok(Int64s { body, packed: true }),
    }
}

/// The values of a bytes list, each borrowed from the record.
pub struct BytesValues<'a> {
    body: Cursor<'a>,
}

impl<'a> Iterator for BytesValues<'a> {
    type Item = Result<&'a [u8], BadList>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.body.is_empty() {
            return None;
        }
        if self.body.take(1) != Ok(&[tag(1, WIRE_LEN)][..]) {
            return Some(Err(BadList));
        }
        Some(self.body.delimited().map_err(|_| BadList))
    }
}

/// The values of the `BytesList` in [`FeatureList::Bytes`]'s bytes; a malformed value surfaces
/// as an `Err` item when it is reached.
pub fn parse_bytes(after_kind: &[u8]) -> Result<BytesValues<'_>, BadList> {
    Ok(BytesValues {
        body: list_body(after_kind)?,
    })
}

/// Copies little-endian words of `N` bytes into native order: a plain memcpy on little-endian
/// machines, which is every machine TF runs on, a byte swap elsewhere.
#[inline]
pub fn copy_le_words<const N: usize>(src: &[u8], dst: &mut [u8]) {
    if cfg!(target_endian = "little") || N == 1 {
        dst.copy_from_slice(src);
    } else {
        for (s, d) in src.chunks_exact(N).zip(dst.chunks_exact_mut(N)) {
            for i in 0..N {
                d[i] = s[N - 1 - i];
            }
        }
    }
}

/// The encoder: canonical tf.train.Example bytes, as `SerializeToString` writes them (packed
/// numeric lists). The decoder's inverse, for tests and for writing datasets without TF.
pub mod encode {
    /// One feature's values.
    pub enum Values<'a> {
        /// A `BytesList`, one entry per value.
        Bytes(&'a [&'a [u8]]),
        /// A packed `FloatList`.
        Float32(&'a [f32]),
        /// A packed `Int64List`.
        Int64(&'a [i64]),
    }

    /// A serialized Example holding `features` in the order given.
    pub fn example(features: &[(&[u8], Values<'_>)]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (name, values) in features {
            let mut entry = Vec::new();
            put_delimited(&mut entry, 1, name);
            put_delimited(&mut entry, 2, &feature(values));
            put_delimited(&mut entries, 1, &entry);
        }
        let mut out = Vec::with_capacity(entries.len() + 8);
        put_delimited(&mut out, 1, &entries);
        out
    }

    fn feature(values: &Values<'_>) -> Vec<u8> {
        let mut list = Vec::new();
        let field = match values {
            Values::Bytes(items) => {
                for item in *items {
                    put_delimited(&mut list, 1, item);
                }
                1
            }
            Values::Float32(items) => {
                let packed: Vec<u8> = items.iter().flat_map(|v| v.to_le_bytes()).collect();
                if !packed.is_empty() {
                    put_delimited(&mut list, 1, &packed);
                }
                2
            }
            Values::Int64(items) => {
                let mut packed = Vec::new();
                for &v in *items {
                    put_varint(&mut packed, v as u64);
                }
                if !packed.is_empty() {
                    put_delimited(&mut list, 1, &packed);
                }
                3
            }
        };
        let mut out = Vec::with_capacity(list.len() + 6);
        put_delimited(&mut out, field, &list);
        out
    }

    /// Appends `value` as a protobuf varint (1 to 10 bytes).
    pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// Appends a length-delimited field; `field` must be below 16 for its tag to be the one
    /// byte written.
    pub fn put_delimited(out: &mut Vec<u8>, field: u8, payload: &[u8]) {
        out.push(field << 3 | 2);
        put_varint(out, payload.len() as u64);
        out.extend_from_slice(payload);
    }
}
