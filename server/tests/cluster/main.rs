//! Support for the cluster integration tests: a TCP proxy that partitions, delays and cuts the
//! links between nodes.
//!
//! - `proxy`: partitions without root, one proxy per directed link.

// Scenarios that use every helper come with the cluster mode; until then some go unused.
#![allow(dead_code)]

mod proxy;
