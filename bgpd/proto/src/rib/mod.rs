//! The routing information base: the decision process first (issue 4
//! builds the Adj-RIB-In, Loc-RIB and Adj-RIB-Out around it).

pub mod decision;
