// The CLI that uses these modules is written separately; until it lands they are only tested.
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod keys;

fn main() {}
