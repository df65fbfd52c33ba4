//! CEL's optional extension libraries: strings and math.

use super::functions::Functions;

pub(crate) fn register(_fs: &mut Functions) {}
