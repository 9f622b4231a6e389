//! The line protocol between the bench and its far end: one command a line on the far
//! end's stdin, one report a line on its stdout. Typed both ways, so that neither side
//! parses text the other printed by hand.

use std::fmt;
use std::str::FromStr;

/// What the bench asks of the far end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Session `i` stops sending (it keeps receiving) until the DUT says Down, then
    /// sends again: one detection sample.
    Silence(usize),
    /// Report the packet counters ([`Report::Stats`]).
    Stats,
    /// Report the intervals the Up sessions negotiated ([`Report::Intervals`], then
    /// [`Report::IntervalsEnd`]).
    Intervals,
    /// The load peer with the table starts (or stops) sending it, round after round.
    Load(bool),
}

/// Why a session left Up when nobody asked it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownCause {
    /// The DUT's packet said Down: the DUT declared the path failed.
    DutDown,
    /// The DUT's packet said AdminDown.
    DutAdminDown,
    /// The far end heard nothing from the DUT for the detection time.
    Timeout,
}

impl DownCause {
    fn name(self) -> &'static str {
        match self {
            DownCause::DutDown => "dut-down",
            DownCause::DutAdminDown => "dut-admin-down",
            DownCause::Timeout => "timeout",
        }
    }
}

/// What the far end tells the bench.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Its sockets are open and its sessions started.
    Ready,
    /// This many sessions are Up now (printed at every change).
    Up(usize),
    /// Session `index` left Up unasked; `up` are Up now.
    Down {
        /// The session.
        index: usize,
        /// Why.
        cause: DownCause,
        /// Sessions Up now.
        up: usize,
    },
    /// A detection sample of session `index`: milliseconds from the last packet it sent
    /// before going silent to the arrival of the DUT's packet saying Down; `None` when
    /// none came within the sample's time limit.
    Detect {
        /// The session.
        index: usize,
        /// Milliseconds, if the DUT said Down.
        ms: Option<f64>,
    },
    /// Packet counters since the start.
    Stats {
        /// Packets received from the DUT and accepted by a session.
        received: u64,
        /// Packets sent.
        sent: u64,
        /// Packets dropped (undecodable, or refused by their session).
        discarded: u64,
    },
    /// `count` Up sessions negotiated these intervals: the far end sends every
    /// `tx_ms`, the DUT every `rx_ms`, and the far end declares the DUT down after
    /// `detect_ms` of silence (the DUT's multiplier times `rx_ms`).
    Intervals {
        /// This side's transmit interval.
        tx_ms: u64,
        /// The DUT's transmit interval as negotiated.
        rx_ms: u64,
        /// This side's detection time.
        detect_ms: u64,
        /// Sessions with these values.
        count: usize,
    },
    /// The end of an [`Command::Intervals`] answer.
    IntervalsEnd,
    /// Load peer `index` is Established (or no longer, with a reason).
    Bgp {
        /// The load peer.
        index: usize,
        /// Established now.
        up: bool,
    },
    /// The table peer wrote one more round of the full table.
    Round {
        /// Rounds written so far.
        rounds: u64,
        /// Seconds the round took to write.
        secs: f64,
    },
    /// Something the far end could not do.
    Error(String),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Silence(i) => write!(f, "silence {i}"),
            Command::Stats => f.write_str("stats"),
            Command::Intervals => f.write_str("intervals"),
            Command::Load(on) => write!(f, "load {}", if *on { "start" } else { "stop" }),
        }
    }
}

impl FromStr for Command {
    type Err = String;

    fn from_str(s: &str) -> Result<Command, String> {
        let w: Vec<&str> = s.split_whitespace().collect();
        match w.as_slice() {
            ["silence", i] => i.parse().map(Command::Silence).map_err(|e| format!("{s:?}: {e}")),
            ["stats"] => Ok(Command::Stats),
            ["intervals"] => Ok(Command::Intervals),
            ["load", "start"] => Ok(Command::Load(true)),
            ["load", "stop"] => Ok(Command::Load(false)),
            _ => Err(format!("unknown command {s:?}")),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Ready => f.write_str("ready"),
            Report::Up(k) => write!(f, "up {k}"),
            Report::Down { index, cause, up } => write!(f, "down {index} {} {up}", cause.name()),
            Report::Detect { index, ms: Some(ms) } => write!(f, "detect {index} {ms:.3}"),
            Report::Detect { index, ms: None } => write!(f, "detect {index} none"),
            Report::Stats { received, sent, discarded } => write!(f, "stats {received} {sent} {discarded}"),
            Report::Intervals { tx_ms, rx_ms, detect_ms, count } => {
                write!(f, "intervals {tx_ms} {rx_ms} {detect_ms} {count}")
            }
            Report::IntervalsEnd => f.write_str("intervals-end"),
            Report::Bgp { index, up } => write!(f, "bgp {index} {}", if *up { "up" } else { "down" }),
            Report::Round { rounds, secs } => write!(f, "round {rounds} {secs:.3}"),
            // One line: a newline in the text would start a report of its own.
            Report::Error(e) => write!(f, "error {}", e.replace('\n', " ")),
        }
    }
}

impl FromStr for Report {
    type Err = String;

    fn from_str(s: &str) -> Result<Report, String> {
        let bad = || format!("unknown report {s:?}");
        let w: Vec<&str> = s.split_whitespace().collect();
        let int = |v: &str| v.parse::<usize>().map_err(|_| bad());
        let u64_ = |v: &str| v.parse::<u64>().map_err(|_| bad());
        let float = |v: &str| v.parse::<f64>().map_err(|_| bad());
        Ok(match w.as_slice() {
            ["ready"] => Report::Ready,
            ["up", k] => Report::Up(int(k)?),
            ["down", i, cause, k] => {
                let cause = match *cause {
                    "dut-down" => DownCause::DutDown,
                    "dut-admin-down" => DownCause::DutAdminDown,
                    "timeout" => DownCause::Timeout,
                    _ => return Err(bad()),
                };
                Report::Down { index: int(i)?, cause, up: int(k)? }
            }
            ["detect", i, "none"] => Report::Detect { index: int(i)?, ms: None },
            ["detect", i, ms] => Report::Detect { index: int(i)?, ms: Some(float(ms)?) },
            ["stats", r, t, d] => Report::Stats { received: u64_(r)?, sent: u64_(t)?, discarded: u64_(d)? },
            ["intervals", t, r, d, c] => {
                Report::Intervals { tx_ms: u64_(t)?, rx_ms: u64_(r)?, detect_ms: u64_(d)?, count: int(c)? }
            }
            ["intervals-end"] => Report::IntervalsEnd,
            ["bgp", i, "up"] => Report::Bgp { index: int(i)?, up: true },
            ["bgp", i, "down"] => Report::Bgp { index: int(i)?, up: false },
            ["round", r, secs] => Report::Round { rounds: u64_(r)?, secs: float(secs)? },
            ["error", ..] => Report::Error(s.trim_start().trim_start_matches("error").trim().to_string()),
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let all = [
            Report::Ready,
            Report::Up(1000),
            Report::Down { index: 7, cause: DownCause::DutDown, up: 999 },
            Report::Down { index: 8, cause: DownCause::DutAdminDown, up: 998 },
            Report::Down { index: 9, cause: DownCause::Timeout, up: 997 },
            Report::Detect { index: 3, ms: Some(901.25) },
            Report::Detect { index: 3, ms: None },
            Report::Stats { received: 1, sent: 2, discarded: 3 },
            Report::Intervals { tx_ms: 300, rx_ms: 300, detect_ms: 900, count: 100 },
            Report::IntervalsEnd,
            Report::Bgp { index: 0, up: true },
            Report::Bgp { index: 2, up: false },
            Report::Round { rounds: 4, secs: 1.5 },
            Report::Error("cannot bind 10.251.1.1:3784: in use".into()),
        ];
        for r in all {
            assert_eq!(r.to_string().parse::<Report>(), Ok(r.clone()), "{r}");
        }
        assert!("up".parse::<Report>().is_err());
        assert!("down 1 sideways 3".parse::<Report>().is_err());
        assert_eq!(Report::Error("a\nb".into()).to_string(), "error a b");
    }

    #[test]
    fn commands_round_trip() {
        for c in [Command::Silence(12), Command::Stats, Command::Intervals, Command::Load(true), Command::Load(false)] {
            assert_eq!(c.to_string().parse::<Command>(), Ok(c));
        }
        assert!("silence x".parse::<Command>().is_err());
        assert!("load".parse::<Command>().is_err());
    }
}
