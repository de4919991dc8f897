//! The network drivers: macvlan and ipvlan.

use serde::{Deserialize, Serialize};

use crate::keyword::{keyword_text, Keyword};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Each endpoint has its own MAC on the parent.
    #[default]
    Macvlan,
    /// Endpoints share the parent's MAC; one network per parent.
    Ipvlan,
}

impl Keyword for Driver {
    const WHAT: &'static str = "driver";
    const ALL: &'static [Self] = &[Self::Macvlan, Self::Ipvlan];
    fn name(self) -> &'static str {
        match self {
            Driver::Macvlan => "macvlan",
            Driver::Ipvlan => "ipvlan",
        }
    }
    fn help(self) -> Option<&'static str> {
        Some(match self {
            Driver::Macvlan => "Each endpoint has its own MAC on the parent",
            Driver::Ipvlan => "Endpoints share the parent's MAC; one network per parent",
        })
    }
}
keyword_text!(Driver);
