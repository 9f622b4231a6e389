//! Calico-style block IPAM.
