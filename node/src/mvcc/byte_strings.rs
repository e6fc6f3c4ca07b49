//! Byte strings (keys, values) through serde as bytes rather than as sequences of
//! `u8`. bincode encodes both the same way — a `u64` length, then the bytes — so the
//! snapshot format does not change; but a sequence is written and read one element at a
//! time, and a gigabyte of values took seconds to encode and decode that way, where
//! bytes are one copy. A format that writes bytes as a sequence is still read.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `#[serde(with = "byte_strings")]` for a `Vec<u8>` field.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(ByteStringVisitor)
}

/// `#[serde(with = "byte_strings::shared")]` for a `Bytes` field (a value shared
/// between a frozen copy of the store and the live one).
pub mod shared {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        super::serialize(bytes, serializer)
    }

    /// Straight into an allocation of the value's size: one copy from the input.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_bytes(SharedVisitor)
    }

    struct SharedVisitor;

    impl<'de> serde::de::Visitor<'de> for SharedVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(bytes))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Bytes, A::Error> {
            super::ByteStringVisitor.visit_seq(seq).map(Bytes::from)
        }
    }
}

/// A borrowed byte string that serializes as bytes.
pub struct AsBytes<'a>(pub &'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// An owned byte string read as bytes.
pub struct ByteString(pub Vec<u8>);

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(ByteString)
    }
}

struct ByteStringVisitor;

impl<'de> Visitor<'de> for ByteStringVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the input holds: the size hint is only a hint.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsSequence {
        value: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsByteString {
        #[serde(with = "super")]
        value: Vec<u8>,
    }

    #[test]
    fn bincode_encodes_bytes_as_it_encodes_a_sequence() {
        let value: Vec<u8> = (0..=255).collect();
        let sequence = bincode::serialize(&AsSequence { value: value.clone() }).expect("encodes");
        let bytes = bincode::serialize(&AsByteString { value: value.clone() }).expect("encodes");
        assert_eq!(sequence, bytes);
        let back: AsByteString = bincode::deserialize(&sequence).expect("decodes");
        assert_eq!(back.value, value);
        let shared: AsSharedBytes = bincode::deserialize(&sequence).expect("decodes");
        assert_eq!(&shared.value[..], &value[..]);
        assert_eq!(bincode::serialize(&shared).expect("encodes"), bytes);
        // A format that writes bytes as a sequence (JSON) is read too.
        let json = serde_json::to_string(&AsSequence { value: value.clone() }).expect("encodes");
        let from_json: AsSharedBytes = serde_json::from_str(&json).expect("decodes");
        assert_eq!(&from_json.value[..], &value[..]);
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsSharedBytes {
        #[serde(with = "super::shared")]
        value: bytes::Bytes,
    }
}
