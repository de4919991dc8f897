//! Named steps where tests inject a failure.

use super::NetworkError;

/// A named step where tests can inject a failure (`FAILPOINTS=NAME=return`
/// with the `failpoints` feature); a no-op in normal builds.
pub(crate) fn failpoint(name: &str) -> Result<(), NetworkError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| Err(NetworkError::Injected(name.to_string())));
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    Ok(())
}
