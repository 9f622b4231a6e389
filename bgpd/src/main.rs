//! The `bgpd` command: the node's BGP speaker and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[allow(dead_code)]
mod datastore;
mod decode_mrt;

/// bgpd: BGP speaker, IPAM and FIB programmer for Kubernetes nodes.
#[derive(Parser)]
#[command(name = "bgpd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode the BGP messages of an MRT file (BGP4MP, BGP4MP_ET, TABLE_DUMP,
    /// TABLE_DUMP_V2; gzip or plain) with bgpd's codec, re-encode every UPDATE
    /// and RIB entry and check the round trip, and print counts.
    DecodeMrt {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The MRT file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DecodeMrt { json, file } => decode_mrt::run(&file, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgpd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
