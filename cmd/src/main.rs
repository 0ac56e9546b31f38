//! The kite binary.
fn main() {}
