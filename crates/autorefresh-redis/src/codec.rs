//! How ids and items become bytes in Redis.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;

/// Turns ids and items into bytes and back. Every replica of a cache must use the same one.
///
/// [`Postcard`] (compact binary, the default) and [`Json`] (readable with `redis-cli`) are
/// provided; implement this for another format.
///
/// # Examples
///
/// ```
/// use autorefresh_redis::{Codec, Json, Postcard};
///
/// let bytes = Postcard.encode(&("job-7", 3_u32)).unwrap();
/// assert_eq!(Postcard.decode::<(String, u32)>(&bytes).unwrap(), ("job-7".to_owned(), 3));
/// assert_eq!(Json.encode(&[1, 2]).unwrap(), b"[1,2]");
/// ```
pub trait Codec: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be encoded in this format.
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError>;

    /// Decodes a value from `bytes`.
    ///
    /// # Errors
    ///
    /// When `bytes` are not the encoding of a `T`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// The encoding of `value`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be encoded in this format.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }
}

/// [postcard](https://docs.rs/postcard): a compact binary format (varints, no field names).
/// The default codec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let buffer = std::mem::take(out);
        *out = postcard::to_extend(value, buffer).map_err(CodecError::new)?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        postcard::from_bytes(bytes).map_err(CodecError::new)
    }
}

/// JSON, readable with `redis-cli`; larger and slower than [`Postcard`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_into_appends() {
        let mut out = b"x".to_vec();
        Postcard.encode_into(&7_u8, &mut out).unwrap();
        assert_eq!(out, [b'x', 7]);
        Json.encode_into(&7_u8, &mut out).unwrap();
        assert_eq!(out, [b'x', 7, b'7']);
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        assert!(Postcard.decode::<String>(&[0xff, 0xff]).is_err());
        assert!(Json.decode::<u32>(b"{").is_err());
    }
}
