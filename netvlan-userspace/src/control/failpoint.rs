//! Named steps where tests inject a failure.

use super::NetworkError;
use crate::sys::failpoint::step;

/// A named step where tests can inject a failure (`FAILPOINTS=NAME=return`
/// with the `failpoints` feature) or kill the command; a no-op in normal
/// builds.
pub(crate) fn failpoint(name: &str) -> Result<(), NetworkError> {
    if step(name) {
        return Err(NetworkError::Injected(name.to_string()));
    }
    Ok(())
}
