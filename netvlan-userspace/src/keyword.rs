//! Settings spelled as one word of a fixed list (`--mode auto`,
//! `-o macvlan_mode=vepa`): one list of spellings per type, so parsing,
//! printing, errors and every front's help read the same words.

/// A word that is not one of a setting's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}': expected one of {}", valid.join(", "))]
pub struct UnknownKeyword {
    pub what: &'static str,
    pub value: String,
    pub valid: Vec<&'static str>,
}

/// A type whose values are a fixed list of words.
pub trait Keyword: Sized + Copy + 'static {
    /// What the setting is, for errors ("attach mode").
    const WHAT: &'static str;
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The one spelling of this value.
    fn name(self) -> &'static str;
    /// One line on what this value does, for help.
    fn help(self) -> Option<&'static str> {
        None
    }
    /// Every spelling, in order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.name()).collect()
    }
    /// The value spelled exactly `value`.
    fn parse_keyword(value: &str) -> Result<Self, UnknownKeyword> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.name() == value)
            .ok_or_else(|| UnknownKeyword {
                what: Self::WHAT,
                value: value.to_string(),
                valid: Self::names(),
            })
    }
}

/// `Display` and `FromStr` of a [`Keyword`] type, through its spellings.
macro_rules! keyword_text {
    ($ty:ty) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::keyword::Keyword::name(*self))
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $crate::keyword::UnknownKeyword;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                <$ty as $crate::keyword::Keyword>::parse_keyword(value)
            }
        }
    };
}
pub(crate) use keyword_text;

#[cfg(test)]
mod tests {
    use super::Keyword;
    use crate::{
        control::Driver,
        datapath::AttachMode,
        sys::netlink::{IpvlanFlag, IpvlanMode, MacvlanMode},
    };

    fn round_trips<
        K: Keyword + std::fmt::Display + std::str::FromStr + PartialEq + std::fmt::Debug,
    >()
    where
        K::Err: std::fmt::Debug,
    {
        for k in K::ALL {
            assert_eq!(k.to_string().parse::<K>().unwrap(), *k);
        }
    }

    #[test]
    fn every_spelling_parses_back_to_its_value() {
        round_trips::<MacvlanMode>();
        round_trips::<IpvlanMode>();
        round_trips::<IpvlanFlag>();
        round_trips::<AttachMode>();
        round_trips::<Driver>();
        assert_eq!(IpvlanMode::L3s.to_string(), "l3s");
        assert_eq!(MacvlanMode::Passthru.to_string(), "passthru");
    }

    #[test]
    fn a_wrong_word_is_refused_naming_the_valid_ones() {
        let error = "Native".parse::<AttachMode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid attach mode 'Native': expected one of auto, native, generic"
        );
    }
}
