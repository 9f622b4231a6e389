//! Network namespaces for a [`super::Lab`]: the test bed's (`testgate::testbed`), and the
//! shared LAN some tests build from them.

use std::io;

pub use testgate::testbed::{run, Ns};

impl super::Lab {
    /// One shared LAN 10.255.n.0/24: a bridge `br0` in the first namespace
    /// (role `roles[0]`, address 10.255.n.1/24 on the bridge) and one veth
    /// from each other namespace into it (`veth0`, 10.255.n.(i+1)/24 for
    /// `roles[i]`). Every member reaches every other directly, so next hops
    /// reflected or passed on unchanged resolve everywhere.
    pub fn lan(&self, n: u8, roles: &[&str]) -> io::Result<Vec<Ns>> {
        let mut all = Vec::with_capacity(roles.len());
        let hub = self.netns(roles.first().copied().unwrap_or("hub"))?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.add_addr("br0", &format!("10.255.{n}.1/24"))?;
        hub.ip(&["link", "set", "br0", "up"])?;
        all.push(hub.clone());
        for (i, role) in roles.iter().enumerate().skip(1) {
            let ns = self.netns(role)?;
            let port = format!("port{i}");
            self.veth(&hub, &port, &[], &ns, "veth0", &[&format!("10.255.{n}.{}/24", i + 1)])?;
            hub.ip(&["link", "set", &port, "master", "br0"])?;
            all.push(ns);
        }
        Ok(all)
    }
}
