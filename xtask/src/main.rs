//! `cargo xtask package [--target T] [--out dist] [--workspace .]`: builds the example actions as
//! static release executables and writes one OpenWhisk zip per action (a single top-level `exec`).
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xtask::package::{MUSL_TARGET, PackageOptions, build_and_package};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "whisk-metrics project chores")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the example actions as static musl executables and zip each as <out>/<action>.zip.
    Package(PackageArgs),
}

#[derive(Debug, Args)]
struct PackageArgs {
    /// Rust target triple of the static build.
    #[arg(long, default_value = MUSL_TARGET)]
    target: String,
    /// Output directory.
    #[arg(long, default_value = "dist")]
    out: PathBuf,
    /// Workspace root.
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
}

fn main() -> ExitCode {
    let Cmd::Package(args) = Cli::parse().command;
    let opts = PackageOptions {
        workspace: args.workspace,
        target: args.target,
        out_dir: args.out,
    };
    match build_and_package(&opts) {
        Ok(zips) => {
            for z in zips {
                println!("{}", z.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
