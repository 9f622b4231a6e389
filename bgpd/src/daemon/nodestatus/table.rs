//! `bgpd show status`: the status as `calicoctl node status` prints it (one
//! table per address family: PEER ADDRESS, PEER TYPE, STATE as BIRD says it
//! (`up` / `start`), SINCE, INFO), rendered from the same [`NodeStatus`] the
//! datastore gets, so that `--json` and the table say the same.

use super::{NodeStatus, Peer, SessionState};

/// The text of `bgpd show status`. `today` is the UTC date (`YYYY-MM-DD`): a
/// session up since today shows the time of day, an older one its date, as BIRD
/// shows them.
pub fn render(status: &NodeStatus, today: &str) -> String {
    let mut out = String::from("Calico process is running.\n");
    let not_ready = status
        .agent
        .iter()
        .flat_map(|a| [&a.bird_v4, &a.bird_v6])
        .flatten()
        .any(|d| d.state == super::AgentState::NotReady);
    if not_ready {
        out.push_str("bgpd is decommissioning or decommissioned: its sessions are closing or closed.\n");
    }
    let empty = Vec::new();
    let (v4, v6) = status.bgp.as_ref().map_or((&empty, &empty), |b| (&b.peers_v4, &b.peers_v6));
    for (family, peers) in [("IPv4", v4), ("IPv6", v6)] {
        out.push_str(&format!("\n{family} BGP status\n"));
        if peers.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
        } else {
            out.push_str(&table(peers, today));
        }
    }
    out
}

/// One family's table, with the borders and centred headings of calicoctl's.
fn table(peers: &[Peer], today: &str) -> String {
    let heads = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let rows: Vec<[String; 5]> = peers
        .iter()
        .map(|p| {
            let up = p.state == SessionState::Established;
            let since = p.since.as_deref().map_or_else(
                || "-".to_string(),
                |s| match s.split_once(' ') {
                    Some((date, time)) if date == today => time.to_string(),
                    Some((date, _)) => date.to_string(),
                    None => s.to_string(),
                },
            );
            [
                p.peer_ip.clone(),
                p.kind.words().to_string(),
                if up { "up" } else { "start" }.to_string(),
                since,
                format!("{:?}", p.state),
            ]
        })
        .collect();
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([heads[i].len()]).max().unwrap_or(0)).collect();
    let rule: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let mut out = rule.clone();
    for (h, w) in heads.iter().zip(&widths) {
        out.push_str(&format!("| {h:^w$} "));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for r in &rows {
        for (c, w) in r.iter().zip(&widths) {
            out.push_str(&format!("| {c:<w$} "));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}
