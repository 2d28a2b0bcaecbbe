//! `gwtrace serve` scraped by a real Prometheus (root).
