#![no_std]
// This file exists so that probe-user can declare a build-dependency on this crate (cargo then
// rebuilds it when the programs change); the programs themselves are the `gwtrace` bin target.
