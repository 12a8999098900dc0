//! Vector search on libtorch (work in progress).
