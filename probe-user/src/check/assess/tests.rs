//! Unit tests of the assessment on fixture facts.
use super::*;
