//! The strom-broker binary.
fn main() {}
