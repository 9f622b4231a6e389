//! Kernel route programming over netlink.
