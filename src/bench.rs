//! Load generator (`roster bench`).
