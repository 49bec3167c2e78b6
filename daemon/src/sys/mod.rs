//! The operating system behind safe functions.

pub mod residency;
