//! Interned path attribute sets: one shared copy per distinct set, so a
//! full table of 900k routes holds tens of thousands of attribute sets.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::types::AttrCode;
use crate::wire::{AsPath, Attr, NextHop, Origin, PathAttribute, Update};

/// A path's attributes without its NLRI (no MP_REACH/MP_UNREACH), and the
/// values the decision process reads, derived once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    /// The attributes as they will be sent on (MP_* and NEXT_HOP removed:
    /// the next hop is `next_hop`).
    pub attributes: Vec<PathAttribute>,
    /// The next hop (NEXT_HOP, or the global next hop of MP_REACH_NLRI).
    pub next_hop: Option<IpAddr>,
    /// The IPv6 link-local next hop, if the peer gave one.
    pub link_local: Option<std::net::Ipv6Addr>,
    /// Local route priority (Calico BGPFilter `setPriority`, the kernel
    /// route metric); never sent to peers. `None`: the default.
    pub priority: Option<u32>,
}

impl PathAttrs {
    /// The attributes of `update`, with the next hop of the IPv4 field or of
    /// MP_REACH_NLRI (`mp`: whether the prefixes in question came in MP_REACH_NLRI).
    pub fn from_update(update: &Update, mp: bool) -> PathAttrs {
        // Exactly sized: interned sets live as long as their routes (a
        // filtered collect would leave up to half the capacity unused).
        // NEXT_HOP is kept in `next_hop` only (72 bytes less per set).
        let mut attributes = Vec::with_capacity(update.attributes.len());
        attributes.extend(
            update
                .attributes
                .iter()
                .filter(|a| !matches!(a.value, Attr::MpReach(_) | Attr::MpUnreach(_) | Attr::NextHop(_)))
                .cloned(),
        );
        attributes.shrink_to_fit();
        let (next_hop, link_local) = if mp {
            match update.mp_reach().map(|r| &r.next_hop) {
                Some(NextHop::V4(a)) => (Some(IpAddr::V4(*a)), None),
                Some(NextHop::V6 { global, link_local }) => (Some(IpAddr::V6(*global)), *link_local),
                _ => (None, None),
            }
        } else {
            (update.next_hop().map(IpAddr::V4), None)
        };
        PathAttrs { attributes, next_hop, link_local, priority: None }
    }

    /// The attribute with `code`, if present.
    pub fn attr(&self, code: AttrCode) -> Option<&Attr> {
        self.attributes.iter().map(|a| &a.value).find(|a| a.code() == code)
    }

    /// ORIGIN (INCOMPLETE when missing, as the least preferred).
    pub fn origin(&self) -> Origin {
        match self.attr(AttrCode::ORIGIN) {
            Some(Attr::Origin(o)) => *o,
            _ => Origin::Incomplete,
        }
    }

    /// AS_PATH (empty when missing: a locally originated or iBGP route).
    pub fn as_path(&self) -> AsPath {
        match self.attr(AttrCode::AS_PATH) {
            Some(Attr::AsPath(p)) => p.clone(),
            _ => AsPath::default(),
        }
    }

    /// AS_PATH as it is, if present.
    pub fn as_path_ref(&self) -> Option<&AsPath> {
        match self.attr(AttrCode::AS_PATH) {
            Some(Attr::AsPath(p)) => Some(p),
            _ => None,
        }
    }

    /// LOCAL_PREF, if present.
    pub fn local_pref(&self) -> Option<u32> {
        match self.attr(AttrCode::LOCAL_PREF) {
            Some(Attr::LocalPref(v)) => Some(*v),
            _ => None,
        }
    }

    /// MULTI_EXIT_DISC, if present.
    pub fn med(&self) -> Option<u32> {
        match self.attr(AttrCode::MULTI_EXIT_DISC) {
            Some(Attr::Med(v)) => Some(*v),
            _ => None,
        }
    }

    /// ORIGINATOR_ID, if present (RFC 4456).
    pub fn originator_id(&self) -> Option<Ipv4Addr> {
        match self.attr(AttrCode::ORIGINATOR_ID) {
            Some(Attr::OriginatorId(a)) => Some(*a),
            _ => None,
        }
    }

    /// COMMUNITIES (RFC 1997); empty when missing.
    pub fn communities(&self) -> &[crate::wire::Community] {
        match self.attr(AttrCode::COMMUNITIES) {
            Some(Attr::Communities(c)) => c,
            _ => &[],
        }
    }

    /// Whether COMMUNITIES holds `c`.
    pub fn has_community(&self, c: crate::wire::Community) -> bool {
        self.communities().contains(&c)
    }

    /// Marked LLGR_STALE (RFC 9494 §4.3): a long-lived stale route, less
    /// preferred than any other.
    pub fn is_llgr_stale(&self) -> bool {
        self.has_community(crate::wire::Community::LLGR_STALE)
    }

    /// These attributes with `c` added to COMMUNITIES (created if missing;
    /// unchanged if `c` is there already).
    pub fn with_community(&self, c: crate::wire::Community) -> PathAttrs {
        let mut out = self.clone();
        out.add_community(c);
        out
    }

    /// Adds `c` to COMMUNITIES (created if missing) unless it is there.
    pub fn add_community(&mut self, c: crate::wire::Community) {
        add_community(&mut self.attributes, c);
    }

    /// CLUSTER_LIST length (RFC 4456).
    pub fn cluster_list_len(&self) -> usize {
        match self.attr(AttrCode::CLUSTER_LIST) {
            Some(Attr::ClusterList(c)) => c.len(),
            _ => 0,
        }
    }
}

/// The set of distinct attribute sets in use.
#[derive(Debug, Default)]
pub struct Interner {
    sets: HashSet<Arc<PathAttrs>, foldhash::fast::RandomState>,
}

impl Interner {
    /// The shared copy of `attrs` (made if new).
    pub fn intern(&mut self, mut attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.sets.get(&attrs) {
            return a.clone();
        }
        attrs.attributes.shrink_to_fit();
        let a = Arc::new(attrs);
        self.sets.insert(a.clone());
        a
    }

    /// Forgets sets no route uses any more; returns how many.
    pub fn sweep(&mut self) -> usize {
        let before = self.sets.len();
        self.sets.retain(|a| Arc::strong_count(a) > 1);
        before - self.sets.len()
    }

    /// Distinct sets held.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

/// Adds `c` to the COMMUNITIES of `attributes` (created if missing) unless
/// it is there; the attributes stay in type-code order.
pub fn add_community(attributes: &mut Vec<PathAttribute>, c: crate::wire::Community) {
    if let Some(PathAttribute { value: Attr::Communities(list), .. }) =
        attributes.iter_mut().find(|a| a.value.code() == AttrCode::COMMUNITIES)
    {
        if !list.contains(&c) {
            list.push(c);
        }
        return;
    }
    let at = attributes.iter().position(|a| a.value.code().0 > AttrCode::COMMUNITIES.0).unwrap_or(attributes.len());
    attributes.insert(at, PathAttribute::new(Attr::Communities([c].into_iter().collect())));
}
