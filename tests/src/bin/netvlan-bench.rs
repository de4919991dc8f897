//! `netvlan-bench`: the benchmarks (see `netvlan_tests::bench`). Run it
//! through `cargo xtask bench`, which installs the tools and builds what
//! it measures.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cargo xtask bench",
    about = "Benchmarks against the peers users would pick (root): writes \
             bench/results/<date>.json, BENCHMARKS.md and bench/charts/"
)]
struct Cli {
    #[command(flatten)]
    args: netvlan_tests::bench::BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = netvlan_tests::bench::bench(&cli.args) {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}
