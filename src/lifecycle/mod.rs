//! Map lifecycle and refcount flow per process (issue 3). Not yet built.
