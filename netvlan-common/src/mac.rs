//! A MAC address: one type for the store, the datapath's keys, the tests
//! and the bench, written and read as `aa:bb:cc:dd:ee:ff`.

use core::{fmt, str::FromStr};

/// Six bytes in wire order. `#[repr(transparent)]`, so a `Mac` can sit in
/// a `#[repr(C)]` map key where `[u8; 6]` would.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// Length of `aa:bb:cc:dd:ee:ff`.
const TEXT_LEN: usize = 17;

impl Mac {
    pub const ZERO: Mac = Mac([0; 6]);

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Docker's stable MAC for an IPv4 address: `02:42` and its four bytes.
    pub const fn from_ipv4(ip: [u8; 4]) -> Mac {
        let [a, b, c, d] = ip;
        Mac([0x02, 0x42, a, b, c, d])
    }

    /// The all-zero address, which no interface can have.
    pub const fn is_zero(self) -> bool {
        matches!(self.0, [0, 0, 0, 0, 0, 0])
    }

    /// The group bit: multicast (and broadcast).
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// An address one interface can have: neither multicast nor zero.
    pub const fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The text form, written without allocating.
    fn text(self) -> [u8; TEXT_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; TEXT_LEN];
        for (i, byte) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(byte >> 4)];
            out[i * 3 + 1] = HEX[usize::from(byte & 0xf)];
        }
        out
    }
}

impl From<[u8; 6]> for Mac {
    fn from(bytes: [u8; 6]) -> Mac {
        Mac(bytes)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // Only ASCII hex digits and colons were written.
        f.pad(core::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not six hex bytes; names (the start of) the text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParseMacError {
    text: [u8; ParseMacError::KEPT],
    len: u8,
    cut: bool,
}

impl ParseMacError {
    /// How much of the offending text the error keeps (it has no heap).
    const KEPT: usize = 40;

    fn new(text: &str) -> ParseMacError {
        let mut len = text.len().min(Self::KEPT);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut kept = [0; Self::KEPT];
        kept[..len].copy_from_slice(&text.as_bytes()[..len]);
        ParseMacError {
            text: kept,
            len: len as u8,
            cut: len < text.len(),
        }
    }

    /// The text that was given (its first 40 bytes).
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = if self.cut { "..." } else { "" };
        write!(
            f,
            "'{}{more}' is not a MAC address: expected six hex bytes like 02:42:ac:10:56:02",
            self.text()
        )
    }
}

impl fmt::Debug for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::error::Error for ParseMacError {}

impl FromStr for Mac {
    type Err = ParseMacError;

    /// Six two-digit hex bytes separated by `:` (or `-`), either case.
    fn from_str(text: &str) -> Result<Mac, ParseMacError> {
        let bad = || ParseMacError::new(text);
        let mut bytes = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(bytes))
    }
}

/// As its text form, so stored records and JSON output read
/// `"02:42:ac:10:56:02"`.
#[cfg(feature = "user")]
impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        serializer.serialize_str(core::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

#[cfg(feature = "user")]
impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mac, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Mac;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address like 02:42:ac:10:56:02")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Mac, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_in_lower_case() {
        let mac: Mac = "02:42:AC:10:56:09".parse().unwrap();
        assert_eq!(mac, Mac([2, 0x42, 0xac, 0x10, 0x56, 9]));
        assert_eq!(mac.to_string(), "02:42:ac:10:56:09");
        assert_eq!("02-42-ac-10-56-09".parse::<Mac>(), Ok(mac));
        assert_eq!(format!("{mac:<20}|"), "02:42:ac:10:56:09   |");
    }

    #[test]
    fn bad_text_is_named_in_the_error() {
        for bad in [
            "",
            "02:42:ac:10:56",
            "02:42:ac:10:56:02:03",
            "zz:42:ac:10:56:02",
            "2:42:ac:10:56:02",
            "+2:42:ac:10:56:02",
        ] {
            let err = bad.parse::<Mac>().unwrap_err();
            assert_eq!(err.text(), bad);
            assert!(err
                .to_string()
                .starts_with(&format!("'{bad}' is not a MAC address")));
        }
        let long = "x".repeat(100);
        assert!(long
            .parse::<Mac>()
            .unwrap_err()
            .to_string()
            .contains("xxx...'"));
    }

    #[test]
    fn kinds_of_address() {
        assert!(Mac::from_ipv4([172, 16, 86, 2]).is_unicast());
        assert_eq!(
            Mac::from_ipv4([172, 16, 86, 2]).to_string(),
            "02:42:ac:10:56:02"
        );
        assert!(Mac::ZERO.is_zero() && !Mac::ZERO.is_unicast());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(Mac([0xff; 6]).is_multicast());
    }

    #[cfg(feature = "user")]
    #[test]
    fn serde_uses_the_text_form() {
        let mac = Mac([2, 0x42, 0xac, 0x10, 0x56, 2]);
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:42:ac:10:56:02\""
        );
        assert_eq!(
            serde_json::from_str::<Mac>("\"02:42:ac:10:56:02\"").unwrap(),
            mac
        );
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
