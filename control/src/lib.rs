//! veil-control: the control plane of veil.
#![deny(unsafe_code)]

pub mod noise;
