//! Who made a link: the ids netvlan gives networks and endpoints, and the
//! `IFLA_IFALIAS` tag naming that owner on every link netvlan creates, so
//! crash recovery and `restore` can tell netvlan's links from the rest.

/// How every owner tag starts.
pub(crate) const OWNER_PREFIX: &str = crate::sys::netlink::OWNER_ALIAS_PREFIX;

/// The alias netvlan gives the links it creates for the object `id`.
pub(crate) fn owner_alias(id: &str) -> String {
    format!("{OWNER_PREFIX}{id}")
}

/// A new network or endpoint id: 64 hex digits, like Docker's.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
