//! Analysis of a slot's metrics (being written).
